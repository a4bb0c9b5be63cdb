"""Assembling the PDF report of one job from the database and the appraisal.

The report builder (:mod:`service.reports.pdf`) knows nothing of SQL or DICOM; this
module gathers what it shows: the patient and study from the photo, the images and
scores from the appraisal, the patient's timeline, the latest calibration and the
model's latest repeatability study from the repository.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from db.records import Calibration
from db.repository import Repository
from dicom.photo import extract_context
from pipeline.appraise import AppraisalResult
from pipeline.compare.annotate import heatmap_on_photo
from pipeline.compare.render import display_vmax, heatmap_to_rgb
from pipeline.preprocess.masks import mask_outline
from pipeline.vocabulary import PRIMARY_VARIANT
from service.reports.pdf import build_report_pdf
from service.reports.request import (
    ReportImages,
    ReportInput,
    ReportModel,
    ReportPatient,
    ReportRequest,
    ReportStudy,
    TimelinePoint,
)
from service.research.repeatability import visit_repeats
from service.runtime.intake import UNIDENTIFIED_ISSUER, UNIDENTIFIED_PATIENT_ID
from service.runtime.results import software_version


def report_images(photo_rgb: np.ndarray, result: AppraisalResult) -> ReportImages:
    import cv2

    pre = result.preprocessing
    mask = pre.masks[PRIMARY_VARIANT.region]
    heat = result.primary_heatmap
    vmax = display_vmax(heat, mask)
    outlined = result.aligned.copy()
    thickness = max(1, result.aligned.shape[0] // 256)
    for contour in mask_outline(mask):
        cv2.polylines(outlined, [contour.astype(np.int32)], True, (255, 255, 255), thickness, cv2.LINE_AA)
    return ReportImages(
        overlay_on_photo=heatmap_on_photo(photo_rgb, heat, mask, pre.transform, vmax=vmax),
        aligned=result.aligned, normalized=result.normalized,
        heatmap_rgb=heatmap_to_rgb(heat, vmax), mask_outline_rgb=outlined,
    )


def calibration_for(calibration: Calibration | None, model_identity: str) -> Calibration | None:
    """The stored calibration, when it was fitted for ``model_identity`` (scores of other models
    are on another scale)."""
    if calibration is None or calibration.model_identity != model_identity:
        return None
    return calibration


def make_report_pdf(repository: Repository, request: ReportRequest, local_timezone: dt.tzinfo | None = None) -> bytes:
    """The PDF for one job: a full report for a success, an explanation for a failure.
    ``local_timezone`` applies to DICOM dates and times that carry no offset."""
    context = extract_context(request.source, local_timezone=local_timezone)
    patient_id = context.patient.patient_id or UNIDENTIFIED_PATIENT_ID
    issuer = (context.patient.issuer_of_patient_id or "") if context.patient.patient_id else UNIDENTIFIED_ISSUER
    patient = ReportPatient(patient_id=patient_id, issuer=issuer, name=context.patient.name or "",
                            birth_date=context.patient.birth_date, sex=context.patient.sex or "")
    study = ReportStudy(study_date=context.study.study_date, study_time=context.study.study_time,
                        description=context.study.description or "", accession=context.study.accession_number or "",
                        acquisition_datetime=context.acquisition_datetime)
    appraisal = repository.get_appraisal(request.appraisal_id)
    timeline = []
    if context.patient.patient_id:
        for entry in repository.timeline(patient_id, issuer):
            score = entry.appraisal.primary_score
            if score is None:
                continue
            timeline.append(TimelinePoint(
                when=entry.at or entry.appraisal.created_at, score=score,
                study_description=entry.study.study_description, is_current=entry.appraisal.id == appraisal.id,
                model_identity=entry.appraisal.model_id_hash, repeats=visit_repeats(entry.appraisal.settings),
            ))
    model = ReportModel(name=appraisal.model_name, identity=appraisal.model_id_hash, non_clinical=appraisal.non_clinical,
                        software_version=software_version(), settings=dict(appraisal.settings or {}),
                        timings=dict(appraisal.timings or {}))
    result = request.result
    calibration = calibration_for(repository.latest_calibration(), appraisal.model_id_hash)
    notes = tuple(dict.fromkeys((*context.text_notes, *request.notes)))
    repeatability = repository.latest_repeatability(appraisal.model_id_hash)
    if result is None:
        data = ReportInput(patient=patient, study=study, model=model, images=None, scores=(), primary_score=None,
                           timeline=tuple(timeline), calibration=calibration,
                           failure_reason=request.failure_reason or appraisal.failure_reason, pose=None,
                           generated_at=request.created_at, failure_code=request.failure_code, notes=notes,
                           repeatability=repeatability)
        return build_report_pdf(data)
    data = ReportInput(
        patient=patient, study=study, model=model, images=report_images(request.photo_rgb, result),
        scores=result.scores, primary_score=result.primary_score, timeline=tuple(timeline),
        calibration=calibration, failure_reason=None,
        pose=result.preprocessing.pose.to_dict(), generated_at=request.created_at, notes=notes,
        repeatability=repeatability,
        primary_repeats=() if result.repeats is None else result.repeats.primary_scores,
    )
    return build_report_pdf(data)
