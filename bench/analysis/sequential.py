"""The sequential-decision core: paired intervals that stay valid at every look, for
evidence that grows prompt by prompt drawn without replacement from a finite prompt set.

Every decision echo-bench makes from growing evidence (the stages of an adaptive sweep,
the rounds of a gate, the nights of a history) asks the same question: given the prompts
run so far, what would the whole prompt set show? A fixed-level interval recomputed
after every batch is wrong more often than its level says, because each look is another
chance of a false decision. The intervals here are *confidence sequences*: with
probability at least the confidence level, every one of them, at every number of prompts,
covers the whole set's figure, so the evidence may be looked at as often as wanted.

The construction (Waudby-Smith & Ramdas, "Confidence sequences for sampling without
replacement", NeurIPS 2020, with Robbins' normal mixture as in Howard et al., Annals of
Statistics 2021):

* The figure is a ratio over the whole prompt set, R = sum(num) / sum(den), with one
  ``num``/``den`` pair per prompt (a corpus WER difference: word errors of cell j minus
  cell i over reference words; a speed ratio: summed log RTF ratios over paired units;
  a mean: den = 1). For the true R, y_k = num_k - R den_k has mean zero over the set.
* Prompts come in a random order without replacement. Given the first i - 1, the i-th
  has mean (N mu - S_{i-1}) / (N - i + 1), so sum_i (y_i - that mean) is a martingale.
  Its increments weight the i-th prompt by 1 + H(N - i) - H(N - t) (H harmonic numbers)
  and the unknown mean by B_t = N (H(N) - H(N - t)), which grows faster than t: the
  interval narrows faster than with replacement and closes when every prompt has run.
* Robbins' mixture over a normal (sub-Gaussian) increment with variance sigma^2 bounds
  that martingale at every t with probability 1 - alpha:
  |A_t| <= sigma sqrt((t + m)(2 log(1/alpha) + log(1 + t/m))), m the prompts at which the
  bound is tightest relative to a fixed-t interval (``tight_at``).
* sigma is estimated from the residuals of the ratio (the delta method) and taken at its
  upper 80 % confidence bound (:data:`SIGMA_BOUND_LEVEL`), so validity is asymptotic in the
  number of prompts (Waudby-Smith et al., "Time-uniform central limit
  theory", 2021); the replays check the error rate by simulation
  (``tests/unit/test_sequential.py``, and ``echo-bench adaptive-replay --truth``).

Everything is vectorised over columns (one column per compared pair), so a stage of an
adaptive replay costs a few array operations, no bootstrap.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Fewest prompts an interval rests on; below it the interval is the whole line.
MIN_PROMPTS = 2
#: sigma enters as its upper confidence bound at this level (chi-square, t - 1 degrees of
#: freedom): a plug-in estimate from a handful of prompts is too small often enough to
#: break the sequence's level at the early looks (simulated: 7-8 % misses at 95 % on
#: skewed per-prompt WER differences with the plug-in, 2-4 % with the bound at 0.8).
SIGMA_BOUND_LEVEL = 0.8


@dataclass(frozen=True)
class AnytimeIntervals:
    """Intervals of ratios, one per column: ``estimate`` (the ratio of sums over the
    prompts seen), ``low`` and ``high`` (the confidence sequence at this look), ``n``
    (prompts seen) and ``sd`` (the per-prompt standard deviation of the ratio's
    residuals, in ``num`` units, the noise a decision fights)."""

    estimate: FloatArray
    low: FloatArray
    high: FloatArray
    n: npt.NDArray[np.int64]
    sd: FloatArray
    den_mean: FloatArray


@functools.cache
def _harmonic(n: int) -> FloatArray:
    """H(0..n): H(k) = 1 + 1/2 + ... + 1/k."""
    out = np.zeros(n + 1)
    out[1:] = np.cumsum(1.0 / np.arange(1, n + 1))
    return out


@functools.cache
def mixture_scale(confidence: float) -> float:
    """u such that m = u t* makes Robbins' boundary tightest at t* prompts: the root of
    2 log(1/alpha) + log(1 + 1/u) = 1/u (about 0.12 at 95 %)."""
    two_l = 2.0 * math.log(1.0 / (1.0 - confidence))
    lo, hi = 1e-6, 10.0
    for _ in range(100):  # bisection: f decreases in 1/u
        mid = (lo + hi) / 2
        if two_l + math.log1p(1.0 / mid) - 1.0 / mid > 0:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def boundary(n: npt.ArrayLike, confidence: float, tight_at: float) -> FloatArray:
    """Robbins' normal-mixture boundary for a unit-variance sum of ``n`` terms: with
    probability ``confidence`` no partial sum ever leaves +-boundary(n), at any n."""
    t = np.asarray(n, dtype=np.float64)
    m = max(1e-9, mixture_scale(confidence) * tight_at)
    alpha = 1.0 - confidence
    return np.sqrt((t + m) * (2.0 * math.log(1.0 / alpha) + np.log1p(t / m)))


def confidence_sequence(num: npt.ArrayLike, den: npt.ArrayLike, n_population: int | None,
                        confidence: float = 0.95, tight_at: float | None = None, *,
                        pooled: bool = False) -> AnytimeIntervals:
    """Anytime-valid intervals of sum(num) / sum(den) over a finite set of prompts.

    ``num`` and ``den`` have shape (prompts, columns) with the rows in the order the
    prompts were drawn (a seeded shuffle of the set, as the stages run them); a row
    whose ``den`` is not positive (or either value not finite) was not run for that
    column. ``n_population`` is the size N of the whole prompt set (None: an unbounded
    population, the with-replacement form). ``tight_at``: the number of prompts where
    the interval is to be tightest (default: a quarter of N, at least 10). ``pooled``:
    the columns share one noise scale (the same units measured by several cells of one
    run, whose run-to-run noise is the machine's), so sigma's upper bound rests on the
    residuals of all columns together (their degrees of freedom summed); each column
    still takes its own plug-in estimate where that is larger, so a column noisier than
    the rest keeps its own width.

    When a column has seen every prompt of the set, its interval is its figure exactly.
    """
    num = np.atleast_2d(np.asarray(num, dtype=np.float64))
    den = np.atleast_2d(np.asarray(den, dtype=np.float64))
    if num.shape != den.shape:
        raise ValueError(f"num {num.shape} and den {den.shape} differ")
    ok = np.isfinite(num) & np.isfinite(den) & (den > 0)
    num = np.where(ok, num, 0.0)
    den = np.where(ok, den, 0.0)
    pos = np.cumsum(ok, axis=0)  # 1-based position of each run row among its column's
    t = pos[-1] if len(pos) else np.zeros(num.shape[1], dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = num.sum(axis=0) / den.sum(axis=0)
        resid = np.where(ok, num - estimate * den, 0.0)
        var = (resid ** 2).sum(axis=0) / np.maximum(t - 1, 1)
    sd = np.sqrt(var)
    dof = np.maximum(t - 1, 1).astype(np.float64)
    if pooled and t.size:
        # sigma's upper bound on the summed degrees of freedom: sum(resid^2) / chi2_low.
        shared = np.array([max(float(np.maximum(t - 1, 0).sum()), 1.0)])
        sd_bound = np.maximum(sd, math.sqrt(float((resid ** 2).sum() / _chi2_low(shared)[0])))
    else:
        sd_bound = sd * np.sqrt(dof / _chi2_low(dof))
    if n_population is None:
        a_num, a_den = num.sum(axis=0), den.sum(axis=0)
        exact = np.zeros_like(t, dtype=bool)
    else:
        big_n = max(int(n_population), int(t.max()) if t.size else 0)
        h = _harmonic(big_n)
        # prompt i of t weighs 1 + H(N - i) - H(N - t): it also stands in the later
        # prompts' conditional means.
        weight = np.where(ok, 1.0 + h[big_n - np.clip(pos, 0, big_n)] - h[big_n - t], 0.0)
        a_num, a_den = (weight * num).sum(axis=0), (weight * den).sum(axis=0)
        exact = t >= big_n
    tight = tight_at if tight_at is not None else max(10.0, (n_population or 40) / 4)
    half = sd_bound * boundary(t, confidence, tight)
    with np.errstate(invalid="ignore", divide="ignore"):
        center = a_num / a_den
        width = half / a_den
        low = np.where(exact, estimate, center - width)
        high = np.where(exact, estimate, center + width)
    few = (t < MIN_PROMPTS) & ~exact
    low = np.where(few, -np.inf, low)
    high = np.where(few, np.inf, high)
    none = t == 0
    nan = np.full_like(estimate, np.nan)
    den_mean = np.where(t > 0, den.sum(axis=0) / np.maximum(t, 1), np.nan)
    return AnytimeIntervals(np.where(none, nan, estimate), np.where(none, nan, low),
                    np.where(none, nan, high), t.astype(np.int64), sd, den_mean)


def _chi2_low(dof: FloatArray) -> FloatArray:
    """The chi-square quantile at 1 - :data:`SIGMA_BOUND_LEVEL` (sigma's upper bound),
    read from a table (scipy's ppf costs more than the rest of an interval)."""
    table = _chi2_table(max(64, int(dof.max()) if dof.size else 1))
    return table[dof.astype(np.intp)]


@functools.cache
def _chi2_table_of(size: int) -> FloatArray:
    from scipy import stats

    out = np.ones(size + 1)
    out[1:] = stats.chi2.ppf(1.0 - SIGMA_BOUND_LEVEL, np.arange(1, size + 1))
    return out


def _chi2_table(n: int) -> FloatArray:
    return _chi2_table_of(1 << (n - 1).bit_length())  # powers of two: few tables


def fixed_half_width(sd: float, den_mean: float, n: int, confidence: float = 0.95) -> float:
    """The half-width of an ordinary fixed-sample interval of the ratio over ``n``
    prompts drawn from a large population (what a prompt set of that size resolves)."""
    from scipy import stats

    if n < 2 or not den_mean > 0:
        return math.inf
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    return z * sd / (den_mean * math.sqrt(n))


def prompts_needed(sd: float, den_mean: float, half_width: float,
                   confidence: float = 0.95) -> int:
    """Prompts a fixed-sample interval needs to resolve ``half_width`` (the inverse of
    :func:`fixed_half_width`)."""
    from scipy import stats

    if not (half_width > 0 and den_mean > 0 and math.isfinite(sd)):
        return 0
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    return max(2, math.ceil((z * sd / (den_mean * half_width)) ** 2))


def paired_log_ratios(before: npt.ArrayLike, after: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """``num``/``den`` for :func:`confidence_sequence` of the mean log ratio after/before
    over paired units (a speed change): num = log(after / before), den = 1 where both
    are positive and finite, den = 0 (the unit counts as not run) elsewhere."""
    a = np.asarray(before, dtype=np.float64)
    b = np.asarray(after, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    num = np.where(ok, np.log(np.where(ok, b, 1.0) / np.where(ok, a, 1.0)), 0.0)
    return num, ok.astype(np.float64)


def paired_differences(before: npt.ArrayLike, after: npt.ArrayLike,
                       den: npt.ArrayLike | None = None) -> tuple[FloatArray, FloatArray]:
    """``num``/``den`` for :func:`confidence_sequence` of a paired difference: num =
    after - before per unit; den the unit's weight (reference words for a corpus WER
    difference, so the ratio is the difference of corpus WERs; None: 1, a difference of
    means). A unit missing either value gets den = 0 (not run)."""
    a = np.asarray(before, dtype=np.float64)
    b = np.asarray(after, dtype=np.float64)
    w = np.ones_like(a) if den is None else np.asarray(den, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b) & np.isfinite(w) & (w > 0)
    return np.where(ok, b - a, 0.0), np.where(ok, w, 0.0)


def side_of(intervals: AnytimeIntervals, threshold: float) -> npt.NDArray[np.int64]:
    """Per column: +1 when the whole interval lies above ``threshold``, -1 when below,
    0 while it holds the threshold (undecided, or no interval yet). With a two-sided
    sequence at confidence 1 - 2 alpha, each one-sided call errs with chance <= alpha."""
    above = np.nan_to_num(intervals.low, nan=-np.inf) > threshold
    below = np.nan_to_num(intervals.high, nan=np.inf) < threshold
    return above.astype(np.int64) - below.astype(np.int64)
