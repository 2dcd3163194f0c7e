"""Step changes between two runs of one cell, paired as the gate pairs them: the one rule
that ``echo-bench history`` and ``echo-bench dashboard`` both apply (:func:`step_changes`).

Two runs of a spec use the same prompts, seeds and repeats, so a generation in one run has
a twin in the other: the same text, the same noise. Comparing twins removes the spread
between prompts (a short prompt's RTF can be several times a long one's), which an
unpaired test of the pooled values cannot see past: a uniform 15 % slowdown over a mix of
short and long prompts hides in that spread.

Rule (asv's two conditions, the test made anytime-valid), per figure in
:data:`STEP_RULES`: the change over twins is beyond the rule's size, AND its interval at
1 - ``alpha`` (:func:`bench.analysis.sequential.confidence_sequence`, the
with-replacement form: the question is whether the sampler changed, not what two nights'
draws showed) excludes no change at all. A cell that did not change is flagged with
chance at most ``alpha`` however often its twins are looked at as they come in (in
practice far less: its estimate must also lie beyond the size). Speed: the mean over
twins of log(RTF after/before), shown as a ratio, against ``factor`` (x1.1) either way.
Quality: a difference over twins (corpus WER: errors over reference words of the twins;
SIM and MOS: means) against the gate's default non-inferiority margins
(``bench.gate.thresholds``: WER 0.5 points, SIM 0.01, MOS 0.1). The sizes are printed
with every result.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.analysis.sequential import confidence_sequence, paired_differences, paired_log_ratios
from bench.spec.adaptive import min_first_batch


@dataclass(frozen=True)
class StepChange:
    """``change``: for RTF the geometric mean over twins of after/before (> 1 slower), for
    quality the difference after - before over twins; ``low``/``high`` its anytime-valid
    interval in the same units; ``n_pairs`` twins compared; ``step`` "slower"/"faster"
    (speed), "worse"/"better" (quality) or "" (no step); ``metric`` the figure (a
    :data:`STEP_RULES` name)."""

    change: float
    low: float
    high: float
    n_pairs: int
    step: str
    metric: str = "rtf"

    @property
    def ratio(self) -> float:
        """The speed rule's name for ``change``."""
        return self.change


NO_PAIRS = StepChange(math.nan, math.nan, math.nan, 0, "")


@dataclass(frozen=True)
class StepRule:
    """One figure's step rule: ``metric`` (a per-generation figure of a run summary,
    :mod:`bench.analysis.run_summary`), its ``label``; ``size`` the smallest change that
    counts (a ratio for RTF, else a difference in the figure's units); ``weight`` the
    per-generation denominator of a ratio of sums (WER: reference words)."""

    metric: str
    label: str
    size: float
    higher_is_better: bool
    weight: str | None = None


#: The figures history and the dashboard flag steps on. Sizes: x1.1 for RTF (history's
#: ``--factor``); the gate's default margins for quality (``bench.gate.thresholds``; a
#: test checks they agree).
STEP_RULES: tuple[StepRule, ...] = (
    StepRule("rtf", "median RTF", 1.1, higher_is_better=False),
    StepRule("wer_errors", "corpus WER", 0.005, higher_is_better=False, weight="ref_words"),
    StepRule("sim", "SIM", 0.01, higher_is_better=True),
    StepRule("utmos", "UTMOS", 0.1, higher_is_better=True),
    StepRule("dnsmos_ovrl", "DNSMOS OVRL", 0.1, higher_is_better=True),
)

#: Per-generation figures by name, each keyed by twin (prompt/seed/repeat).
Figures = Mapping[str, Mapping[Hashable, float]]


class Twins:
    """One cell's per-generation figures in one run: ``keys`` (prompt/seed/repeat, the
    twins of another run of the spec) and, per figure name, floats aligned with them
    (NaN: no figure). Arrays, not dicts: a year of nights is tens of thousands of
    comparisons, and runs of one spec list their keys in the same order."""

    __slots__ = ("_position", "keys", "values")

    def __init__(self, keys: Sequence[Hashable], values: Mapping[str, Any]) -> None:
        self.keys = tuple(keys)
        self.values = {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}
        self._position: dict[Hashable, int] | None = None

    @classmethod
    def from_mappings(cls, figures: Figures) -> Twins:
        keys = list(dict.fromkeys(k for values in figures.values() for k in values))
        return cls(keys, {name: [_number(values.get(k)) for k in keys]
                          for name, values in figures.items()})

    def aligned(self, other: Twins, name: str, weight: str | None = None
                ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64],
                           npt.NDArray[np.float64] | None]:
        """(this run's, the other run's, this run's ``weight``) figures over the twins
        both runs have."""
        mine, theirs = self.values[name], other.values[name]
        weights = self.values.get(weight) if weight else None
        if self.keys == other.keys:
            return mine, theirs, weights
        if other._position is None:
            other._position = {k: i for i, k in enumerate(other.keys)}
        pairs = [(i, other._position[k]) for i, k in enumerate(self.keys)
                 if k in other._position]
        ours = np.array([i for i, _ in pairs], dtype=np.int64)
        others = np.array([j for _, j in pairs], dtype=np.int64)
        return mine[ours], theirs[others], None if weights is None else weights[ours]


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else math.nan


def step_changes(before: Twins | Figures, after: Twins | Figures, *, factor: float = 1.1,
                 alpha: float = 0.05, rules: Sequence[StepRule] = STEP_RULES
                 ) -> list[StepChange]:
    """The step rule over two runs of one cell: one :class:`StepChange` per rule whose
    figure both runs have (``factor`` replaces the RTF rule's size). History and the
    dashboard call this and nothing else, so the rule changes in one place."""
    b = before if isinstance(before, Twins) else Twins.from_mappings(before)
    a = after if isinstance(after, Twins) else Twins.from_mappings(after)
    out = []
    for rule in rules:
        if rule.metric not in b.values or rule.metric not in a.values:
            continue
        old, new, weights = b.aligned(a, rule.metric, rule.weight)
        out.append(_step(old, new, weights, rule, factor if rule.metric == "rtf" else rule.size,
                         alpha))
    return out


def paired_step_change(before: Mapping[Hashable, float], after: Mapping[Hashable, float],
                       *, factor: float = 1.1, alpha: float = 0.05) -> StepChange:
    """Compare the RTFs of twin generations (same key: prompt, seed, repeat) of two
    runs. Keys present in one run only, and non-positive or missing figures, are left out."""
    [change] = step_changes({"rtf": before}, {"rtf": after}, factor=factor, alpha=alpha,
                            rules=STEP_RULES[:1])
    return change


def _step(before: npt.NDArray[np.float64], after: npt.NDArray[np.float64],
          weights: npt.NDArray[np.float64] | None, rule: StepRule, size: float,
          alpha: float) -> StepChange:
    """One rule over aligned twins (see the module docstring)."""
    if rule.metric == "rtf":
        num, den = paired_log_ratios(before, after)
        threshold = math.log(size)
    else:
        num, den = paired_differences(before, after, weights)
        threshold = size
    n = int((den > 0).sum())
    if not n:
        return NO_PAIRS
    iv = confidence_sequence(num[:, None], den[:, None], None, 1.0 - alpha)
    est, low, high = float(iv.estimate[0]), float(iv.low[0]), float(iv.high[0])
    step = ""
    # Fewer twins than a first batch at this level needs say too little to flag anything
    # (two identical ratios would make a zero-width interval).
    surely = low > 0 or high < 0  # the interval excludes no change at all
    if n >= min_first_batch(1.0 - alpha) and surely and abs(est) > threshold:
        up = est > 0  # slower, more errors, or a higher SIM/MOS
        step = (("slower" if up else "faster") if rule.metric == "rtf"
                else "better" if up == rule.higher_is_better else "worse")
    if rule.metric == "rtf":
        est, low, high = math.exp(est), math.exp(low), math.exp(high)
    return StepChange(est, low, high, n, step, rule.metric)


def history_table(root: str | Path, spec_name: str | None = None) -> pd.DataFrame:
    """:func:`history_frame` of every run under ``root`` (optionally of one spec) whose
    summary can be read (:func:`bench.analysis.run_summary.collect_summaries`)."""
    from bench.analysis.run_summary import collect_summaries

    return history_frame(collect_summaries(root, spec_name).summaries)


def history_frame(summaries: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """:func:`history_rows` as a table."""
    return pd.DataFrame(history_rows(summaries))


#: Summary figures that are quality (NaN unless scored with meaningful weights and ASR).
_QUALITY = ("corpus_wer", "sim", "utmos", "dnsmos_ovrl")


def history_rows(summaries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Key figures of runs (their summaries, :mod:`bench.analysis.run_summary`, oldest
    first): one row per (run, cell) with ``run_id``, ``started_at``, ``git_commit``,
    ``spec_name``, ``adaptive``, the cell's figures (``cell_id``, ``cell_label``,
    ``hardware``, ``rtf_median`` with ``rtf_lo``/``rtf_hi``, ``corpus_wer`` and quality
    means with intervals, NaN unless scored and meaningful, ``failure_rate``,
    ``peak_memory``, ``random_weights``, ``n``) and ``twins`` (per-generation figures,
    :class:`Twins`, so runs pair twin generations)."""
    rows: list[dict[str, Any]] = []
    for summary in summaries:
        run = {name: summary.get(name) for name in
               ("run_id", "started_at", "git_commit", "spec_name", "adaptive")}
        run_keys = summary.get("keys") or []
        for cell in summary.get("cells") or []:
            row = {**run, **{k: math.nan if v is None else v for k, v in cell.items()
                             if k not in ("keys", "figures")}}
            figures = cell.get("figures") or {}
            if cell.get("quality") != "ok":  # quality from random weights is no figure
                figures = {n: v for n, v in figures.items() if n == "rtf"}
                row.update({f"{name}{suffix}": math.nan for name in _QUALITY
                            for suffix in ("", "_lo", "_hi")})
            row["twins"] = Twins(cell.get("keys") or run_keys, figures)
            rows.append(row)
    return rows


def flag_step_changes(history: pd.DataFrame, factor: float = 1.1, alpha: float = 0.05
                      ) -> pd.DataFrame:
    """:func:`flag_rows` of a history table (rows carry ``twins``, or ``rtfs``: RTF by
    prompt/seed/repeat)."""
    rows = [{str(k): v for k, v in row.items()} for row in history.to_dict("records")]
    return pd.DataFrame(flag_rows(rows, factor=factor, alpha=alpha), index=history.index)


def flag_rows(rows: Sequence[Mapping[str, Any]], *, factor: float = 1.1, alpha: float = 0.05
              ) -> list[dict[str, Any]]:
    """``rows`` (oldest first) plus, per row, the changes against the same cell's
    previous run of the same spec that has the figure (:func:`step_changes`): ``ratio``
    (geometric mean over twins of RTF now / before) with ``low``/``high`` (its interval),
    ``n_pairs`` and ``step`` ("slower", "faster" or "") for speed, and ``changes``:
    every rule's :class:`StepChange` (quality too)."""
    out = []
    # (spec, cell, figure) -> the twins of the last run that had that figure: each figure
    # is compared with the last run that has it, so a random-weight night (speed only)
    # does not hide a quality step between the nights around it.
    previous: dict[tuple[str, str, str], Twins] = {}
    for row in rows:
        twins = row.get("twins")
        if not isinstance(twins, Twins):
            twins = Twins.from_mappings({"rtf": row["rtfs"]})
        cell = (str(row.get("spec_name")), str(row["cell_id"]))
        befores: dict[int, tuple[Twins, list[StepRule]]] = {}
        for rule in STEP_RULES:
            before = previous.get((*cell, rule.metric))
            if before is not None and rule.metric in twins.values:
                befores.setdefault(id(before), (before, []))[1].append(rule)
        changes = [c for before, rules in befores.values()
                   for c in step_changes(before, twins, factor=factor, alpha=alpha,
                                         rules=rules)]
        order = {rule.metric: i for i, rule in enumerate(STEP_RULES)}
        changes.sort(key=lambda c: order[c.metric])
        for name in twins.values:
            previous[(*cell, name)] = twins
        speed = next((c for c in changes if c.metric == "rtf"), NO_PAIRS)
        out.append({**row, "ratio": speed.ratio, "low": speed.low, "high": speed.high,
                    "n_pairs": speed.n_pairs, "step": speed.step, "changes": changes})
    return out
