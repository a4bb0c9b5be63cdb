"""Agreement statistics for the evaluation (paper Table 1) and the simulation study.

* Pearson r, and its 95 % interval by the percentile bootstrap: resample the
  (x, y) pairs with replacement ``n_boot`` times with the numpy Generator given,
  compute r on each resample, and take the 2.5th and 97.5th percentiles
  (numpy's default linear interpolation). Resamples in which x or y is constant
  have no r and are skipped; their count is reported.
* Spearman ρ: Pearson r of the ranks, ties given their average rank (as
  ``scipy.stats.spearmanr``).
* Inter-rater agreement (rater-level columns of a ratings file): the mean
  Pearson r over all pairs of raters (pairwise-complete), and the intraclass
  correlations ICC(2,1) (one rater) and ICC(2,k) (the mean of k raters) of
  Shrout & Fleiss (1979): two-way random effects, absolute agreement, from the
  photos rated by every rater.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Default number of bootstrap resamples.
DEFAULT_BOOTSTRAP = 2000


@dataclass(frozen=True)
class CorrelationSummary:
    """Pearson r with its bootstrap interval, Spearman ρ and the sample size.

    ``ci_low``/``ci_high`` are NaN when fewer than 3 pairs or too few valid
    resamples exist; ``bootstrap_used`` counts the resamples with a defined r.
    """

    n: int
    pearson_r: float
    ci_low: float
    ci_high: float
    spearman_rho: float
    bootstrap_used: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"x and y must be 1-D of equal length, got shapes {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("x and y must be finite")
    return a, b


def pearson_r(x: Any, y: Any) -> float:
    """Pearson's correlation of two equal-length 1-D samples; NaN if either is constant or n < 2."""
    a, b = _pair(x, y)
    if a.size < 2:
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(da @ da) * float(db @ db))
    if denominator == 0.0:
        return math.nan
    return float(np.clip((da @ db) / denominator, -1.0, 1.0))


def average_ranks(values: Any) -> np.ndarray:
    """Ranks 1..n of a 1-D sample, ties sharing their average rank."""
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {data.shape}")
    order = np.argsort(data, kind="mergesort")
    sorted_values = data[order]
    ranks = np.empty(data.size, dtype=np.float64)
    start = 0
    while start < data.size:
        stop = start + 1
        while stop < data.size and sorted_values[stop] == sorted_values[start]:
            stop += 1
        ranks[order[start:stop]] = (start + stop + 1) / 2.0  # mean of ranks start+1 .. stop
        start = stop
    return ranks


def spearman_rho(x: Any, y: Any) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN if either sample is constant."""
    a, b = _pair(x, y)
    return pearson_r(average_ranks(a), average_ranks(b))


def bootstrap_pearson_ci(
    x: Any, y: Any, rng: np.random.Generator, n_boot: int = DEFAULT_BOOTSTRAP, confidence: float = 0.95
) -> tuple[float, float, int]:
    """Percentile-bootstrap interval of Pearson r: (low, high, resamples used).

    Draws ``n_boot`` index vectors of length n from ``rng`` (so the same seed
    and n give the same resamples for every variant). Returns NaNs when n < 3
    or fewer than half the resamples have a defined r.
    """
    a, b = _pair(x, y)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = a.size
    if n < 3:
        return math.nan, math.nan, 0
    indices = rng.integers(0, n, size=(n_boot, n))
    xs, ys = a[indices], b[indices]
    dx = xs - xs.mean(axis=1, keepdims=True)
    dy = ys - ys.mean(axis=1, keepdims=True)
    denominator = np.sqrt(np.einsum("ij,ij->i", dx, dx) * np.einsum("ij,ij->i", dy, dy))
    numerator = np.einsum("ij,ij->i", dx, dy)
    valid = denominator > 0
    values = np.clip(numerator[valid] / denominator[valid], -1.0, 1.0)
    if values.size < max(1, n_boot // 2):
        return math.nan, math.nan, int(values.size)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high), int(values.size)


def correlation_summary(
    x: Any, y: Any, rng: np.random.Generator, n_boot: int = DEFAULT_BOOTSTRAP, confidence: float = 0.95
) -> CorrelationSummary:
    """Pearson r, its bootstrap interval and Spearman ρ of paired samples x, y."""
    a, b = _pair(x, y)
    low, high, used = bootstrap_pearson_ci(a, b, rng, n_boot, confidence)
    return CorrelationSummary(n=int(a.size), pearson_r=pearson_r(a, b), ci_low=low, ci_high=high,
                              spearman_rho=spearman_rho(a, b), bootstrap_used=used, confidence=confidence)


@dataclass(frozen=True)
class RaterAgreement:
    """Agreement among k raters over n photos (see the module docstring)."""

    raters: int
    photos: int
    complete_photos: int
    mean_pairwise_pearson: float
    icc_2_1: float
    icc_2_k: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def icc_two_way_random(matrix: Any) -> tuple[float, float]:
    """ICC(2,1) and ICC(2,k) (Shrout & Fleiss 1979) of a complete [n targets, k raters] matrix."""
    data = np.asarray(matrix, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] < 2:
        raise ValueError(f"matrix must be [n >= 2, k >= 2], got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError("matrix must be complete and finite")
    n, k = data.shape
    grand = data.mean()
    ss_rows = k * float(np.sum((data.mean(axis=1) - grand) ** 2))
    ss_cols = n * float(np.sum((data.mean(axis=0) - grand) ** 2))
    ss_error = float(np.sum((data - grand) ** 2)) - ss_rows - ss_cols
    bms = ss_rows / (n - 1)
    jms = ss_cols / (k - 1)
    ems = ss_error / ((n - 1) * (k - 1))
    single_denominator = bms + (k - 1) * ems + k * (jms - ems) / n
    mean_denominator = bms + (jms - ems) / n
    icc_single = (bms - ems) / single_denominator if single_denominator != 0 else math.nan
    icc_mean = (bms - ems) / mean_denominator if mean_denominator != 0 else math.nan
    return float(icc_single), float(icc_mean)


def rater_agreement(matrix: Any) -> RaterAgreement:
    """Agreement of a [n photos, k raters] matrix; NaN marks a missing rating."""
    data = np.asarray(matrix, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] < 2:
        raise ValueError(f"matrix must be [n photos, k >= 2 raters], got shape {data.shape}")
    pairs = []
    for i, j in itertools.combinations(range(data.shape[1]), 2):
        both = np.isfinite(data[:, i]) & np.isfinite(data[:, j])
        if both.sum() >= 2:
            r = pearson_r(data[both, i], data[both, j])
            if math.isfinite(r):
                pairs.append(r)
    complete = data[np.all(np.isfinite(data), axis=1)]
    icc_single, icc_mean = icc_two_way_random(complete) if complete.shape[0] >= 2 else (math.nan, math.nan)
    return RaterAgreement(
        raters=int(data.shape[1]), photos=int(data.shape[0]), complete_photos=int(complete.shape[0]),
        mean_pairwise_pearson=float(np.mean(pairs)) if pairs else math.nan,
        icc_2_1=icc_single, icc_2_k=icc_mean,
    )
