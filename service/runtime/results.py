"""Building the DICOM results of an appraisal and filing them for delivery.

Each appraisal gets a Secondary Capture (heatmap on the photo, legend burned in)
and an Encapsulated PDF report, each in its own new series of the photo's study.
UIDs are derived from the job id, so a job resumed after a crash rebuilds the
same objects instead of sending duplicates.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata

import numpy as np
from pydicom.dataset import Dataset

from db.records import NewResultObject, ResultKind
from db.repository import Repository
from dicom.results import (
    AlgorithmIdentity,
    ResultSeries,
    build_encapsulated_pdf,
    build_overlay_secondary_capture,
    encode_part10,
)
from dicom.storage import DicomFileStore
from dicom.uids import derive_uid
from pipeline.models.bundle import ModelIdentity

LOG = logging.getLogger("cleftscore.results")

MANUFACTURER = "cleftscore"
SC_SERIES_NUMBER = 9101
PDF_SERIES_NUMBER = 9102


def software_version() -> str:
    try:
        return metadata.version("cleftscore")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def algorithm_identity(model: ModelIdentity) -> AlgorithmIdentity:
    """IHE AIR algorithm identity: the Device UID follows the model bundle's identity hash."""
    return AlgorithmIdentity(
        manufacturer=MANUFACTURER,
        model_name=f"Cleft appraisal ({model.name})"[:64],
        software_versions=(software_version(),),
        model_sha256=model.identity,
        non_clinical=model.non_clinical,
    )


@dataclass(frozen=True)
class BuiltResult:
    kind: ResultKind
    dataset: Dataset


def build_results(
    source: Dataset,
    *,
    job_id: int,
    model: ModelIdentity,
    uid_root: str,
    overlay: np.ndarray | None,
    pdf: bytes,
    created_at: dt.datetime,
) -> list[BuiltResult]:
    """The Secondary Capture (when there is an ``overlay``) and the PDF for one job."""
    algorithm = algorithm_identity(model)
    sop = str(source.SOPInstanceUID)

    def series(kind: str, description: str, number: int) -> ResultSeries:
        return ResultSeries(
            series_description=description, series_number=number,
            series_instance_uid=derive_uid(uid_root, "series", kind, str(job_id), sop),
            sop_instance_uid=derive_uid(uid_root, "instance", kind, str(job_id), sop),
        )

    built: list[BuiltResult] = []
    if overlay is not None:
        sc = build_overlay_secondary_capture(
            source, overlay, algorithm=algorithm, series=series("sc", "Cleft appraisal heatmap", SC_SERIES_NUMBER),
            uid_root=uid_root, created_at=created_at,
        )
        built.append(BuiltResult(ResultKind.SECONDARY_CAPTURE, sc))
    document = build_encapsulated_pdf(
        source, pdf, algorithm=algorithm, series=series("pdf", "Cleft appraisal report", PDF_SERIES_NUMBER),
        document_title="Cleft lip appraisal report", uid_root=uid_root, created_at=created_at,
    )
    built.append(BuiltResult(ResultKind.ENCAPSULATED_PDF, document))
    return built


def file_results(
    repository: Repository,
    store: DicomFileStore,
    appraisal_id: int,
    built: Sequence[BuiltResult],
    destinations: Sequence[str],
    clock: Callable[[], dt.datetime],
) -> None:
    """Write each object atomically and record it with one transfer per destination.

    Kinds already recorded for the appraisal (a resumed job) are skipped.
    """
    done = {item.kind for item in repository.result_objects_for(appraisal_id)}
    for item in built:
        if item.kind in done:
            continue
        ds = item.dataset
        stored = store.store(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID),
                             encode_part10(ds))
        record = repository.record_result_object(
            NewResultObject(appraisal_id=appraisal_id, kind=item.kind, sop_instance_uid=str(ds.SOPInstanceUID),
                            series_instance_uid=str(ds.SeriesInstanceUID), file_path=str(stored.path),
                            created_at=clock()),
            destinations,
        )
        LOG.info("result filed", extra={"appraisal_id": appraisal_id, "result_id": record.id,
                                        "kind": item.kind.value, "sop_uid": record.sop_instance_uid,
                                        "destinations": len(destinations)})
