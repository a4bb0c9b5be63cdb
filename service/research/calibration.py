"""Calibration of the machine score S to the 1–7 human rating scale.

An ordinary least-squares line ``rating ≈ intercept + slope · S`` fitted on photos
rated by clinicians (mean rating per photo). The fit keeps what is needed for a
prediction interval of a new photo's calibrated rating:

    ŷ(s) = intercept + slope · s
    se(s) = residual_sd · sqrt(1 + 1/n + (s − mean_S)² / Sxx),  Sxx = Σ (S_i − mean_S)²
    interval = ŷ(s) ± t_{0.975, n−2} · se(s)

Scores only compare within one model identity, so the calibration records the
model it was fitted for, and reports use it only for results of that model.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class CalibrationFit:
    slope: float
    intercept: float
    slope_se: float
    intercept_se: float
    residual_sd: float
    n: int
    score_mean: float
    score_sxx: float
    pearson_r: float

    def predict(self, score: float, level: float = 0.95) -> tuple[float, float, float]:
        """Calibrated rating with its prediction interval: ``(value, low, high)``."""
        value = self.intercept + self.slope * score
        spread = self.residual_sd * math.sqrt(1 + 1 / self.n + (score - self.score_mean) ** 2 / self.score_sxx)
        half = float(stats.t.ppf(0.5 + level / 2, self.n - 2)) * spread
        return value, value - half, value + half


def fit_calibration(scores: np.ndarray, ratings: np.ndarray) -> CalibrationFit:
    """OLS fit of ``ratings`` on ``scores`` (1-D, same length, at least 3 distinct scores)."""
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(ratings, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"scores and ratings must be 1-D and of one length, got {x.shape} and {y.shape}")
    if len(x) < 3:
        raise ValueError(f"calibration needs at least 3 rated photos, got {len(x)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("scores and ratings must be finite")
    if np.any((y < 1) | (y > 7)):
        raise ValueError(f"ratings must lie on the 1–7 scale, got {y[(y < 1) | (y > 7)][:3].tolist()}")
    n = len(x)
    mean_x, mean_y = x.mean(), y.mean()
    sxx = float(((x - mean_x) ** 2).sum())
    if sxx <= 0:
        raise ValueError("all scores are equal; a line cannot be fitted")
    slope = float(((x - mean_x) * (y - mean_y)).sum() / sxx)
    intercept = float(mean_y - slope * mean_x)
    residuals = y - (intercept + slope * x)
    residual_sd = float(math.sqrt((residuals**2).sum() / (n - 2)))
    slope_se = residual_sd / math.sqrt(sxx)
    intercept_se = residual_sd * math.sqrt(1 / n + mean_x**2 / sxx)
    r = float(np.corrcoef(x, y)[0, 1]) if residual_sd > 0 or slope != 0 else 1.0
    return CalibrationFit(slope, intercept, slope_se, intercept_se, residual_sd, n, float(mean_x), sxx, r)


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
