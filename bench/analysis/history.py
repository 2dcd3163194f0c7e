"""Step changes between two runs of one cell, paired as the gate pairs them, for
``echo-bench history`` and ``echo-bench dashboard`` (:func:`step_changes`, :func:`flag_rows`).

Two runs of a spec use the same prompts, seeds and repeats, so a generation in one run has
a twin in the other: the same text, the same noise. Comparing twins removes the spread
between prompts (a short prompt's RTF can be several times a long one's), which an
unpaired test of the pooled values cannot see past: a uniform 15 % slowdown over a mix of
short and long prompts hides in that spread.

The rule is the step rule of :mod:`bench.analysis.steps`, the nightly's, asked per figure
in :data:`STEP_RULES` with its sizes (:class:`bench.analysis.steps.StepSizes`; ``factor``
replaces the speed size): a step is a change whose anytime-valid interval at 1 -
``alpha`` lies wholly beyond the size, either way (the with-replacement form: the
question is whether the sampler changed, not what two nights' draws showed). A cell that
did not change, or changed by less than the size, is flagged with chance at most
``alpha`` however often its twins are looked at as they come in. Fewer twins than a
first batch at that level (:func:`bench.spec.adaptive.min_first_batch`) flag nothing.
What this module adds is the pairing (twins aligned by key, :class:`Twins`), the figures
as run summaries name them (:data:`STEP_RULES`), and the rule's words with its sizes,
printed with every result (:func:`describe_rule`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.analysis.steps import MetricStep, StepSizes, metric_step, paired


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
    :mod:`bench.analysis.run_summary`), its ``label``, ``step_metric`` (the
    :mod:`bench.analysis.steps` metric whose rule and size it takes); ``weight`` the
    per-generation denominator of a ratio of sums (WER: reference words)."""

    metric: str
    label: str
    step_metric: str
    higher_is_better: bool
    weight: str | None = None


#: The figures history and the dashboard flag steps on, with their sizes from
#: :class:`bench.analysis.steps.StepSizes` (history's ``--factor`` replaces RTF's).
STEP_RULES: tuple[StepRule, ...] = (
    StepRule("rtf", "median RTF", "speed", higher_is_better=False),
    StepRule("wer_errors", "corpus WER", "wer", higher_is_better=False, weight="ref_words"),
    StepRule("sim", "SIM", "sim", higher_is_better=True),
    StepRule("utmos", "UTMOS", "mos", higher_is_better=True),
    StepRule("dnsmos_ovrl", "DNSMOS OVRL", "dnsmos", higher_is_better=True),
)


def describe_rule(factor: float = 1.1, alpha: float = 0.05) -> str:
    """The rule in a sentence, with its sizes, as history and the dashboard print it."""
    sizes = StepSizes(speed_factor=factor)
    quality = ", ".join(f"{r.label} {_size_text(sizes, r.step_metric)}" for r in STEP_RULES
                        if r.step_metric != "speed")
    return (f"step change = against the cell's previous run, paired over the generations "
            f"both runs made, an anytime-valid {1 - alpha:.0%} interval lying wholly beyond "
            f"x{factor:g} in RTF either way (quality: {quality}), so a cell that did not "
            f"change, or changed by less, is flagged with chance at most {alpha:g}")


def _size_text(sizes: StepSizes, metric: str) -> str:
    size = sizes.shown(metric)
    return f"{size:g} point{'' if size == 1 else 's'}" if metric == "wer" else f"{size:g}"


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
    """The step rule (:func:`bench.analysis.steps.metric_step`, at ``confidence`` 1 -
    ``alpha``, with-replacement) over two runs of one cell: one :class:`StepChange` per
    rule whose figure both runs have (``factor`` replaces the RTF rule's size). History
    and the dashboard call this and nothing else, and it asks the nightly's rule, so the
    rule changes in one place."""
    b = before if isinstance(before, Twins) else Twins.from_mappings(before)
    a = after if isinstance(after, Twins) else Twins.from_mappings(after)
    sizes = StepSizes(speed_factor=factor)
    out = []
    for rule in rules:
        if rule.metric not in b.values or rule.metric not in a.values:
            continue
        old, new, weights = b.aligned(a, rule.metric, rule.weight)
        step = metric_step(rule.step_metric, *paired(rule.step_metric, old, new, weights),
                           sizes, confidence=1.0 - alpha)
        out.append(replace(NO_PAIRS, metric=rule.metric) if step is None
                   else _change(rule, step))
    return out


def paired_step_change(before: Mapping[Hashable, float], after: Mapping[Hashable, float],
                       *, factor: float = 1.1, alpha: float = 0.05) -> StepChange:
    """Compare the RTFs of twin generations (same key: prompt, seed, repeat) of two
    runs. Keys present in one run only, and non-positive or missing figures, are left out."""
    [change] = step_changes({"rtf": before}, {"rtf": after}, factor=factor, alpha=alpha,
                            rules=STEP_RULES[:1])
    return change


def _change(rule: StepRule, step: MetricStep) -> StepChange:
    """A step of the rule as history words it: "slower"/"faster" for speed, "worse"/
    "better" for quality, and WER as a fraction (the summaries' ``corpus_wer``; the step
    rule shows points)."""
    word = ""
    if step.state == "step":
        up = step.direction == "up"  # slower, more errors, or a higher SIM/MOS
        word = (("slower" if up else "faster") if rule.step_metric == "speed"
                else "better" if up == rule.higher_is_better else "worse")
    scale = 0.01 if rule.step_metric == "wer" else 1.0
    return StepChange(step.estimate * scale, step.low * scale, step.high * scale, step.n,
                      word, rule.metric)


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
