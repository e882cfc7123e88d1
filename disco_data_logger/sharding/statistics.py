"""Confidence intervals for replication results: Student t, Welch and paired differences.

Everything here is plain numpy on small arrays (one number per replication), with the Student t
quantile computed in this module so the package does not depend on SciPy; the tests check it
against ``scipy.stats.t``. The formulas, and the books they come from, are in
``docs/statistics.md``.

Missing values (NaN: a metric that is undefined for a replication, such as a mean over an empty
window) are left out of every estimate and counted separately, never treated as zeros.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from ..errors import MetricError

__all__ = [
    "Interval",
    "Difference",
    "check_confidence",
    "t_quantile",
    "t_cdf",
    "mean_interval",
    "paired_difference",
    "welch_difference",
    "running_intervals",
]

_EPS = 1e-15
_NORMAL_DF = 1e10
"""Above this many degrees of freedom t is the normal distribution to double precision."""


def check_confidence(confidence: float) -> float:
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise MetricError(f"confidence must be between 0 and 1, exclusive (got {confidence!r})")
    return confidence


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        # even step
        num = m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        # odd step
        num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < _EPS:
            break
    return h


def _lgamma_shift(b: float, a: float) -> float:
    """``lgamma(b + a) - lgamma(b)``, without the cancellation of the direct form for large b."""
    if b < 50.0:
        return math.lgamma(b + a) - math.lgamma(b)
    # Stirling's series for both terms, subtracted term by term (error below 1e-16 for b >= 50).
    c = b + a
    return ((b - 0.5) * math.log1p(a / b) + a * math.log(c) - a
            + (1.0 / c - 1.0 / b) / 12.0
            - (1.0 / c**3 - 1.0 / b**3) / 360.0
            + (1.0 / c**5 - 1.0 / b**5) / 1260.0)


def _log_inverse_beta(a: float, b: float) -> float:
    """``log(1 / B(a, b)) = lgamma(a + b) - lgamma(a) - lgamma(b)``."""
    if a > b:
        a, b = b, a
    return _lgamma_shift(b, a) - math.lgamma(a)


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = _log_inverse_beta(a, b) + a * math.log(x) + b * math.log1p(-x)
    # The fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom (``inf``: normal)."""
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0 (got {df!r})")
    if math.isinf(df) or df > _NORMAL_DF:
        return NormalDist().cdf(t)
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    # With x = df / (df + t^2) and y = t^2 / (df + t^2) = 1 - x (each computed directly):
    # P(|T| > |t|) = I_x(df / 2, 1 / 2) and P(|T| < |t|) = I_y(1 / 2, df / 2). Use the one whose
    # argument is small, so neither is found as a difference of numbers close to 1.
    t2 = t * t
    x = df / (df + t2)
    y = t2 / (df + t2)
    if x < y:
        tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, x)
        return 1.0 - tail if t > 0 else tail
    centre = 0.5 * _incomplete_beta(0.5, df / 2.0, y)
    return 0.5 + centre if t > 0 else 0.5 - centre


def _t_pdf(t: float, df: float) -> float:
    log_norm = _lgamma_shift(df / 2.0, 0.5) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1.0) / 2.0 * math.log1p(t * t / df))


@functools.lru_cache(maxsize=1 << 14)
def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` > 0 degrees of freedom (any real df).

    Closed forms for df 1 and 2; otherwise Newton's method on :func:`t_cdf` from a Cornish-Fisher
    start, kept inside a bisection bracket. Relative error below 1e-10 (checked against SciPy).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be between 0 and 1, exclusive (got {p!r})")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0 (got {df!r})")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if math.isinf(df) or df > _NORMAL_DF:
        return NormalDist().inv_cdf(p)
    if df == 1.0:
        return math.tan(math.pi * (p - 0.5))
    if df == 2.0:
        return (2.0 * p - 1.0) / math.sqrt(2.0 * p * (1.0 - p))
    z = NormalDist().inv_cdf(p)
    # Cornish-Fisher expansion: an excellent start for moderate df, a fair one for small df.
    g1 = (z**3 + z) / 4.0
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96.0
    t = z + g1 / df + g2 / df**2
    lo, hi = 0.0, max(t, 1.0)
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    t = min(max(t, lo), hi)
    for _ in range(200):
        f = t_cdf(t, df) - p
        if f == 0.0:
            return t
        if f > 0:
            hi = t
        else:
            lo = t
        candidate = t - f / _t_pdf(t, df)
        if not lo <= candidate <= hi:
            candidate = 0.5 * (lo + hi)
        if abs(candidate - t) <= 1e-13 * max(1.0, abs(t)):
            return candidate
        t = candidate
    return t


def _clean(values: Any) -> tuple[np.ndarray, int]:
    """(finite values as float64, how many were missing)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(arr)
    return arr[finite], int(arr.size - np.count_nonzero(finite))


@dataclass(frozen=True)
class Interval:
    """A mean with its Student-t confidence interval (NaN where it is not defined)."""

    n: int
    mean: float
    sd: float
    se: float
    half_width: float
    confidence: float
    missing: int = 0

    @property
    def ci_low(self) -> float:
        return self.mean - self.half_width

    @property
    def ci_high(self) -> float:
        return self.mean + self.half_width

    @property
    def relative_half_width(self) -> float:
        """Half-width over the absolute mean (inf for a zero mean, NaN when undefined)."""
        if math.isnan(self.half_width) or math.isnan(self.mean):
            return math.nan
        if self.mean == 0:
            return 0.0 if self.half_width == 0 else math.inf
        return self.half_width / abs(self.mean)


def mean_interval(values: Any, confidence: float = 0.95) -> Interval:
    """Mean, sample standard deviation (n - 1), standard error and t half-width of ``values``.

    ``half_width = t_{(1 + confidence) / 2, n - 1} * sd / sqrt(n)``; with fewer than two values the
    spread and interval are NaN.
    """
    confidence = check_confidence(confidence)
    x, missing = _clean(values)
    n = int(x.size)
    if n == 0:
        nan = math.nan
        return Interval(0, nan, nan, nan, nan, confidence, missing)
    mean = float(x.mean())
    if n == 1:
        return Interval(1, mean, math.nan, math.nan, math.nan, confidence, missing)
    sd = float(x.std(ddof=1))
    se = sd / math.sqrt(n)
    hw = t_quantile(0.5 + confidence / 2.0, n - 1) * se
    return Interval(n, mean, sd, se, hw, confidence, missing)


@dataclass(frozen=True)
class Difference:
    """``point - reference`` of one metric, with its confidence interval.

    ``method`` is ``"paired"`` (differences of replications with the same number, under common
    random numbers) or ``"welch"`` (independent samples, unequal variances).
    """

    method: str
    n: int
    n_reference: int
    difference: float
    se: float
    df: float
    half_width: float
    confidence: float

    @property
    def ci_low(self) -> float:
        return self.difference - self.half_width

    @property
    def ci_high(self) -> float:
        return self.difference + self.half_width

    @property
    def p_value(self) -> float:
        """Two-sided p-value of "no difference" (NaN when undefined)."""
        if not (self.se > 0 and self.df > 0):
            return math.nan
        return 2.0 * t_cdf(-abs(self.difference) / self.se, self.df)


def paired_difference(values: Any, reference: Any, confidence: float = 0.95) -> Difference:
    """The mean of ``values[i] - reference[i]`` with a t interval on the n - 1 degrees of freedom.

    The two arrays are aligned pairs (same replication number); a pair with a missing side is
    left out.
    """
    confidence = check_confidence(confidence)
    a = np.asarray(values, dtype=np.float64).ravel()
    b = np.asarray(reference, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length ({a.size} vs {b.size})")
    both = np.isfinite(a) & np.isfinite(b)
    stats = mean_interval(a[both] - b[both], confidence)
    return Difference("paired", stats.n, stats.n, stats.mean, stats.se,
                      float(stats.n - 1) if stats.n > 1 else math.nan, stats.half_width,
                      confidence)


def welch_difference(values: Any, reference: Any, confidence: float = 0.95) -> Difference:
    """``mean(values) - mean(reference)`` with Welch's interval (Welch-Satterthwaite df)."""
    confidence = check_confidence(confidence)
    a, _ = _clean(values)
    b, _ = _clean(reference)
    n1, n0 = int(a.size), int(b.size)
    nan = math.nan
    if n1 == 0 or n0 == 0:
        return Difference("welch", n1, n0, nan, nan, nan, nan, confidence)
    diff = float(a.mean() - b.mean())
    if n1 < 2 or n0 < 2:
        return Difference("welch", n1, n0, diff, nan, nan, nan, confidence)
    v1 = float(a.var(ddof=1)) / n1
    v0 = float(b.var(ddof=1)) / n0
    se = math.sqrt(v1 + v0)
    if se == 0.0:
        return Difference("welch", n1, n0, diff, 0.0, float(n1 + n0 - 2), 0.0, confidence)
    df = (v1 + v0) ** 2 / (v1**2 / (n1 - 1) + v0**2 / (n0 - 1))
    hw = t_quantile(0.5 + confidence / 2.0, df) * se
    return Difference("welch", n1, n0, diff, se, df, hw, confidence)


def running_intervals(values: Sequence[float] | np.ndarray,
                      confidence: float = 0.95) -> dict[str, np.ndarray]:
    """Mean and t interval of the first k values, for every k: the data of a convergence chart.

    Returns arrays ``n`` (1..len), ``mean``, ``half_width`` (NaN for k = 1), missing values
    skipped (``n`` counts the values used).
    """
    confidence = check_confidence(confidence)
    x, _ = _clean(values)
    k = np.arange(1, x.size + 1, dtype=np.float64)
    if x.size == 0:
        empty = np.zeros(0)
        return {"n": empty.astype(np.int64), "mean": empty, "half_width": empty}
    # Welford-free form is fine here: values are per-replication results, not long sums, and
    # shifting by the first value keeps the cancellation small.
    shifted = x - x[0]
    s1 = np.cumsum(shifted)
    s2 = np.cumsum(shifted * shifted)
    mean = s1 / k
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.maximum(s2 - k * mean * mean, 0.0) / (k - 1.0)
    hw = np.full(x.size, np.nan)
    quantiles = np.array([t_quantile(0.5 + confidence / 2.0, float(df))
                          for df in range(1, x.size)])
    hw[1:] = quantiles * np.sqrt(var[1:] / k[1:])
    return {"n": k.astype(np.int64), "mean": mean + x[0], "half_width": hw}
