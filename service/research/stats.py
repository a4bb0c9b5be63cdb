"""Agreement statistics for the evaluation (paper Table 1) and the simulation study.

* Pearson r (``scipy.stats.pearsonr``) and its 95 % interval by the percentile
  bootstrap (``scipy.stats.bootstrap``, paired, ``method="percentile"``): resample
  the (x, y) pairs with replacement ``n_boot`` times with the numpy Generator given,
  compute r on each resample, and take the 2.5th and 97.5th percentiles (linear
  interpolation). Resamples in which x or y is constant have no r and are skipped;
  their count is reported.
* Spearman ρ (``scipy.stats.spearmanr``): Pearson r of the ranks, ties given their
  average rank.
* Inter-rater agreement (rater-level columns of a ratings file): the mean
  Pearson r over all pairs of raters (pairwise-complete), and the intraclass
  correlations ICC(2,1) (one rater) and ICC(2,k) (the mean of k raters) of
  Shrout & Fleiss (1979): two-way random effects, absolute agreement, from the
  photos rated by every rater.

Constant samples give NaN (no warning) wherever a correlation is undefined.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

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


def _defined(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether a correlation of a and b exists: at least 2 pairs and neither sample constant."""
    return a.size >= 2 and np.ptp(a) > 0 and np.ptp(b) > 0


def pearson_r(x: Any, y: Any) -> float:
    """Pearson's correlation of two equal-length 1-D samples; NaN if either is constant or n < 2."""
    a, b = _pair(x, y)
    return float(stats.pearsonr(a, b).statistic) if _defined(a, b) else math.nan


def spearman_rho(x: Any, y: Any) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN if either sample is constant or n < 2."""
    a, b = _pair(x, y)
    return float(stats.spearmanr(a, b).statistic) if _defined(a, b) else math.nan


def _pearson_along(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson r of each resample (rows along ``axis``); NaN where x or y is constant."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return np.asarray(stats.pearsonr(x, y, axis=axis).statistic)


def bootstrap_pearson_ci(
    x: Any, y: Any, rng: np.random.Generator, n_boot: int = DEFAULT_BOOTSTRAP, confidence: float = 0.95
) -> tuple[float, float, int]:
    """Percentile-bootstrap interval of Pearson r: (low, high, resamples used).

    ``scipy.stats.bootstrap`` draws ``n_boot`` index vectors of length n from ``rng``
    (so the same seed and n give the same resamples for every variant). Returns NaNs
    when n < 3 or fewer than half the resamples have a defined r. The percentiles are
    taken over the resamples with a defined r: scipy's own interval is NaN as soon as
    one resample has a constant x or y, which small samples with ties do have.
    """
    a, b = _pair(x, y)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if a.size < 3:
        return math.nan, math.nan, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap((a, b), _pearson_along, paired=True, vectorized=True, n_resamples=n_boot,
                                 confidence_level=confidence, method="percentile", rng=rng)
    values = result.bootstrap_distribution
    values = values[np.isfinite(values)]
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
