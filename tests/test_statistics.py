"""disco_data_logger.sharding.statistics against SciPy (an independent implementation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from disco_data_logger.sharding.statistics import (
    mean_interval,
    paired_difference,
    running_intervals,
    t_cdf,
    t_quantile,
    welch_difference,
)

DFS = [1, 1.5, 2, 2.5, 3, 4, 5, 7, 10, 19, 30, 57.3, 99, 1000, 12345.6, 1e6]
PS = [1e-6, 0.01, 0.05, 0.3, 0.5001, 0.6, 0.9, 0.95, 0.975, 0.995, 0.9995, 1 - 1e-6]


@pytest.mark.parametrize("df", DFS)
def test_t_quantile_matches_scipy(df: float) -> None:
    for p in PS:
        assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8), p


@pytest.mark.parametrize("df", DFS)
def test_t_cdf_matches_scipy(df: float) -> None:
    for t in [-50.0, -3.0, -1.0, -0.01, 0.0, 0.2, 1.0, 2.5, 12.0, 300.0]:
        assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), rel=1e-9, abs=1e-15), t


def test_t_edges() -> None:
    assert t_quantile(0.5, 7) == 0.0
    assert t_quantile(0.975, math.inf) == pytest.approx(stats.norm.ppf(0.975), rel=1e-12)
    assert t_cdf(math.inf, 3) == 1.0 and t_cdf(-math.inf, 3) == 0.0
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            t_quantile(bad, 5)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0.9, 0)


@pytest.mark.parametrize("n", [2, 3, 5, 20, 200])
@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_mean_interval_matches_scipy(n: int, confidence: float) -> None:
    x = np.random.default_rng(n).gamma(2.0, 3.0, n)
    got = mean_interval(x, confidence)
    lo, hi = stats.t.interval(confidence, n - 1, loc=x.mean(), scale=stats.sem(x))
    assert got.n == n and got.missing == 0
    assert got.mean == pytest.approx(x.mean(), rel=1e-13)
    assert got.sd == pytest.approx(np.std(x, ddof=1), rel=1e-13)
    assert got.se == pytest.approx(stats.sem(x), rel=1e-13)
    assert got.ci_low == pytest.approx(lo, rel=1e-9)
    assert got.ci_high == pytest.approx(hi, rel=1e-9)


def test_missing_values_are_left_out_and_counted() -> None:
    x = [1.0, np.nan, 3.0, np.inf, 5.0]
    got = mean_interval(x)
    assert (got.n, got.missing, got.mean) == (3, 2, 3.0)
    assert got.half_width == pytest.approx(stats.t.ppf(0.975, 2) * 2 / math.sqrt(3))


def test_too_few_values() -> None:
    assert math.isnan(mean_interval([]).mean)
    one = mean_interval([4.0])
    assert one.mean == 4.0 and math.isnan(one.half_width) and math.isnan(one.sd)
    constant = mean_interval([2.0, 2.0, 2.0])
    assert constant.half_width == 0.0 and constant.relative_half_width == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_welch_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(1.0, 2.0, 7 + seed)
    b = rng.normal(0.0, 0.5, 12)
    got = welch_difference(a, b, 0.9)
    ref = stats.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.9)
    assert got.method == "welch" and (got.n, got.n_reference) == (a.size, b.size)
    assert got.difference == pytest.approx(a.mean() - b.mean(), rel=1e-12)
    assert got.df == pytest.approx(ref.df, rel=1e-10)
    assert (got.ci_low, got.ci_high) == (pytest.approx(ci.low, rel=1e-9),
                                         pytest.approx(ci.high, rel=1e-9))
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-7)


@pytest.mark.parametrize("seed", range(4))
def test_paired_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    common = rng.normal(10.0, 3.0, 15)
    a = common + rng.normal(0.4, 0.2, 15)
    b = common + rng.normal(0.0, 0.2, 15)
    got = paired_difference(a, b)
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert got.method == "paired" and got.n == 15 and got.df == 14
    assert (got.ci_low, got.ci_high) == (pytest.approx(ci.low, rel=1e-9),
                                         pytest.approx(ci.high, rel=1e-9))
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-7)
    # the point of pairing: the common part cancels, the interval is far narrower than Welch's
    assert got.half_width < welch_difference(a, b).half_width / 5


def test_paired_leaves_out_incomplete_pairs() -> None:
    got = paired_difference([1.0, 2.0, np.nan, 4.0], [0.0, 1.0, 1.0, np.nan])
    assert got.n == 2 and got.difference == 1.0 and got.half_width == 0.0
    with pytest.raises(ValueError, match="same length"):
        paired_difference([1.0], [1.0, 2.0])


def test_running_intervals_match_prefix_intervals() -> None:
    x = np.random.default_rng(3).exponential(2.0, 40) + 1e6  # shifted: cancellation check
    run = running_intervals(x, 0.9)
    assert run["n"].tolist() == list(range(1, 41))
    assert math.isnan(run["half_width"][0])
    for k in (2, 3, 10, 40):
        ref = mean_interval(x[:k], 0.9)
        assert run["mean"][k - 1] == pytest.approx(ref.mean, rel=1e-14)
        assert run["half_width"][k - 1] == pytest.approx(ref.half_width, rel=1e-7)
