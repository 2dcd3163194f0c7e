"""Step changes between two runs of one cell, paired as the gate pairs them: the one rule
that ``echo-bench history`` and ``echo-bench dashboard`` both apply (:func:`step_changes`).

Two runs of a spec use the same prompts, seeds and repeats, so a generation in one run has
a twin in the other: the same text, the same noise. Comparing twins removes the spread
between prompts (a short prompt's RTF can be several times a long one's), which an
unpaired test of the pooled values cannot see past: a uniform 15 % slowdown over a mix of
short and long prompts hides in that spread.

Rule (asv's, both conditions), per figure in :data:`STEP_RULES`: the change over twins is
beyond the rule's size, AND the Wilcoxon signed-rank test on the twins' differences says
it is not zero: two-sided p (twice the smaller one-sided p) below ``alpha``. Speed: the
change is the median over twins of RTF after/before, beyond ``factor`` (x1.1) either way,
tested on log ratios. Quality: the change is a difference over twins (corpus WER: errors
over reference words of the twins; SIM and MOS: means), beyond the gate's default
non-inferiority margins (``bench.gate.thresholds``: WER 0.5 points, SIM 0.01, MOS 0.1),
tested on the twins' differences. One test, always the same one.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.signed_rank import signed_rank_p_two_sided


@dataclass(frozen=True)
class StepChange:
    """``change``: for RTF the median over twins of after/before (> 1 slower), for quality
    the difference after - before over twins; ``p_value`` two-sided; ``n_pairs`` twins
    compared; ``step`` "slower"/"faster" (speed), "worse"/"better" (quality) or "" (no
    step); ``metric`` the figure (a :data:`STEP_RULES` name)."""

    change: float
    p_value: float
    n_pairs: int
    step: str
    metric: str = "rtf"

    @property
    def ratio(self) -> float:
        """The speed rule's name for ``change``."""
        return self.change


NO_PAIRS = StepChange(math.nan, math.nan, 0, "")


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


def step_changes(before: Figures, after: Figures, *, factor: float = 1.1,
                 alpha: float = 0.05, rules: Sequence[StepRule] = STEP_RULES
                 ) -> list[StepChange]:
    """The step rule over two runs of one cell: one :class:`StepChange` per rule whose
    figure both runs have (``factor`` replaces the RTF rule's size). History and the
    dashboard call this and nothing else, so the rule changes in one place."""
    out = []
    for rule in rules:
        if rule.metric not in before or rule.metric not in after:
            continue
        if rule.metric == "rtf":
            change = paired_step_change(before["rtf"], after["rtf"], factor=factor, alpha=alpha)
        else:
            change = paired_difference_step(
                before[rule.metric], after[rule.metric], size=rule.size, alpha=alpha,
                higher_is_better=rule.higher_is_better,
                weights=None if rule.weight is None else before.get(rule.weight, {}))
        out.append(StepChange(change.change, change.p_value, change.n_pairs, change.step,
                              rule.metric))
    return out


def paired_step_change(before: Mapping[Hashable, float], after: Mapping[Hashable, float],
                       *, factor: float = 1.1, alpha: float = 0.05) -> StepChange:
    """Compare the figures of twin generations (same key: prompt, seed, repeat) of two
    runs. Keys present in one run only, and non-positive or missing figures, are left out."""
    keys = [k for k in before if k in after
            and _positive(before[k]) and _positive(after[k])]
    if not keys:
        return NO_PAIRS
    logs = np.log(np.array([after[k] / before[k] for k in keys], dtype=np.float64))
    ratio = float(np.exp(np.median(logs)))
    p = signed_rank_p_two_sided(logs)
    beyond = ratio > factor or ratio < 1 / factor
    step = ("slower" if ratio > 1 else "faster") if beyond and p < alpha else ""
    return StepChange(ratio, p, len(keys), step)


def paired_difference_step(before: Mapping[Hashable, float], after: Mapping[Hashable, float],
                           *, size: float, higher_is_better: bool, alpha: float = 0.05,
                           weights: Mapping[Hashable, float] | None = None) -> StepChange:
    """A quality figure's change over twins: sum(after - before) / sum(weights) (weights
    1 without ``weights``: a difference of means; WER: errors over reference words, the
    corpus WER's difference), a step when beyond ``size`` and the signed-rank test on
    the twins' differences gives p < ``alpha``: "worse" or "better"."""
    keys = [k for k in before if k in after and _finite(before[k]) and _finite(after[k])
            and (weights is None or _positive(weights.get(k, math.nan)))]
    if not keys:
        return NO_PAIRS
    diffs = np.array([after[k] - before[k] for k in keys], dtype=np.float64)
    total = float(len(keys)) if weights is None else float(sum(weights[k] for k in keys))
    change = float(diffs.sum()) / total
    p = signed_rank_p_two_sided(diffs)
    step = ""
    if abs(change) >= size and p < alpha:
        step = "better" if (change > 0) == higher_is_better else "worse"
    return StepChange(change, p, len(keys), step)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _finite(value) and value > 0


def history_table(root: str | Path, spec_name: str | None = None) -> pd.DataFrame:
    """:func:`history_frame` of every run under ``root`` (optionally of one spec) whose
    summary can be read (:func:`bench.analysis.run_summary.collect_summaries`)."""
    from bench.analysis.run_summary import collect_summaries

    return history_frame(collect_summaries(root, spec_name).summaries)


def history_frame(summaries: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Key figures of runs (their summaries, :mod:`bench.analysis.run_summary`, oldest
    first): one row per (run, cell) with ``run_id``, ``started_at``, ``git_commit``,
    ``spec_name``, ``adaptive``, the cell's figures (``cell_id``, ``cell_label``,
    ``hardware``, ``rtf_median`` with ``rtf_lo``/``rtf_hi``, ``corpus_wer`` and quality
    means with intervals, NaN unless scored and meaningful, ``failure_rate``,
    ``peak_memory``, ``random_weights``, ``n``) and ``figures`` (per-generation figures
    keyed by prompt/seed/repeat, so runs pair twin generations; ``rtfs`` is its RTF)."""
    rows: list[dict[str, Any]] = []
    for summary in summaries:
        run = {name: summary.get(name) for name in
               ("run_id", "started_at", "git_commit", "spec_name", "adaptive")}
        for cell in summary.get("cells") or []:
            row = {**run, **{k: _nan(v) for k, v in cell.items()
                             if k not in ("keys", "figures")}}
            keys = cell.get("keys") or []
            figures = {name: {k: v for k, v in zip(keys, values, strict=True) if v is not None}
                       for name, values in (cell.get("figures") or {}).items()}
            if cell.get("quality") != "ok":  # quality from random weights is no figure
                figures = {n: v for n, v in figures.items() if n in ("rtf",)}
                for name in ("corpus_wer", "sim", "utmos", "dnsmos_ovrl"):
                    for suffix in ("", "_lo", "_hi"):
                        row[f"{name}{suffix}"] = math.nan
            row["figures"] = figures
            row["rtfs"] = figures.get("rtf", {})
            rows.append(row)
    return pd.DataFrame(rows)


def _nan(value: Any) -> Any:
    return math.nan if value is None else value


def flag_step_changes(history: pd.DataFrame, factor: float = 1.1, alpha: float = 0.05
                      ) -> pd.DataFrame:
    """``history`` plus, per row, the changes against the same cell's previous run of the
    same spec that has the figure (:func:`step_changes`): ``ratio`` (median over twins of RTF now / before),
    ``p_value`` (two-sided signed-rank), ``n_pairs`` and ``step`` ("slower", "faster" or
    "") for speed, and ``changes``: every rule's :class:`StepChange` (quality too)."""
    out = history.copy()
    speed: list[StepChange] = []
    every: list[list[StepChange]] = []
    previous: dict[tuple[str, str], Figures] = {}
    for row in out.to_dict("records"):
        figures: Figures = row.get("figures") or {"rtf": row["rtfs"]}
        cell = (str(row.get("spec_name")), str(row["cell_id"]))
        before = previous.get(cell)
        changes = [] if before is None else step_changes(before, figures, factor=factor,
                                                          alpha=alpha)
        every.append(changes)
        speed.append(next((c for c in changes if c.metric == "rtf"), NO_PAIRS))
        # Each figure against the last run that has it: a random-weight night (speed
        # only) does not hide a quality step between the nights around it.
        previous[cell] = {**(before or {}), **figures}
    out["ratio"] = [c.ratio for c in speed]
    out["p_value"] = [c.p_value for c in speed]
    out["n_pairs"] = [c.n_pairs for c in speed]
    out["step"] = [c.step for c in speed]
    out["changes"] = every
    return out
