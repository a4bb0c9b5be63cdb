"""Assembling the PDF report of one job from the database and the appraisal.

The report builder (:mod:`service.reports.pdf`) knows nothing of SQL or DICOM; this
module gathers what it shows: the patient and study from the photo, the images and
scores from the appraisal, the patient's timeline and the latest calibration from
the repository.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import numpy as np

from db.records import Calibration as CalibrationRecord
from db.repository import Repository
from dicom.photo import extract_context
from pipeline.appraise import AppraisalResult
from pipeline.compare.annotate import heatmap_on_photo
from pipeline.compare.render import display_vmax, heatmap_to_rgb
from pipeline.preprocess.masks import mask_outline
from service.reports.pdf import (
    Calibration,
    ReportImages,
    ReportInput,
    ReportModel,
    ReportPatient,
    ReportScore,
    ReportStudy,
    TimelinePoint,
    build_report_pdf,
)
from service.research.calibration import CalibrationFit
from service.runtime.intake import UNIDENTIFIED_ISSUER, UNIDENTIFIED_PATIENT_ID
from service.runtime.results import software_version
from service.runtime.worker import ReportRequest


def report_images(photo_rgb: np.ndarray, result: AppraisalResult) -> ReportImages:
    import cv2

    pre = result.preprocessing
    mask = pre.masks["mouth_nose"]
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


def calibration_for(record: CalibrationRecord | None, model_identity: str) -> CalibrationFit | None:
    """The stored calibration as a fit, when it was made for ``model_identity``."""
    if record is None or record.n < 3:
        return None
    provenance: Mapping = record.provenance or {}
    if provenance.get("model_identity") != model_identity or "score_sxx" not in provenance:
        return None
    return CalibrationFit(slope=record.slope, intercept=record.intercept, slope_se=record.slope_se,
                          intercept_se=record.intercept_se, residual_sd=record.residual_sd, n=record.n,
                          score_mean=float(provenance["score_mean"]), score_sxx=float(provenance["score_sxx"]),
                          pearson_r=float(provenance.get("pearson_r", float("nan"))))


def report_calibration(record: CalibrationRecord | None, model_identity: str) -> Calibration | None:
    """The calibration to show, only when it was fitted for this model."""
    if calibration_for(record, model_identity) is None:
        return None
    provenance: Mapping = record.provenance or {}
    return Calibration(
        slope=record.slope, intercept=record.intercept, slope_se=record.slope_se, intercept_se=record.intercept_se,
        residual_sd=record.residual_sd, n=record.n, created_at=record.created_at,
        source=str(provenance.get("source", "")), score_mean=provenance.get("score_mean"),
    )


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
                model_identity=entry.appraisal.model_id_hash,
            ))
    model = ReportModel(name=appraisal.model_name, identity=appraisal.model_id_hash, non_clinical=appraisal.non_clinical,
                        software_version=software_version(), settings=dict(appraisal.settings or {}),
                        timings=dict(appraisal.timings or {}))
    result = request.result
    if result is None:
        data = ReportInput(patient=patient, study=study, model=model, images=None, scores=(), primary_score=None,
                           timeline=tuple(timeline), calibration=report_calibration(repository.latest_calibration(), appraisal.model_id_hash),
                           failure_reason=request.failure_reason or appraisal.failure_reason, pose=None,
                           generated_at=request.created_at, failure_code=request.failure_code)
        return build_report_pdf(data)
    scores = tuple(
        ReportScore(method=item.variant.method.value, processing=item.variant.processing.value,
                    region=item.variant.region, adaptation=item.adaptation,
                    erosion_order=item.variant.erosion_order.value if item.variant.erosion_order else None,
                    score=item.variant.score)
        for item in result.scores
    )
    data = ReportInput(
        patient=patient, study=study, model=model, images=report_images(request.photo_rgb, result), scores=scores,
        primary_score=result.primary_score, timeline=tuple(timeline),
        calibration=report_calibration(repository.latest_calibration(), appraisal.model_id_hash), failure_reason=None,
        pose=result.preprocessing.pose.to_dict(), generated_at=request.created_at,
    )
    return build_report_pdf(data)
