"""From a stored DICOM photo to committed rows (patient, study, photo, job).

The listener calls :func:`record_photo` after the file is on disk and before it
answers the sender: success is only acknowledged once the rows are committed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from db.records import NewPatient, NewPhoto, NewStudy
from db.repository import Repository
from dicom.listener import ReceivedPhoto

LOG = logging.getLogger("cleftscore.intake")

#: Photos without a Patient ID are filed under this issuer (never a real one), so
#: their failure can be recorded and reported; they never join a real timeline.
UNIDENTIFIED_ISSUER = "CLEFTSCORE-UNIDENTIFIED"
UNIDENTIFIED_PATIENT_ID = "NO-PATIENT-ID"
OWN_RESULT_PROBLEM = "result made by this service"


def _da(value: dt.date | None) -> str:
    return value.strftime("%Y%m%d") if value else ""


def _tm(value: dt.time | None) -> str:
    return value.strftime("%H%M%S") if value else ""


def study_datetime(photo: ReceivedPhoto) -> dt.datetime | None:
    """Study date and time, in the acquisition's time zone when known, else UTC-less → None."""
    study = photo.context.study
    if study.study_date is None:
        return None
    tz = photo.context.acquisition_datetime.tzinfo if photo.context.acquisition_datetime else None
    if tz is None:
        return None
    return dt.datetime.combine(study.study_date, study.study_time or dt.time(0, 0), tzinfo=tz)


def make_photo_recorder(repository: Repository) -> Callable[[ReceivedPhoto], None]:
    """The listener's ``on_photo`` consumer, bound to ``repository``."""

    def record_photo(photo: ReceivedPhoto) -> None:
        if any(OWN_RESULT_PROBLEM in problem for problem in photo.intake_problems):
            LOG.info("ignored one of our own results sent back to us", extra={"sop_uid": photo.sop_instance_uid})
            return
        context = photo.context
        patient_id = context.patient.patient_id
        patient = NewPatient(
            patient_id=patient_id or UNIDENTIFIED_PATIENT_ID,
            issuer_of_patient_id=(context.patient.issuer_of_patient_id or "") if patient_id else UNIDENTIFIED_ISSUER,
            patient_name=context.patient.name or "",
            birth_date=_da(context.patient.birth_date),
            sex=context.patient.sex or "",
        )
        study = NewStudy(
            study_instance_uid=photo.study_instance_uid,
            study_date=_da(context.study.study_date),
            study_time=_tm(context.study.study_time),
            study_datetime=study_datetime(photo),
            study_description=context.study.description or "",
            accession_number=context.study.accession_number or "",
        )
        new_photo = NewPhoto(
            sop_instance_uid=photo.sop_instance_uid,
            sop_class_uid=photo.sop_class_uid,
            series_instance_uid=photo.series_instance_uid,
            file_path=str(photo.path),
            sha256=photo.sha256,
            received_at=photo.received_at,
            calling_ae=photo.calling_ae_title,
            acquisition_datetime=context.acquisition_datetime,
            attributes={"intake_problems": list(photo.intake_problems),
                        "transfer_syntax_uid": photo.transfer_syntax_uid, "size_bytes": photo.size_bytes},
        )
        result = repository.record_received_photo(patient, study, new_photo)
        LOG.info("photo recorded", extra={
            "sop_uid": photo.sop_instance_uid, "photo_id": result.photo.id,
            "job_id": result.job.id if result.job else None, "duplicate": not result.created,
        })

    return record_photo
