"""The adaptive policy: given the records so far, which cells could still change the
frontier or the headline, and why each other cell can stop.

Every comparison is paired: two cells are compared on the (prompt, seed, repeat) units
both ran, and one bootstrap resamples the shared prompts for both
(:mod:`bench.scoring.stats`), so the difference between them has an interval of its own,
much narrower than two overlapping per-cell intervals when prompts differ a lot. The
intervals are about what the run's whole prompt set would show (the full run the adaptive
run stands in for), expanded for few prompts (:meth:`Comparisons._about`).

* speed: the mean over units of log(RTF_j / RTF_i) with its interval, shown as a ratio
  (``x0.52 [0.49, 0.55]``: j takes 0.52 of i's compute per second of speech);
* corpus WER: the difference of the two ratios of sums (points), failed and silent
  generations counted as empty transcripts (:mod:`bench.scoring.outcomes`);
* SIM and UTMOS (the report's other frontiers): the difference of means.

A cell stops when, at the spec's confidence, it is off every frontier (some cell is
faster and no worse on the metric: "dominated by j on WER") or surely on it, and it
cannot be the headline's choice (out of the WER budget against the baseline, or slower
than a cell surely within it). With the goal "headline" only the second half counts:
near-tied cells whose frontier place no number of prompts would settle stop as soon as
they surely cannot be the choice. With random weights (or an unscored run) quality is not
meaningful and the decision is on speed alone, as the headline's is.

Pure functions of a record table (:func:`bench.store.records.load_records`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.analysis.evidence import (
    FRONTIER_METRICS,
    Evidence,
    add_paired_baseline_wer,
    cell_summary,
    evidence,
)
from bench.analysis.frontier import frontier_set
from bench.analysis.headline import (
    DEFAULT_WER_BUDGET_POINTS,
    baseline_of,
    choice_ids,
    choose_baselines,
)
from bench.analysis.prices import Prices
from bench.scoring.outcomes import column, is_number, usable
from bench.scoring.stats import (
    Interval,
    bootstrap_ratio_replicates,
    cluster_codes,
    percentile_interval,
    ratio_of_sums,
    resample_counts,
)

SPEED = "RTF"
WER = "WER"


@dataclass(frozen=True)
class PolicySettings:
    """What a decision needs: the intervals' level, the headline's WER budget (points)
    and the bootstrap's size and seed (fixed, so a resumed run decides the same)."""

    confidence: float = 0.95
    wer_budget_points: float = DEFAULT_WER_BUDGET_POINTS
    n_boot: int = 1000
    seed: int = 0
    baseline_cell: str | None = None
    goal: str = "frontier"  # or "headline" (bench.spec.adaptive.GOALS)


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
    choices: dict[str, str]  # hardware -> the headline's choice (point estimate)
    headline_decided: dict[str, bool]
    speed_only: bool
    note: str
    frontier: set[str] = field(default_factory=set)  # the main frontier's point estimate

    @property
    def active(self) -> set[str]:
        return {c for c, d in self.cells.items() if d.active}


# --------------------------------------------------------------------------- comparisons


class Comparisons:
    """Paired intervals between cells, on one shared set of bootstrap draws over the
    prompts (so every comparison is paired with every other), computed on demand."""

    def __init__(self, units: pd.DataFrame, settings: PolicySettings,
                 n_prompts: int | None = None) -> None:
        self.settings = settings
        self.n_prompts = n_prompts
        self.cols = {str(c): k for k, c in enumerate(dict.fromkeys(units["cell_id"]))}
        table = {name: units.pivot_table(index="unit", columns="cell_id", values=name,
                                         aggfunc="first", dropna=False)
                 .reindex(columns=list(self.cols)).to_numpy(dtype=np.float64)
                 for name in ("rtf", "wer_num", "wer_den", *FRONTIER_METRICS)}
        self.table = table
        unit_prompt = units.drop_duplicates("unit").set_index("unit")["prompt_id"]
        index = units.pivot_table(index="unit", columns="cell_id", values="rtf",
                                  aggfunc="first", dropna=False).index
        self.codes = cluster_codes(list(unit_prompt.reindex(index)), len(index))
        self.clusters: list[int] = [int(c) for c in self.codes]
        n_clusters = int(self.codes.max()) + 1 if len(index) else 1
        self.counts = resample_counts(n_clusters, settings.n_boot, settings.seed)
        self.memo: dict[tuple[str, str, str], Interval] = {}

    def diff(self, i: str, j: str, metric: str) -> Interval:
        """j minus i: for RTF the mean log ratio log(RTF_j / RTF_i); for WER the corpus
        WER difference (fraction); for SIM/UTMOS the difference of means. NaN bounds
        when the two share no unit with a value."""
        if (j, i, metric) in self.memo:  # the same draws: j - i is exactly -(i - j)
            d = self.memo[(j, i, metric)]
            return Interval(-d.estimate, -d.high, -d.low)
        if (i, j, metric) not in self.memo:
            self.memo[(i, j, metric)] = self._diff(self.cols[i], self.cols[j], metric)
        return self.memo[(i, j, metric)]

    def _diff(self, i: int, j: int, metric: str) -> Interval:
        nan = Interval(math.nan, math.nan, math.nan)
        level = self.settings.confidence
        if metric == SPEED:
            rtf = self.table["rtf"]
            a, b = rtf[:, i], rtf[:, j]
            ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
            if not ok.any():
                return nan
            x = np.where(ok, np.log(np.where(ok, b, 1.0)) - np.log(np.where(ok, a, 1.0)), 0.0)
            den = ok.astype(np.float64)
            reps = bootstrap_ratio_replicates(x, den, self.clusters, counts=self.counts)
            low, high = percentile_interval(reps, level)
            return self._about(Interval(float(ratio_of_sums(x, den)), low, high), ok)
        if metric == WER:
            num = self.table["wer_num"][:, [i, j]]
            den = self.table["wer_den"][:, [i, j]]
        else:
            num = self.table[metric][:, [i, j]]
            den = np.isfinite(num).astype(np.float64)
        ok = np.isfinite(num).all(axis=1) & np.isfinite(den).all(axis=1)
        if not ok.any():
            return nan
        num = np.where(ok[:, None], num, 0.0)
        den = np.where(ok[:, None], den, 0.0)
        reps = bootstrap_ratio_replicates(num, den, self.clusters, counts=self.counts)
        point = ratio_of_sums(num, den)
        low, high = percentile_interval(reps[:, 1] - reps[:, 0], level)
        return self._about(Interval(float(point[1] - point[0]), low, high), ok)

    def _about(self, d: Interval, ok: npt.NDArray[np.bool_]) -> Interval:
        """The bootstrap interval rescaled about its estimate by two factors of the n
        prompts it rests on.

        * Expanded for few prompts: a percentile bootstrap over n prompts is too narrow
          for small n (it resamples with the plug-in variance and normal-like tails), so
          its half-widths grow by sqrt(n / (n - 1)) * t(n - 1) / z, the Student-t quantile
          over the normal one at the interval's level (the "expanded percentile" interval).
        * About the run's whole prompt set, when its size N is known: stages draw prompts
          without replacement from that set, so only the unseen part is uncertain and the
          half-widths shrink by the finite-population correction sqrt(1 - n / N), to the
          point itself once both cells ran every prompt. The question a stage asks is what
          the full run would show, the answer the adaptive run stands in for.
        """
        n = int(np.unique(self.codes[ok]).size)
        if self.n_prompts and n >= self.n_prompts:
            return Interval(d.estimate, d.estimate, d.estimate)
        if n < 2:
            return Interval(d.estimate, -math.inf, math.inf)
        scale = _expansion(n, self.settings.confidence)
        if self.n_prompts:
            scale *= math.sqrt(max(0.0, 1.0 - n / self.n_prompts))
        return Interval(d.estimate, d.estimate - (d.estimate - d.low) * scale,
                        d.estimate + (d.high - d.estimate) * scale)

    def better(self, i: str, j: str, metric: str) -> Interval:
        """j's advantage over i, lower is better for j on every metric: RTF log ratio,
        WER difference, and minus the difference for SIM/UTMOS (higher is better)."""
        d = self.diff(i, j, metric)
        if metric in FRONTIER_METRICS:
            return Interval(-d.estimate, -d.high, -d.low)
        return d


@functools.cache
def _expansion(n: int, confidence: float) -> float:
    """sqrt(n / (n - 1)) * t(n - 1) / z at ``confidence`` (two-sided), for n >= 2."""
    from scipy import stats

    q = 0.5 + confidence / 2.0
    return math.sqrt(n / (n - 1)) * float(stats.t.ppf(q, n - 1) / stats.norm.ppf(q))


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
           n_prompts: int | None = None) -> Decision:
    """Which cells to run on the next batch (``Decision.active``) and why the others stop.

    Per hardware: a cell is *dominated* on a frontier (RTF vs WER, and vs SIM and UTMOS
    when scored) when some cell is surely faster and surely no worse, or surely better
    and surely no slower; it is *on* the frontier when every other cell is surely slower
    or surely worse. The headline is decided when one usable cell is surely within the
    WER budget of the baseline and every other usable cell not surely out of it is
    surely slower. A cell stays active while its place on a frontier is open or it could
    still be the headline's choice (and the baseline while a contender's budget is open).

    ``n_prompts`` is the size of the run's whole prompt set: given, every interval is
    about what all of it would show (a finite population); None, about the prompts'
    population at large.

    A cell whose figures stop others (a dominator, the headline's choice, the baseline
    under a WER budget) keeps running until it has all ``n_prompts`` prompts: a bootstrap
    over a few prompts cannot see a failure mode those prompts happen to miss, and a
    cell that only looked good would otherwise stop the right answer for good. Decisions
    are made afresh from all records every stage, so when the fuller figures undo a
    reason, the cells it stopped run again (and catch up on the prompts they missed).
    """
    ev = records if isinstance(records, Evidence) else evidence(records)
    cells = cell_summary(ev)
    units = ev.units
    comp = Comparisons(units, settings, n_prompts)
    speed_only = ev.quality != "ok"
    statuses = {ev.quality}
    metrics: list[str] = []
    if not speed_only:
        metrics = [WER] + [m for m in FRONTIER_METRICS if np.isfinite(units[m]).any()]
        note = (f"decided on speed and {', '.join(metrics)} at "
                f"{settings.confidence:.0%} confidence")
    else:
        why = ("random weights" if "not meaningful" in statuses else "quality not scored")
        note = (f"decided on speed alone ({why}: quality not meaningful), as the headline "
                f"is, at {settings.confidence:.0%} confidence")
    if n_prompts:
        note += f" about what all {n_prompts} prompts would show"
    baselines = choose_baselines(cells, settings.baseline_cell)
    cells = add_paired_baseline_wer(cells, units, baseline_of(cells, baselines))
    choices = choice_ids(cells, baselines, settings.wer_budget_points)
    out: dict[str, CellDecision] = {}
    decided: dict[str, bool] = {}
    for hardware, group in cells.groupby("hardware", sort=False):
        ids = [str(c) for c in group.sort_values("rtf_median", kind="stable").index]
        rows: dict[str, dict[str, Any]] = {
            str(c): {str(k): v for k, v in r.items()} for c, r in group.to_dict("index").items()}
        base = baselines[str(hardware)].cell_id if str(hardware) in baselines else ids[0]
        head = _headline_state(ids, rows, base, comp, speed_only, settings)
        decided[str(hardware)] = head.decided
        for cid in ids:
            out[cid] = (_headline_decision(cid, rows, comp, head)
                        if settings.goal == "headline"
                        else _cell_decision(cid, ids, rows, comp, metrics, head))
        if n_prompts is not None:
            deciders = {d.by for c, d in out.items() if c in rows and not d.active and d.by}
            deciders |= {head.anchor} if head.anchor else set()
            deciders |= set() if speed_only else {base}
            seen = units.groupby("cell_id")["prompt_id"].nunique()
            for cid in deciders & set(rows):
                d = out[cid]
                if not d.active and int(rows[cid].get("n_ok") or 0) and int(
                        seen.get(cid, 0)) < n_prompts:
                    out[cid] = replace(d, active=True, reason=f"{d.reason}; confirming",
                                       detail=f"other cells stop on its figures, so it runs "
                                              f"every prompt ({d.detail})")
    return Decision(cells=out, choices=choices, headline_decided=decided,
                    speed_only=speed_only, note=note,
                    frontier=frontier_set(cells, speed_only=speed_only))


@dataclass
class _Headline:
    decided: bool
    anchor: str | None  # the fastest usable cell surely within the budget
    needed: set[str]  # cells that could still be the choice (and the baseline if needed)
    budget: dict[str, tuple[str, Interval]]  # cell -> ("in" | "out" | "open", WER vs base)
    base: str
    speed_only: bool


def _headline_state(ids: Sequence[str], rows: Mapping[str, Mapping[str, Any]], base: str,
                    comp: Comparisons, speed_only: bool,
                    settings: PolicySettings) -> _Headline:
    limit = settings.wer_budget_points / 100.0
    usable_ids = [c for c in ids if usable(rows[c])]
    budget: dict[str, tuple[str, Interval]] = {}
    for cid in usable_ids:
        if speed_only or cid == base:
            budget[cid] = ("in", Interval(0.0, 0.0, 0.0))
            continue
        d = comp.diff(base, cid, WER)
        state = ("in" if d.high <= limit else "out" if d.low > limit else "open")
        budget[cid] = (state, d)
    anchors = [c for c in usable_ids if budget[c][0] == "in"]  # ids are fastest first
    anchor = anchors[0] if anchors else None
    needed = set()
    for cid in usable_ids:
        if budget[cid][0] == "out":
            continue
        if anchor is not None and cid != anchor and comp.diff(anchor, cid, SPEED).low > 0:
            continue  # surely slower than a cell surely within the budget
        needed.add(cid)
    is_decided = anchor is not None and needed == {anchor}
    if not is_decided and any(budget[c][0] == "open" for c in needed):
        needed.add(base)  # the baseline's WER sets the limit the open ones are held to
    return _Headline(is_decided, anchor, set() if is_decided else needed, budget, base,
                     speed_only)


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
    if head.anchor is not None and cid != head.anchor:
        return ("slower than the choice",
                f"slower than {head.anchor}, surely within the budget: "
                f"{describe(SPEED, comp.diff(head.anchor, cid, SPEED))}")
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
    return CellDecision(cid, label, False, reason, detail, by=head.anchor,
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


# --------------------------------------------------------------------------- the headline compared


def headline_choices(cells: pd.DataFrame, wer_budget_points: float,
                     baseline_cell: str | None = None,
                     units: pd.DataFrame | None = None) -> dict[str, str]:
    """hardware -> the headline's chosen cell id ("" when none qualifies), from a
    :func:`summarize_cells` (or :func:`cell_summary`) frame; with the generations'
    ``units`` (:class:`Evidence`), each cell's WER budget is held against the baseline's
    on the prompts that cell ran, as the report does."""
    baselines = choose_baselines(cells, baseline_cell)
    if units is not None:
        cells = add_paired_baseline_wer(cells, units, baseline_of(cells, baselines))
    return choice_ids(cells, baselines, wer_budget_points)


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


def cells_of(records: pd.DataFrame) -> list[str]:
    return [str(c) for c in dict.fromkeys(column(records, "cell_id"))]


def ids_text(ids: Iterable[str]) -> str:
    return ", ".join(sorted(ids)) or "none"
