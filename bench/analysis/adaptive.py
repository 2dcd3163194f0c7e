"""The adaptive policy: given the records so far, which cells could still change the
headline (or, with the goal "frontier", a frontier), and why each other cell can stop.

Every comparison is paired: two cells are compared on the (prompt, seed, repeat) units
both ran, summed per prompt, and the difference has an anytime-valid interval of its own
(:mod:`bench.analysis.sequential`): valid however many stages look at it, about what the
run's whole prompt set would show (the full run the adaptive run stands in for), and much
narrower than two overlapping per-cell intervals when prompts differ a lot.

* speed: the mean over units of log(RTF_j / RTF_i) with its interval, shown as a ratio
  (``x0.52 [0.49, 0.55]``: j takes 0.52 of i's compute per second of speech);
* corpus WER: the difference of the two ratios of sums (points), failed and silent
  generations counted as empty transcripts (:mod:`bench.scoring.outcomes`);
* SIM and UTMOS (the report's other frontiers): the difference of means.

With the goal "headline" (the default) a cell stops as soon as it surely cannot be the
headline's choice: out of the WER budget against the baseline, or surely no more than
the speed tolerance faster than a cell surely within it (:func:`decide`). With the goal
"frontier" it also runs while its place on a frontier is open: dominated (some cell
surely faster and no worse) or surely on it. With random weights (or an unscored run)
quality is not meaningful and the decision is on speed alone, as the headline's is.

Pure functions of a record table (:func:`bench.store.records.load_records`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.evidence import (
    FRONTIER_METRICS,
    SPEED,
    WER,
    Evidence,
    cell_summary,
    evidence,
    paired_prompt_sums,
)
from bench.analysis.headline import DEFAULT_WER_BUDGET_POINTS, choose_baselines, pick_headline
from bench.analysis.prices import Prices
from bench.analysis.sequential import AnytimeIntervals, confidence_sequence
from bench.scoring.outcomes import column, is_number, usable
from bench.scoring.stats import Interval

#: A choice within this share of the best cell's speed is as good (design.md's decision
#: rules): a contender surely not that much faster than a cell surely within the budget
#: stops, so near-ties do not run to the last prompt.
SPEED_TOLERANCE = 0.03


@dataclass(frozen=True)
class PolicySettings:
    """What a decision needs: the intervals' level, the headline's WER budget (points),
    the speed tolerance within which two choices are as good, the baseline and the goal."""

    confidence: float = 0.95
    wer_budget_points: float = DEFAULT_WER_BUDGET_POINTS
    baseline_cell: str | None = None
    goal: str = "headline"  # or "frontier" (bench.spec.adaptive.GOALS)
    speed_tolerance: float = SPEED_TOLERANCE


@dataclass(frozen=True)
class CellDecision:
    """One cell after a stage: ``active`` (run the next batch) or stopped, and why."""

    cell_id: str
    cell_label: str
    active: bool
    reason: str  # short: "dominated", "on the frontier", "out of the WER budget", ...
    detail: str  # the comparison and its intervals, in words
    by: str | None = None  # the cell that decided it (dominating, or the headline choice)
    metric: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Decision:
    """The policy's answer over one table of records."""

    cells: dict[str, CellDecision]
    choices: dict[str, str]  # hardware -> the headline's choice (empty: not asked for)
    headline_decided: dict[str, bool]
    speed_only: bool
    note: str
    #: Per hardware, the cells still in contention for the headline (running or waiting,
    #: and the anchor): an adaptive run's headline is chosen among them.
    contenders: dict[str, list[str]] = field(default_factory=dict)

    def in_contention(self) -> set[str]:
        return {c for ids in self.contenders.values() for c in ids}

    @property
    def active(self) -> set[str]:
        return {c for c, d in self.cells.items() if d.active}


# --------------------------------------------------------------------------- comparisons


class Comparisons:
    """Paired anytime-valid intervals between cells (:mod:`bench.analysis.sequential`):
    per prompt, the sum over the (seed, repeat) units both cells ran, with the prompts
    in the order the stages drew them; one cell against every other at a time, computed
    on demand and kept."""

    def __init__(self, ev: Evidence, settings: PolicySettings, n_prompts: int | None = None,
                 order: Sequence[str] | None = None) -> None:
        self.settings = settings
        self.n_prompts = n_prompts
        self.dense = ev.dense
        self.present = ev.present()
        self.col = {c: k for k, c in enumerate(self.dense.cells)}
        # Cells are compared with cells of their own hardware only: one row need not
        # carry every other GPU's columns.
        self.peers = self.dense.peers(ev.info["hardware"])
        rank = {p: k for k, p in enumerate(self.dense.prompts)}
        drawn = [rank[p] for p in dict.fromkeys(order or ()) if p in rank]
        rest = sorted(set(range(len(rank))) - set(drawn))
        self.order = np.asarray(drawn + rest, dtype=np.intp)
        self.rows: dict[tuple[str, str], AnytimeIntervals] = {}

    def diff(self, i: str, j: str, metric: str) -> Interval:
        """j minus i: for RTF the mean log ratio log(RTF_j / RTF_i) over paired units;
        for WER the corpus WER difference (fraction); for SIM/UTMOS the difference of
        means. NaN when the two share no unit with a value."""
        if (i, metric) not in self.rows and (j, metric) in self.rows:
            d = self._at(j, i, metric)  # the same sums, negated
            return Interval(-d.estimate, -d.high, -d.low)
        if (i, metric) not in self.rows:
            self.rows[(i, metric)] = self._row(i, metric)
        return self._at(i, j, metric)

    def _at(self, i: str, j: str, metric: str) -> Interval:
        row, peers = self.rows[(i, metric)], self.peers[i]
        k = int(np.searchsorted(peers, self.col[j]))
        if k >= peers.size or peers[k] != self.col[j]:
            raise KeyError(f"cells {i} and {j} ran on different hardware")
        return Interval(float(row.estimate[k]), float(row.low[k]), float(row.high[k]))

    def _row(self, cell: str, metric: str) -> AnytimeIntervals:
        """``cell`` against every cell of its hardware (in the order of ``peers``)."""
        num, den = paired_prompt_sums(self.dense, self.present, self.col[cell],
                                      self.peers[cell], metric)
        return confidence_sequence(num[self.order], den[self.order], self.n_prompts,
                                   self.settings.confidence)

    def better(self, i: str, j: str, metric: str) -> Interval:
        """j's advantage over i, lower is better for j on every metric: RTF log ratio,
        WER difference, and minus the difference for SIM/UTMOS (higher is better)."""
        d = self.diff(i, j, metric)
        if metric in FRONTIER_METRICS:
            return Interval(-d.estimate, -d.high, -d.low)
        return d


def describe(metric: str, d: Interval) -> str:
    """An interval of j - i in the metric's own words (j vs i)."""
    if metric == SPEED:
        return (f"RTF x{math.exp(d.estimate):.2f} [{math.exp(d.low):.2f}, "
                f"{math.exp(d.high):.2f}]")
    if metric == WER:
        return (f"WER {d.estimate * 100:+.2f} pts [{d.low * 100:+.2f}, "
                f"{d.high * 100:+.2f}]")
    return f"{FRONTIER_METRICS[metric]} {d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"


# --------------------------------------------------------------------------- the policy


def decide(records: pd.DataFrame | Evidence, settings: PolicySettings = PolicySettings(),
           n_prompts: int | None = None, order: Sequence[str] | None = None, *,
           with_choices: bool = True) -> Decision:
    """Which cells to run on the next batch (``Decision.active``) and why the others stop.

    Per hardware, the headline first: a cell is *in* the WER budget when the interval of
    its paired WER difference from the baseline lies under the budget, *out* when above
    it; the *anchor* is the fastest usable cell surely in. A usable cell not out is a
    *contender* unless it is surely no more than ``speed_tolerance`` faster than the
    anchor (choosing the anchor then loses at most that much). The headline is decided
    when the anchor is the only contender. Contenders run in order of speed, cheapest
    first (:func:`_headline_state`): one surely slower than a faster open contender
    waits, since that contender's verdict may settle it; the baseline runs while a
    running contender's budget is open. With the goal "frontier", a cell also runs while
    its place on a frontier (RTF vs WER, and vs SIM and UTMOS when scored) is open:
    *dominated* when some cell is surely faster and surely no worse (or surely better
    and surely no slower), *on* it when no other cell can dominate it.

    Every interval is a confidence sequence (:mod:`bench.analysis.sequential`), valid
    however many stages look at it. ``n_prompts`` is the size of the run's whole prompt
    set (the finite population the stages draw from; None: prompts at large) and
    ``order`` the order the stages draw them in (default: as they first appear).
    ``with_choices``: also name each hardware's headline choice on these records
    (``Decision.choices``, for the log; a replay skips it and picks once at the end).

    A cell whose figures stop others (a dominator, the anchor) keeps running until it has
    all ``n_prompts`` prompts: an interval over a few prompts cannot see a rare failure
    those prompts happen to miss, and a cell that only looked good would otherwise stop
    the right answer for good. The baseline runs only while a running contender's budget
    is open: its WER is a reference, and the headline holds each cell to it on the units
    both ran (:data:`bench.analysis.evidence.PAIRED_CELL_WER`). Decisions are made
    afresh from all records every stage, so when the fuller figures undo a reason, the
    cells it stopped run again (and catch up on the prompts they missed).
    """
    ev = records if isinstance(records, Evidence) else evidence(records)
    cells = cell_summary(ev)
    units = ev.units
    comp = Comparisons(ev, settings, n_prompts, order)
    speed_only = ev.quality != "ok"
    metrics: list[str] = []
    if not speed_only:
        metrics = [WER] + [m for m in FRONTIER_METRICS if np.isfinite(units[m]).any()]
        note = (f"decided on speed and {', '.join(metrics)} at "
                f"{settings.confidence:.0%} confidence")
    else:
        why = ("random weights" if ev.quality == "not meaningful" else "quality not scored")
        note = (f"decided on speed alone ({why}: quality not meaningful), as the headline "
                f"is, at {settings.confidence:.0%} confidence")
    note += (f" (anytime-valid intervals about all {n_prompts} prompts)" if n_prompts
             else " (anytime-valid intervals)")
    baselines = choose_baselines(cells, settings.baseline_cell)
    contenders: dict[str, list[str]] = {}
    out: dict[str, CellDecision] = {}
    decided: dict[str, bool] = {}
    seen = comp.present.any(axis=1).sum(axis=0)  # prompts each cell ran
    columns = [cells[k].tolist() for k in _POLICY_READS]  # plain lists: cheap to read
    every: dict[str, dict[str, Any]] = {
        str(c): dict(zip(_POLICY_READS, values, strict=True))
        for c, *values in zip(cells.index, *columns, strict=True)}
    fastest_first = cells.sort_values("rtf_median", kind="stable")
    by_hardware: dict[str, list[str]] = {}
    for cid, hw in zip(fastest_first.index, fastest_first["hardware"], strict=True):
        by_hardware.setdefault(str(hw), []).append(str(cid))
    for hardware, ids in by_hardware.items():
        rows = {c: every[c] for c in ids}
        base = baselines[str(hardware)].cell_id if str(hardware) in baselines else ids[0]
        head = _headline_state(ids, rows, base, comp, speed_only, settings)
        decided[str(hardware)] = head.decided
        contenders[hardware] = head.contenders
        for cid in ids:
            out[cid] = (_headline_decision(cid, rows, comp, head)
                        if settings.goal == "headline"
                        else _cell_decision(cid, ids, rows, comp, metrics, head))
        if n_prompts is not None:
            deciders = {d.by for c, d in out.items() if c in rows and not d.active and d.by
                        and d.reason != "waiting"}
            deciders |= {head.anchor} if head.anchor else set()
            for cid in deciders & set(rows):
                d = out[cid]
                if not d.active and int(rows[cid].get("n_ok") or 0) and int(
                        seen[comp.col[cid]]) < n_prompts:
                    out[cid] = replace(d, active=True, reason=f"{d.reason}; confirming",
                                       detail=f"other cells stop on its figures, so it runs "
                                              f"every prompt ({d.detail})")
    choices: dict[str, str] = {}
    if with_choices:
        _, _, picked = pick_headline(cells, ev, settings.wer_budget_points,
                                     settings.baseline_cell,
                                     among={c for ids in contenders.values() for c in ids})
        choices = {c.hardware: c.cell_id for c in picked}
    return Decision(cells=out, choices=choices, headline_decided=decided,
                    speed_only=speed_only, note=note, contenders=contenders)


#: The cell-summary columns the policy's per-cell rules read.
_POLICY_READS = ("cell_label", "n_ok", "n_failed", "n_nan", "n_silent")


@dataclass
class _Headline:
    decided: bool
    anchor: str | None  # the fastest usable cell surely within the budget
    needed: set[str]  # cells that run now for the headline (and the baseline if needed)
    contenders: list[str]  # could still be the choice (running or waiting), fastest first
    waiting: dict[str, str]  # contender -> the faster open contender it waits on
    budget: dict[str, tuple[str, Interval]]  # cell -> ("in" | "out" | "open", WER vs base)
    base: str
    speed_only: bool


def _headline_state(ids: Sequence[str], rows: Mapping[str, Mapping[str, Any]], base: str,
                    comp: Comparisons, speed_only: bool,
                    settings: PolicySettings) -> _Headline:
    """The headline's state on one hardware (``ids`` fastest first; see :func:`decide`)."""
    limit = settings.wer_budget_points / 100.0
    slack = -math.log1p(settings.speed_tolerance)
    usable_ids = [c for c in ids if usable(rows[c])]
    budget: dict[str, tuple[str, Interval]] = {}
    for cid in usable_ids:
        if speed_only or cid == base:
            budget[cid] = ("in", Interval(0.0, 0.0, 0.0))
            continue
        d = comp.diff(base, cid, WER)
        state = ("in" if d.high <= limit else "out" if d.low > limit else "open")
        budget[cid] = (state, d)
    anchors = [c for c in usable_ids if budget[c][0] == "in"]
    anchor = anchors[0] if anchors else None
    contenders = []
    for cid in usable_ids:
        if budget[cid][0] == "out":
            continue
        if anchor is not None and cid != anchor and comp.diff(anchor, cid, SPEED).low > slack:
            continue  # surely no more than the tolerance faster than a cell surely in
        contenders.append(cid)
    is_decided = anchor is not None and contenders == [anchor]
    # Cheapest first: a contender surely slower than a faster one whose budget is open but
    # which looks within it (point estimate) waits for that verdict: in, it stops; out, it
    # runs on and catches up. Waiting steers where compute goes, never what is decided.
    waiting: dict[str, str] = {}
    likely: list[str] = []
    for cid in contenders:
        lead = next((j for j in likely if comp.diff(j, cid, SPEED).low > 0), None)
        if lead is not None:
            waiting[cid] = lead
        elif budget[cid][0] == "open" and budget[cid][1].estimate <= limit:
            likely.append(cid)
    needed = set() if is_decided else {c for c in contenders if c not in waiting}
    if any(budget[c][0] == "open" for c in needed):
        needed.add(base)  # the baseline's WER sets the limit the open ones are held to
    return _Headline(is_decided, anchor, needed, contenders, waiting, budget, base, speed_only)


def _dominates(comp: Comparisons, i: str, j: str, metric: str | None) -> bool:
    """j surely dominates i (on speed alone when ``metric`` is None)."""
    s = comp.better(i, j, SPEED)
    if metric is None:
        return s.high < 0
    m = comp.better(i, j, metric)
    return (s.high < 0 and m.high <= 0) or (s.high <= 0 and m.high < 0)


def _cannot_dominate(comp: Comparisons, i: str, j: str, metric: str | None) -> bool:
    """j surely does not dominate i: surely slower, or surely worse on the metric."""
    if comp.better(i, j, SPEED).low > 0:
        return True
    return metric is not None and comp.better(i, j, metric).low > 0


def _cell_decision(cid: str, ids: Sequence[str], rows: Mapping[str, Mapping[str, Any]],
                   comp: Comparisons, metrics: Sequence[str], head: _Headline) -> CellDecision:
    label = str(rows[cid].get("cell_label") or cid)
    if not int(rows[cid].get("n_ok") or 0):
        return CellDecision(cid, label, False, "every generation failed",
                            "no generation produced audio; it cannot be on a frontier or chosen")
    others = [j for j in ids if j != cid]
    dominated: tuple[str, str | None] | None = None
    open_against: tuple[str, str | None] | None = None
    on_all = True
    axes: list[str | None] = list(metrics) or [None]
    for metric in axes:
        by = next((j for j in others if _dominates(comp, cid, j, metric)), None)
        if by is not None:
            dominated = dominated or (by, metric)
            continue
        blocker = next((j for j in others if not _cannot_dominate(comp, cid, j, metric)), None)
        if blocker is not None:
            on_all = False
            open_against = open_against or (blocker, metric)
    if cid in head.needed:
        return CellDecision(cid, label, True, "could be the headline's choice",
                            _headline_detail(cid, comp, head))
    if open_against is not None:
        j, axis = open_against
        return CellDecision(cid, label, True, "frontier place open",
                            _pair_detail(comp, cid, j, axis, "could be dominated by"),
                            by=j, metric=axis or SPEED)
    if dominated is not None:
        j, axis = dominated
        return CellDecision(cid, label, False, "dominated",
                            _pair_detail(comp, cid, j, axis, "dominated by"),
                            by=j, metric=axis or SPEED)
    if on_all and open_against is None:
        reason, detail = "on the frontier", "no other cell can dominate it"
    else:
        reason, detail = "decided", ""
    why = _not_the_choice(cid, comp, head)
    if why is not None:
        detail += "; " + why[1]
    return CellDecision(cid, label, False, reason, detail.lstrip("; "), by=head.anchor)


def _not_the_choice(cid: str, comp: Comparisons, head: _Headline) -> tuple[str, str] | None:
    """Why ``cid`` is settled for the headline, short and in words: over the WER budget,
    unusable, slower than the choice, or the choice itself; None while it is open."""
    state, wer = head.budget.get(cid, ("unusable", Interval(math.nan, math.nan, math.nan)))
    if state == "out":
        return ("out of the WER budget",
                f"out of the WER budget: {describe(WER, wer)} vs baseline {head.base}")
    if state == "unusable":
        return ("not the headline's choice",
                "has failed, NaN or silent generations: never the headline's choice")
    if cid in head.waiting:
        lead = head.waiting[cid]
        return ("waiting", f"waits on {lead}, faster, likely within the WER budget: "
                           f"{describe(SPEED, comp.diff(lead, cid, SPEED))}")
    if head.anchor is not None and cid != head.anchor:
        return ("slower than the choice",
                f"no faster than {head.anchor} (surely within the budget) by more than the "
                f"speed tolerance: {describe(SPEED, comp.diff(head.anchor, cid, SPEED))}")
    if cid == head.anchor:
        return "the headline's choice", "the headline's choice, decided"
    return None


def _headline_decision(cid: str, rows: Mapping[str, Mapping[str, Any]], comp: Comparisons,
                       head: _Headline) -> CellDecision:
    """The goal "headline": a cell runs on while it could still be the headline's choice
    (or is the baseline the open budgets are held to), whatever its frontier place."""
    label = str(rows[cid].get("cell_label") or cid)
    if cid in head.needed:
        return CellDecision(cid, label, True, "could be the headline's choice",
                            _headline_detail(cid, comp, head))
    if not int(rows[cid].get("n_ok") or 0):
        reason, detail = "every generation failed", "no generation produced audio"
    else:
        # Not needed means settled: _headline_state keeps every open cell in ``needed``.
        reason, detail = _not_the_choice(cid, comp, head) or ("decided", "")
    by = head.waiting.get(cid, head.anchor)
    return CellDecision(cid, label, False, reason, detail, by=by,
                        metric=WER if reason == "out of the WER budget" else SPEED)


def _pair_detail(comp: Comparisons, i: str, j: str, metric: str | None, words: str) -> str:
    parts = [describe(SPEED, comp.diff(i, j, SPEED))]
    if metric is not None:
        parts.append(describe(metric, comp.diff(i, j, metric)))
    return f"{words} {j}: {', '.join(parts)} ({j} vs this cell)"


def _headline_detail(cid: str, comp: Comparisons, head: _Headline) -> str:
    state, wer = head.budget[cid]
    parts = [] if head.speed_only else [f"WER budget {state}" + (f" ({describe(WER, wer)} vs baseline {head.base})"
                                      if cid != head.base and math.isfinite(wer.low) else "")]
    if head.anchor is not None and cid != head.anchor:
        parts.append(f"speed vs {head.anchor}: {describe(SPEED, comp.diff(head.anchor, cid, SPEED))}")
    return "; ".join(parts) or "the fastest usable cell so far"


# --------------------------------------------------------------------------- budget


@dataclass(frozen=True)
class Spend:
    """Compute spent by a set of generations: hours of the device's time and money at
    the price table's rates (``usd`` NaN when a cell's hardware has no price)."""

    hours: float
    usd: float


def spend(records: pd.DataFrame, prices: Prices, cpu_cores: int | None) -> Spend:
    """Sum of ``t_total`` (what the report's cost follows), priced per cell's hardware."""
    seconds = 0.0
    usd = 0.0
    for r in records.to_dict("records"):
        value: Any = r.get("t_total")
        if not is_number(value):
            continue
        t = float(value)
        seconds += t
        gpu, device = r.get("gpu"), r.get("device_name")
        price, _ = prices.per_second(gpu if isinstance(gpu, str) else None,
                                     device if isinstance(device, str) else None, cpu_cores)
        usd += math.nan if price is None else price * t
    return Spend(hours=seconds / 3600.0, usd=usd)


def over_budget(spent: Spend, projected: Spend, max_hours: float | None,
                max_usd: float | None) -> str | None:
    """Why running ``projected`` more would break the budget (None: it fits)."""
    hours = spent.hours + projected.hours
    if max_hours is not None and hours > max_hours:
        return (f"the next stage would bring compute to {hours:.3f} h, over "
                f"max_gpu_hours = {max_hours:g}")
    usd = spent.usd + projected.usd
    if max_usd is not None and (math.isnan(usd) or usd > max_usd):
        shown = "an unpriced amount" if math.isnan(usd) else f"{usd:.4f} USD"
        return f"the next stage would bring the cost to {shown}, over max_usd = {max_usd:g}"
    return None


def projected_spend(records: pd.DataFrame, generations: Mapping[str, int], prices: Prices,
                    cpu_cores: int | None) -> Spend:
    """What ``generations`` more (cell id -> count) would cost at each cell's mean
    measured time per generation so far."""
    hours = 0.0
    usd = 0.0
    for cid, count in generations.items():
        rows = records[column(records, "cell_id") == cid]
        if not len(rows) or not count:
            continue
        one = spend(rows, prices, cpu_cores)
        hours += one.hours / len(rows) * count
        usd += one.usd / len(rows) * count
    return Spend(hours, usd)
