"""What the PDF report gets: the request from the worker and the report's input records.

:class:`ReportRequest` is what a worker hands to the report builder for one job;
:func:`service.reports.assemble.make_report_pdf` turns it, with the database, into a
:class:`ReportInput`, which :func:`service.reports.pdf.build_report_pdf` lays out. The
records validate themselves; messages name the field, never a patient value.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any

import numpy as np

from db.records import Calibration, RepeatabilityStudy
from pipeline.vocabulary import PRIMARY_VARIANT, VariantScore, find_score

if TYPE_CHECKING:  # torch and pydicom are slow to import; these records do not need them at run time
    import pydicom

    from pipeline.appraise import AppraisalResult

#: DICOM Patient's Sex codes and how the report prints them.
SEX_NAMES = {"M": "Male", "F": "Female", "O": "Other", "": "Not recorded"}


@dataclass(frozen=True)
class ReportRequest:
    """What the PDF builder gets for one job (``result`` None for a failed appraisal)."""

    source: pydicom.Dataset
    appraisal_id: int
    result: AppraisalResult | None
    photo_rgb: np.ndarray | None
    overlay_on_photo: np.ndarray | None
    failure_reason: str | None
    created_at: dt.datetime
    failure_code: str | None = None
    #: What the report must say about how the photo was read (decoding corrections), one sentence each.
    notes: tuple[str, ...] = ()


def _check(record: object, **rules: str) -> None:
    """Validate fields by rule: text, text! (non-empty), bool, real, date, time, aware,
    rgb, square_rgb, mapping; a trailing '?' also allows None. Messages never echo text values."""
    for name, rule in rules.items():
        value = getattr(record, name)
        if rule.endswith("?"):
            if value is None:
                continue
            rule = rule[:-1]
        kind = type(value).__name__
        if rule in ("text", "text!"):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, got {kind}")
            if rule == "text!" and not value.strip():
                raise ValueError(f"{name} must not be empty")
        elif rule == "bool" and not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {kind}")
        elif rule == "real":
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a real number, got {kind}")
            if not math.isfinite(float(value)):
                raise ValueError(f"{name} must be finite, got {value!r}")
        elif rule == "date" and (not isinstance(value, date) or isinstance(value, datetime)):
            raise TypeError(f"{name} must be a datetime.date, got {kind}")
        elif rule == "time" and not isinstance(value, time):
            raise TypeError(f"{name} must be a datetime.time, got {kind}")
        elif rule == "aware":
            if not isinstance(value, datetime):
                raise TypeError(f"{name} must be a datetime, got {kind}")
            if value.utcoffset() is None:
                raise ValueError(f"{name} must be time-zone aware")
        elif rule in ("rgb", "square_rgb"):
            if not isinstance(value, np.ndarray) or value.dtype != np.uint8:
                raise TypeError(f"{name} must be a uint8 numpy array, got {getattr(value, 'dtype', kind)}")
            if value.ndim != 3 or value.shape[2] != 3 or min(value.shape[:2]) < 8:
                raise ValueError(f"{name} must be RGB [H, W, 3] with H, W >= 8, got shape {value.shape}")
            if rule == "square_rgb" and value.shape[0] != value.shape[1]:
                raise ValueError(f"{name} must be square [S, S, 3], got shape {value.shape}")
        elif rule == "mapping" and not isinstance(value, Mapping):
            raise TypeError(f"{name} must be a mapping, got {kind}")


@dataclass(frozen=True)
class ReportPatient:
    patient_id: str
    issuer: str
    name: str  # DICOM PN ("Family^Given") or plain text
    birth_date: date | None
    sex: str  # DICOM: "M", "F", "O" or ""

    def __post_init__(self) -> None:
        _check(self, patient_id="text!", issuer="text", name="text", birth_date="date?", sex="text")
        if self.sex not in SEX_NAMES:
            raise ValueError(f"sex must be one of {sorted(SEX_NAMES)}")


@dataclass(frozen=True)
class ReportStudy:
    study_date: date | None
    study_time: time | None
    description: str
    accession: str
    acquisition_datetime: datetime | None  # when the photo was taken

    def __post_init__(self) -> None:
        _check(self, study_date="date?", study_time="time?", description="text", accession="text",
               acquisition_datetime="aware?")


@dataclass(frozen=True)
class ReportImages:
    """uint8 RGB: the photo with the heatmap drawn on it [H, W, 3]; aligned-frame images [S, S, 3]."""

    overlay_on_photo: np.ndarray
    aligned: np.ndarray
    normalized: np.ndarray
    heatmap_rgb: np.ndarray
    mask_outline_rgb: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check(self, overlay_on_photo="rgb", aligned="square_rgb", normalized="square_rgb",
               heatmap_rgb="square_rgb", mask_outline_rgb="square_rgb?")
        for name in ("normalized", "heatmap_rgb", "mask_outline_rgb"):
            value = getattr(self, name)
            if value is not None and value.shape != self.aligned.shape:
                raise ValueError(f"{name} has shape {value.shape}, expected aligned's {self.aligned.shape}")


@dataclass(frozen=True)
class TimelinePoint:
    """One visit's primary score. ``model_identity`` (optional): a visit scored with another
    model is left out of the chart and the changes (scores of different models don't compare).
    ``calibrated`` is accepted but not shown: the report applies its own calibration to every
    visit so that all ratings on the page agree. ``repeats``: how many normalisations the
    visit's score averages (``CLEFTSCORE_REPEATS``; it sets the visit's measurement noise)."""

    when: datetime
    score: float
    study_description: str
    is_current: bool
    calibrated: float | None = None
    model_identity: str | None = None
    repeats: int = 1

    def __post_init__(self) -> None:
        _check(self, when="aware", score="real", study_description="text", is_current="bool",
               calibrated="real?", model_identity="text!?")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats must be an integer >= 1, got {self.repeats!r}")


@dataclass(frozen=True)
class ReportModel:
    name: str
    identity: str
    non_clinical: bool
    software_version: str
    settings: Mapping[str, Any]  # AppraisalSettings.to_dict()
    timings: Mapping[str, float]  # seconds per stage

    def __post_init__(self) -> None:
        _check(self, name="text!", identity="text!", non_clinical="bool", software_version="text",
               settings="mapping", timings="mapping")
        for stage, seconds in self.timings.items():
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
                raise ValueError(f"timings[{stage!r}] must be a finite number of seconds, got {seconds!r}")


@dataclass(frozen=True)
class ReportInput:
    """Everything the report shows.

    Success: images and a finite primary_score; at most one current visit in the timeline,
    whose score is primary_score (added when missing, see comparable_timeline).
    Failure: failure_reason (one sentence for the clinician, e.g. str(PipelineError)), no
    images, scores or primary_score, and no current visit; ``failure_code``
    (PipelineError.code) picks the advice on what to do.
    ``repeatability``: the stored repeatability study of the report's model (changes are judged
    against it); ``primary_repeats``: the primary score of each of K >= 2 normalisations when
    primary_score is their mean (empty for the paper's single run)."""

    patient: ReportPatient
    study: ReportStudy
    model: ReportModel
    images: ReportImages | None
    scores: tuple[VariantScore, ...]
    primary_score: float | None
    timeline: tuple[TimelinePoint, ...]
    calibration: Calibration | None
    failure_reason: str | None
    pose: Mapping[str, float] | None  # degrees: yaw, pitch, roll
    generated_at: datetime
    failure_code: str | None = None
    #: How the photo was read where its header was wrong or its text undecodable (one sentence each).
    notes: tuple[str, ...] = ()
    repeatability: RepeatabilityStudy | None = None
    primary_repeats: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.notes, tuple) or not all(isinstance(note, str) for note in self.notes):
            raise TypeError("notes must be a tuple of str")
        types = {"patient": ReportPatient, "study": ReportStudy, "model": ReportModel,
                 "images": ReportImages, "calibration": Calibration, "repeatability": RepeatabilityStudy}
        for name, kind in types.items():
            value = getattr(self, name)
            if not isinstance(value, kind) and not (value is None and name in ("images", "calibration",
                                                                                "repeatability")):
                raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
        if self.repeatability is not None and self.repeatability.model_identity != self.model.identity:
            raise ValueError("the repeatability study was made with another model; its figures do not apply")
        repeats = self.primary_repeats
        if not isinstance(repeats, tuple) or len(repeats) == 1 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in repeats):
            raise ValueError("primary_repeats must be a tuple of K >= 2 finite scores, or empty")
        if repeats and (self.primary_score is None or not math.isclose(
                sum(repeats) / len(repeats), self.primary_score, rel_tol=1e-6, abs_tol=1e-9)):
            raise ValueError("primary_score must be the mean of primary_repeats")
        for name, kind in (("scores", VariantScore), ("timeline", TimelinePoint)):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(item, kind) for item in value):
                raise TypeError(f"{name} must be a tuple of {kind.__name__}")
        _check(self, generated_at="aware", pose="mapping?", failure_reason="text!?", failure_code="text?")
        if self.calibration is not None and self.calibration.model_identity != self.model.identity:
            raise ValueError("the calibration was fitted for another model; scores of different models do not compare")
        if len({score.variant for score in self.scores}) != len(self.scores):
            raise ValueError("scores contains the same variant twice")
        for axis, degrees in (self.pose or {}).items():
            if isinstance(degrees, bool) or not isinstance(degrees, (int, float)) or not math.isfinite(degrees):
                raise ValueError(f"pose[{axis!r}] must be a finite number of degrees, got {degrees!r}")
        current = [point for point in self.timeline if point.is_current]
        if len(current) > 1:
            raise ValueError("timeline has more than one current visit (is_current=True)")
        if self.failure_reason is not None:
            if self.images is not None or self.scores or self.primary_score is not None:
                raise ValueError("a failed report (failure_reason set) must have no images, scores or primary_score")
            if current:
                raise ValueError("a failed report has no score, so no timeline point may be is_current")
            return
        if self.images is None:
            raise ValueError("images are required unless failure_reason is set")
        _check(self, primary_score="real")
        if current and not math.isclose(current[0].score, self.primary_score, rel_tol=1e-6, abs_tol=1e-9):
            raise ValueError(f"the current visit's score {current[0].score!r} differs from primary_score "
                             f"{self.primary_score!r}")
        if current and current[0].model_identity not in (None, self.model.identity):
            raise ValueError("the current visit's model_identity differs from the report's model identity")
        if current and current[0].repeats != max(1, len(self.primary_repeats)):
            raise ValueError(f"the current visit averages {current[0].repeats} repeat(s) but primary_repeats holds "
                             f"{len(self.primary_repeats)}")
        primary = find_score(self.scores, PRIMARY_VARIANT)
        if primary is not None and not math.isclose(primary, self.primary_score, rel_tol=1e-6, abs_tol=1e-9):
            raise ValueError(f"primary_score {self.primary_score!r} differs from the primary variant's score "
                             f"{primary!r}")

    @property
    def failed(self) -> bool:
        return self.failure_reason is not None

    def comparable_timeline(self) -> tuple[TimelinePoint, ...]:
        """Visits scored with this report's model (or of unrecorded model), in date order. A success
        whose timeline lacks the current visit (e.g. a patient without ID) gets it added, dated by
        the photo's acquisition time, else the study date and time, else generated_at."""
        keep = [p for p in self.timeline if p.model_identity in (None, self.model.identity)]
        if not self.failed and not any(p.is_current for p in keep):
            study, when = self.study, self.generated_at
            if study.acquisition_datetime is not None:
                when = study.acquisition_datetime
            elif study.study_date is not None:
                when = datetime.combine(study.study_date, study.study_time or time(12), tzinfo=when.tzinfo)
            keep.append(TimelinePoint(when, self.primary_score, study.description, True,
                                      model_identity=self.model.identity, repeats=max(1, len(self.primary_repeats))))
        return ordered_timeline(keep)


def ordered_timeline(points: Sequence[TimelinePoint]) -> tuple[TimelinePoint, ...]:
    """Visits in time order (by instant; stable for equal times)."""
    return tuple(sorted(points, key=lambda point: point.when))
