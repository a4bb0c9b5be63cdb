"""Calibration of the machine score S to the 1–7 human rating scale.

An ordinary least-squares line ``rating ≈ intercept + slope · S`` fitted on photos
rated by clinicians (mean rating per photo) with ``scipy.stats.linregress``. The fit
(:class:`db.records.Calibration`) keeps what a prediction interval of a new photo's
calibrated rating needs:

    ŷ(s) = intercept + slope · s
    se(s) = residual_sd · sqrt(1 + 1/n + (s − mean_S)² / Sxx),  Sxx = Σ (S_i − mean_S)²
    interval = ŷ(s) ± t_{0.975, n−2} · se(s)

Scores only compare within one model identity, so the calibration records the
model it was fitted for, and reports use it only for results of that model.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from db.records import Calibration

RATING_SCALE = (1.0, 7.0)


def fit_calibration(scores: Any, ratings: Any, *, model_identity: str, source: str, created_at: datetime,
                    provenance: Mapping[str, Any] | None = None) -> Calibration:
    """OLS fit of ``ratings`` on ``scores`` (1-D, same length, at least 3 photos, not all
    scores equal, not all ratings equal), for the model ``model_identity``."""
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(ratings, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"scores and ratings must be 1-D and of one length, got {x.shape} and {y.shape}")
    if len(x) < 3:
        raise ValueError(f"calibration needs at least 3 rated photos, got {len(x)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("scores and ratings must be finite")
    outside = (y < RATING_SCALE[0]) | (y > RATING_SCALE[1])
    if np.any(outside):
        raise ValueError(f"ratings must lie on the 1–7 scale, got {y[outside][:3].tolist()}")
    if np.ptp(x) == 0:
        raise ValueError("all scores are equal; a line cannot be fitted")
    if np.ptp(y) == 0:
        raise ValueError("all ratings are equal; the score cannot be calibrated against them")
    line = stats.linregress(x, y)
    n = len(x)
    residuals = y - (line.intercept + line.slope * x)
    return Calibration(
        slope=float(line.slope), intercept=float(line.intercept), slope_se=float(line.stderr),
        intercept_se=float(line.intercept_stderr), residual_sd=math.sqrt(float(residuals @ residuals) / (n - 2)),
        n=n, score_mean=float(x.mean()), score_sxx=float(((x - x.mean()) ** 2).sum()),
        pearson_r=float(line.rvalue), model_identity=model_identity, source=source, created_at=created_at,
        provenance=dict(provenance or {}),
    )


@dataclass(frozen=True)
class CalibratedRating:
    """ŷ on the 1–7 scale with its prediction interval (not clipped to the scale)."""

    value: float
    low: float
    high: float
    level: float

    @property
    def outside_scale(self) -> bool:
        return not RATING_SCALE[0] <= self.value <= RATING_SCALE[1]

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def calibrated_rating(calibration: Calibration, score: float, level: float = 0.95) -> CalibratedRating:
    """A new photo's calibrated rating and its prediction interval (module docstring)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    c = calibration
    value = c.rating(score)
    spread = c.residual_sd * math.sqrt(1 + 1 / c.n + (score - c.score_mean) ** 2 / c.score_sxx)
    half = float(stats.t.ppf(0.5 + level / 2, c.n - 2)) * spread
    return CalibratedRating(value, value - half, value + half, level)


@dataclass(frozen=True)
class RatingRow:
    photo: str  # a file path or a SOP Instance UID
    rating: float


def read_ratings(path: Path) -> list[RatingRow]:
    """Rows of a CSV with columns ``photo`` (file or SOP Instance UID) and ``rating``."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = {name.strip().lower(): name for name in reader.fieldnames or []}
        photo_key = fields.get("photo") or fields.get("file") or fields.get("sop_instance_uid")
        rating_key = fields.get("rating") or fields.get("mean_rating")
        if photo_key is None or rating_key is None:
            raise ValueError(f"{path} needs columns 'photo' (file or SOP Instance UID) and 'rating'")
        rows = []
        for number, row in enumerate(reader, start=2):
            try:
                rating = float(row[rating_key])
            except (TypeError, ValueError):
                raise ValueError(f"{path} line {number}: rating {row[rating_key]!r} is not a number") from None
            rows.append(RatingRow(row[photo_key].strip(), rating))
    names = [r.photo for r in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"{path} names a photo twice")
    return rows
