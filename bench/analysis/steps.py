"""The step rule: whether one cell's figure stepped between two runs, speed and quality,
each beyond a step size of its own, at a stated error rate however often one looks. The
one rule of echo-bench: the history-aware nightly (:mod:`bench.analysis.nightly`),
``echo-bench history`` and the dashboard (:mod:`bench.analysis.history`) all ask
:func:`metric_step`, with the sizes of :class:`StepSizes`.

Two runs of a spec share prompts and seeds, so each generation of one has a twin in the
other, and an unchanged sampler makes the same or nearly the same audio: the twins'
differences are small, and the paired interval is narrow (pairing is the control variate
with coefficient 1: the variance of the difference is that of one run times 2 (1 - rho)).
For each metric the change is an interval from :func:`bench.analysis.sequential.
confidence_sequence` over the units seen so far (units grouped by prompt when a
``cluster`` is given, the order being the order they were drawn):

* speed: the mean log ratio after/before of RTF, against log(``speed_factor``);
* corpus WER: word errors after minus before over reference words, against
  ``wer_points`` (percentage points);
* SIM, MOS (UTMOS) and DNSMOS OVRL: the difference of means, against ``sim``, ``mos``
  and ``dnsmos``.

A metric is a ``step`` when its whole interval lies beyond +size or beyond -size, ``none``
when it lies within (-size, +size) (for WER, also only once enough words were seen for a
step to show: :func:`_enough_words`), ``open`` otherwise. Each statement errs with chance at
most 1 - ``confidence`` at any look (the sequence is anytime-valid), so a cell that did
not change, or changed by less than the size, is called a step with chance at most
1 - ``confidence``. With ``n_population`` (the units of the whole run) the question is
what the two full runs would show (the nightly's replay asks that; the interval closes on
the full figure); with None it is whether the sampler changed (history over complete runs:
the with-replacement form, so run-to-run noise is never called a step).

The step sizes are stated with every result; a size below what the spec's prompts can
resolve (:func:`resolvable`) leaves the metric ``open`` on most nights, and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from bench.analysis.sequential import (
    confidence_sequence,
    fixed_half_width,
    paired_differences,
    paired_log_ratios,
)
from bench.spec.adaptive import min_first_batch

FloatArray = npt.NDArray[np.float64]
State = Literal["step", "none", "open"]
METRICS: tuple[str, ...] = ("speed", "wer", "sim", "mos", "dnsmos")
#: Whether a higher value is worse, per metric (slower, more word errors; SIM and the
#: MOS the other way).
HIGHER_IS_WORSE = {"speed": True, "wer": True, "sim": False, "mos": False, "dnsmos": False}


@dataclass(frozen=True)
class StepSizes:
    """The smallest change each metric calls a step, the only place the sizes are set
    (the nightly, history and the dashboard read them here): ``speed_factor`` a ratio
    (1.1 = 10 % slower or faster), ``wer_points`` corpus WER in percentage points,
    ``sim`` cosine similarity, ``mos`` UTMOS points, ``dnsmos`` DNSMOS OVRL points.

    WER's 1 point, not the gate's 0.5 margin, is what a night resolves: on the constructed
    nightly (:mod:`bench.scripts.nightly_runs`, 24 prompts x 2 seeds) the full run's
    prompts resolve 0.4-0.7 points (:func:`resolvable`), and GPU non-determinism alone
    moves an unchanged cell's corpus WER by up to 0.6 points between two nights, so at
    0.5 the nightly replay calls such a cell a step and spends about half the full run
    instead of under a third. The gate keeps its own margins
    (:mod:`bench.gate.thresholds`): it asks whether a candidate is no worse, not
    whether a night stepped."""

    speed_factor: float = 1.1
    wer_points: float = 1.0
    sim: float = 0.02
    mos: float = 0.1
    dnsmos: float = 0.1

    def shown(self, metric: str) -> float:
        """The size in the units a reader sees (speed a ratio, WER points)."""
        return {"speed": self.speed_factor, "wer": self.wer_points, "sim": self.sim,
                "mos": self.mos, "dnsmos": self.dnsmos}[metric]

    def threshold(self, metric: str) -> float:
        """The size in the interval's own units (log ratio, WER fraction, differences)."""
        if metric == "speed":
            return math.log(self.speed_factor)
        return self.shown(metric) / 100 if metric == "wer" else self.shown(metric)


@dataclass(frozen=True)
class PairedUnits:
    """One cell's twin figures in two runs, one row per unit (prompt/seed/repeat) in the
    order the units were drawn; NaN where a unit has no figure. ``cluster`` (optional)
    names each unit's prompt: units of one prompt form one draw."""

    rtf_before: FloatArray
    rtf_after: FloatArray
    errors_before: FloatArray | None = None
    errors_after: FloatArray | None = None
    ref_words: FloatArray | None = None
    sim_before: FloatArray | None = None
    sim_after: FloatArray | None = None
    mos_before: FloatArray | None = None
    mos_after: FloatArray | None = None
    cluster: tuple[str, ...] | None = None
    dnsmos_before: FloatArray | None = None
    dnsmos_after: FloatArray | None = None

    def num_den(self, metric: str) -> tuple[FloatArray, FloatArray] | None:
        """The metric's per-unit ``num``/``den`` (None when the runs lack it)."""
        before, after, weights = {
            "speed": (self.rtf_before, self.rtf_after, None),
            "wer": (self.errors_before, self.errors_after, self.ref_words),
            "sim": (self.sim_before, self.sim_after, None),
            "mos": (self.mos_before, self.mos_after, None),
            "dnsmos": (self.dnsmos_before, self.dnsmos_after, None)}[metric]
        if before is None or after is None or (metric == "wer" and weights is None):
            return None
        return paired(metric, before, after, weights)


def paired(metric: str, before: FloatArray, after: FloatArray,
           weights: FloatArray | None = None) -> tuple[FloatArray, FloatArray]:
    """A metric's per-unit ``num``/``den`` from twin figures aligned unit by unit: the
    log ratio for speed, else the difference (WER: errors, with reference words as
    ``weights``)."""
    if metric == "speed":
        return paired_log_ratios(before, after)
    return paired_differences(before, after, weights)


@dataclass(frozen=True)
class MetricStep:
    """One metric's change: ``estimate``, ``low``, ``high`` in the metric's units (speed
    as a ratio after/before, WER in points), the units and draws it rests on, the step
    ``size`` (same units), its ``state`` and, for a step, its ``direction`` ("up": slower
    or more errors or higher SIM/MOS; "down" the other way)."""

    metric: str
    estimate: float
    low: float
    high: float
    n: int
    size: float
    state: State
    direction: str
    #: With ``regressions_only``: the worse-side bound of the "no regression" sequence
    #: (the figure "no step" was read from); NaN otherwise.
    bound: float = math.nan


def step_changes(units: PairedUnits, sizes: StepSizes = StepSizes(), *,
                 confidence: float = 0.95, n_population: int | None = None,
                 tight_at: float | None = None, none_confidence: float | None = None
                 ) -> dict[str, MetricStep]:
    """Each metric the runs carry: its change and whether it is a step (see the module
    docstring). ``n_population``: draws (prompts with ``cluster``, else units) in the
    whole run, for the without-replacement form; None for the with-replacement one."""
    out: dict[str, MetricStep] = {}
    for metric in METRICS:
        pair = units.num_den(metric)
        if pair is None:
            continue
        step = metric_step(metric, *pair, sizes, confidence=confidence,
                           n_population=n_population, tight_at=tight_at,
                           none_confidence=none_confidence, cluster=units.cluster)
        if step is not None:
            out[metric] = step
    return out


def metric_step(metric: str, num: FloatArray, den: FloatArray,
                sizes: StepSizes = StepSizes(), *, confidence: float = 0.95,
                n_population: int | None = None, tight_at: float | None = None,
                none_confidence: float | None = None,
                cluster: tuple[str, ...] | None = None) -> MetricStep | None:
    """:func:`metric_steps` for one cell's per-unit ``num``/``den`` (:func:`paired`),
    units summed per ``cluster`` when given; None when no unit has a figure."""
    if not (den > 0).any():
        return None
    num, den = _by_cluster(num, den, cluster)
    [step] = metric_steps(metric, num, den, sizes, confidence=confidence,
                          none_confidence=none_confidence, n_population=n_population,
                          tight_at=tight_at)
    return step


def _enough_words(words: float, size: float, confidence: float) -> bool:
    """Whether the words seen could show a WER step of ``size`` at all. Word errors are
    counts: on a few short prompts an unchanged and a changed cell alike often show no
    difference, and an interval resting on a plug-in spread of zero is a point. A step
    of ``size`` adds about size x W errors over W words (Poisson), so it shows none with
    chance exp(-size W); "no step" needs that below 1 - ``confidence``."""
    return size * words >= -math.log(1.0 - confidence)


def resolvable(units: PairedUnits, metric: str, confidence: float = 0.95) -> float:
    """The smallest change a fixed-size paired comparison over these units resolves at
    ``confidence``, the half-width of its interval, in the metric's shown units (speed
    as a factor: 1.03 resolves 3 %). A step size below it leaves the metric open on
    most nights."""
    pair = units.num_den(metric)
    if pair is None:
        return math.nan
    num, den = _by_cluster(*pair, units.cluster)
    num, den = num[:, 0], den[:, 0]
    ok = den > 0
    if ok.sum() < 2:
        return math.inf
    ratio = num[ok].sum() / den[ok].sum()
    sd = float(np.std(num[ok] - ratio * den[ok], ddof=1))
    half = fixed_half_width(sd, float(den[ok].mean()), int(ok.sum()), confidence)
    return _shown(metric, half)[0]


def _by_cluster(num: FloatArray, den: FloatArray, cluster: tuple[str, ...] | None
                ) -> tuple[FloatArray, FloatArray]:
    """Column arrays (rows, 1): per unit, or summed per cluster in first-seen order."""
    if cluster is None:
        return num.reshape(-1, 1), den.reshape(-1, 1)
    if len(cluster) != len(num):
        raise ValueError(f"{len(cluster)} clusters for {len(num)} units")
    index = {name: k for k, name in enumerate(dict.fromkeys(cluster))}
    codes = np.array([index[c] for c in cluster], dtype=np.int64)
    sums = np.zeros((len(index), 2))
    np.add.at(sums, codes, np.stack([num, den], axis=1))
    return sums[:, :1], sums[:, 1:]


def _shown(metric: str, *values: float) -> tuple[float, ...]:
    """Values in the units a reader sees: speed as a ratio, WER in points."""
    if metric == "speed":
        return tuple(math.exp(v) for v in values)
    if metric == "wer":
        return tuple(100 * v for v in values)
    return values


def metric_steps(metric: str, num: FloatArray, den: FloatArray, sizes: StepSizes, *,
                 confidence: float = 0.95, none_confidence: float | None = None,
                 n_population: int | None = None, tight_at: float | None = None,
                 pooled: bool = False, regressions_only: bool = False,
                 words_confidence: float | None = None) -> list[MetricStep]:
    """The step rule (module docstring) for one metric, per column of ``num``/``den``
    (rows: draws in the order drawn; den 0: not run); every caller comes here.

    A step needs at least :func:`bench.spec.adaptive.min_first_batch` draws at
    ``confidence``: on fewer, two identical ratios make a zero-width interval, and one
    re-drawn long prompt can carry the whole estimate while the residuals of a ratio
    look small. ``pooled``: the columns
    share one noise scale (:func:`bench.analysis.sequential.confidence_sequence`) for
    "no step" only; a step is flagged on the column's own spread, bounded from its own
    degrees of freedom: a false step is the error nobody forgives, a missed one costs a
    few more draws (and the weekly audit catches it). ``regressions_only``: "no step" needs only that no *regression* beyond the size is
    possible (the nightly spends to rule out what hurts; an improvement beyond the size
    is still flagged when its interval shows it). ``words_confidence``: the level of
    WER's words floor (:func:`_enough_words`; default that of "no step")."""
    size = sizes.threshold(metric)
    fewest = min_first_batch(confidence)
    iv = confidence_sequence(num, den, n_population, confidence, tight_at)
    level = none_confidence or confidence
    if regressions_only:
        level = 2.0 * level - 1.0  # only the worse side is read: it errs with 1 - level
    if pooled or level != confidence:
        near = confidence_sequence(num, den, n_population, level, tight_at, pooled=pooled)
    else:
        near = iv
    words = np.where(np.isfinite(den) & (den > 0), den, 0.0).sum(axis=0)
    out = []
    for j in range(num.shape[1]):
        est, low, high = float(iv.estimate[j]), float(iv.low[j]), float(iv.high[j])
        below, above = -size < float(near.low[j]), float(near.high[j]) < size
        if regressions_only:
            within = above if HIGHER_IS_WORSE[metric] else below
        else:
            within = below and above
        if metric == "wer" and within:
            within = _enough_words(float(words[j]), size,
                                   words_confidence or none_confidence or confidence)
        beyond = (low > size or high < -size) and int(iv.n[j]) >= fewest
        state: State = "step" if beyond else "none" if within else "open"
        direction = ("up" if est > 0 else "down") if state == "step" else ""
        shown_est, shown_low, shown_high = _shown(metric, est, low, high)
        worse = float(near.high[j] if HIGHER_IS_WORSE[metric] else near.low[j])
        bound = _shown(metric, worse)[0] if regressions_only else math.nan
        out.append(MetricStep(metric, shown_est, shown_low, shown_high, int(iv.n[j]),
                              sizes.shown(metric), state, direction, bound))
    return out
