"""Correlation statistics against hand computations; bootstrap properties; ICC against Shrout & Fleiss.

The module calls scipy.stats (pearsonr, spearmanr, bootstrap); the oracles here are written
out (a percentile bootstrap over the same index draws, r from its definition)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from service.research.stats import (
    bootstrap_pearson_ci,
    correlation_summary,
    icc_two_way_random,
    pearson_r,
    rater_agreement,
    spearman_rho,
)


def _sample(n: int, seed: int, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, 0.8 * x + noise * rng.normal(size=n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pearson_and_spearman_match_their_definitions(seed):
    x, y = _sample(25, seed)
    dx, dy = x - x.mean(), y - y.mean()
    assert pearson_r(x, y) == pytest.approx(dx @ dy / math.sqrt((dx @ dx) * (dy @ dy)), abs=1e-12)
    rank_x, rank_y = np.argsort(np.argsort(x)) + 1.0, np.argsort(np.argsort(y)) + 1.0  # no ties here
    assert spearman_rho(x, y) == pytest.approx(1 - 6 * np.sum((rank_x - rank_y) ** 2) / (25 * (25**2 - 1)), abs=1e-12)


def test_spearman_with_ties_matches_scipy():
    x = np.array([1, 2, 2, 3, 3, 3, 4, 5, 5, 7], dtype=float)
    y = np.array([2, 1, 4, 3, 3, 6, 5, 5, 8, 7], dtype=float)
    assert spearman_rho(x, y) == pytest.approx(pearson_r(scipy_stats.rankdata(x), scipy_stats.rankdata(y)), abs=1e-12)


def test_degenerate_samples_give_nan_and_bad_shapes_raise():
    assert math.isnan(pearson_r([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman_rho([1, 2, 3], [4, 4, 4]))
    assert math.isnan(pearson_r([1.0], [2.0]))
    assert math.isnan(pearson_r([0.1, 0.1, 0.1], [1, 2, 3]))  # mean of equal values need not equal them exactly
    assert pearson_r([1, 2], [2, 1]) == -1.0
    with pytest.raises(ValueError):
        pearson_r([1, 2, 3], [1, 2])
    with pytest.raises(ValueError):
        pearson_r([1, 2, np.nan], [1, 2, 3])


def test_bootstrap_matches_a_hand_written_percentile_bootstrap():
    x, y = _sample(15, 3)
    low, high, used = bootstrap_pearson_ci(x, y, np.random.default_rng(7), n_boot=300)
    indices = np.random.default_rng(7).integers(0, 15, size=(300, 15))
    replicates = [scipy_stats.pearsonr(x[i], y[i])[0] for i in indices]
    assert used == 300
    assert (low, high) == pytest.approx(tuple(np.percentile(replicates, [2.5, 97.5])), abs=1e-12)
    # With no degenerate resample the interval is scipy's own percentile interval.
    interval = scipy_stats.bootstrap((x, y), lambda a, b, axis: scipy_stats.pearsonr(a, b, axis=axis).statistic,
                                     paired=True, vectorized=True, n_resamples=300, method="percentile",
                                     rng=np.random.default_rng(7)).confidence_interval
    assert (low, high) == pytest.approx((interval.low, interval.high), abs=1e-12)


def test_bootstrap_is_deterministic_contains_r_and_narrows_with_n():
    x, y = _sample(30, 4)
    first = bootstrap_pearson_ci(x, y, np.random.default_rng(0))
    again = bootstrap_pearson_ci(x, y, np.random.default_rng(0))
    other = bootstrap_pearson_ci(x, y, np.random.default_rng(1))
    assert first == again and first != other
    r = pearson_r(x, y)
    assert first[0] < r < first[1]
    widths = []
    for n in (20, 80, 320):
        xs, ys = _sample(n, 5)
        low, high, _ = bootstrap_pearson_ci(xs, ys, np.random.default_rng(0), n_boot=1000)
        assert low < pearson_r(xs, ys) < high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]


def test_bootstrap_skips_constant_resamples_and_refuses_tiny_samples():
    # Two distinct x values: some resamples draw only one of them and have no r.
    x = np.array([0.1, 0.1, 0.1, 1.0])  # 3 × 0.1 has a mean that is not exactly 0.1
    y = np.array([0.1, 0.2, 0.0, 1.0])
    low, high, used = bootstrap_pearson_ci(x, y, np.random.default_rng(0), n_boot=500)
    indices = np.random.default_rng(0).integers(0, 4, size=(500, 4))
    valid = [i for i in indices if len(set(x[i])) > 1 and len(set(y[i])) > 1]
    assert used == len(valid) < 500
    replicates = [scipy_stats.pearsonr(x[i], y[i])[0] for i in valid]
    assert (low, high) == pytest.approx(tuple(np.percentile(replicates, [2.5, 97.5])), abs=1e-12)
    assert -1 <= low <= high <= 1
    assert all(math.isnan(v) for v in bootstrap_pearson_ci([1, 2], [2, 1], np.random.default_rng(0))[:2])
    with pytest.raises(TypeError):
        bootstrap_pearson_ci(x, y, 0)


def test_correlation_summary_collects_everything():
    x, y = _sample(12, 6)
    summary = correlation_summary(x, y, np.random.default_rng(0), n_boot=200)
    assert summary.n == 12 and summary.bootstrap_used == 200 and summary.confidence == 0.95
    assert summary.pearson_r == pytest.approx(scipy_stats.pearsonr(x, y)[0])
    assert summary.spearman_rho == pytest.approx(scipy_stats.spearmanr(x, y)[0])


def test_icc_reproduces_shrout_and_fleiss_table():
    # Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; ICC(2,1) = .29, ICC(2,4) = .62.
    ratings = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)
    single, mean = icc_two_way_random(ratings)
    assert round(single, 2) == 0.29 and round(mean, 2) == 0.62


def test_rater_agreement_uses_pairwise_complete_pearson_and_complete_rows_for_icc():
    rng = np.random.default_rng(8)
    truth = rng.uniform(1, 7, size=10)
    matrix = np.clip(truth[:, None] + rng.normal(0, 0.5, size=(10, 3)), 1, 7)
    matrix[2, 1] = np.nan
    agreement = rater_agreement(matrix)
    expected = []
    for i, j in itertools.combinations(range(3), 2):
        both = ~np.isnan(matrix[:, i]) & ~np.isnan(matrix[:, j])
        expected.append(scipy_stats.pearsonr(matrix[both, i], matrix[both, j])[0])
    assert agreement.mean_pairwise_pearson == pytest.approx(np.mean(expected))
    assert agreement.raters == 3 and agreement.photos == 10 and agreement.complete_photos == 9
    complete = matrix[~np.isnan(matrix).any(axis=1)]
    assert (agreement.icc_2_1, agreement.icc_2_k) == pytest.approx(icc_two_way_random(complete))
    assert 0.5 < agreement.icc_2_1 < agreement.icc_2_k <= 1
