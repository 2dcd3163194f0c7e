"""The adaptive policy replayed over a full run's stored records: what it would have spent
and whether it would have reached the same headline and frontier.

A replay runs no generation. It shuffles the run's prompts (one seeded order per
replay), cuts them into the stages an adaptive sweep would run
(:func:`bench.spec.adaptive.stage_batches`), and lets :func:`bench.analysis.adaptive.decide`
choose, stage by stage, which cells get the next batch, reading the stored records of
exactly the generations it would have run. Its answer is then compared with the full
run's: the headline's choice per hardware and the main frontier's cells. Beside that
agreement stands the full run's own headline stability (:mod:`bench.analysis.stability`):
how often other draws of its prompts name the same choice. Where that is well under the
agreement asked for, the choice among the contenders turns on which prompts ran, and a
policy can only agree with the full run by running the contenders on nearly all of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.analysis.adaptive import (
    Decision,
    PolicySettings,
    Spend,
    decide,
    over_budget,
    projected_spend,
    spend,
)
from bench.analysis.evidence import Evidence, cell_summary, evidence
from bench.analysis.frontier import frontier_set
from bench.analysis.headline import pick_headline
from bench.analysis.prices import Prices
from bench.analysis.regret import (
    AS_GOOD_TOLERANCE,
    CellTruth,
    Yardstick,
    run_yardstick,
    share,
    truth_yardstick,
)
from bench.analysis.resolution import Resolution, wer_resolution
from bench.analysis.stability import DEFAULT_RESAMPLES, HeadlineStability, resampled_stability
from bench.scoring.outcomes import column
from bench.spec.adaptive import stage_batches


@dataclass(frozen=True)
class Budget:
    """An adaptive run's budget, with the prices its USD figure is read at."""

    prices: Prices
    cpu_cores: int | None = None
    max_hours: float | None = None
    max_usd: float | None = None


@dataclass
class Simulation:
    """One adaptive run over stored records: the generations it ran (a mask over the
    records), each stage's decision, and why it stopped."""

    ran: np.ndarray
    decisions: list[Decision]
    stages_run: int
    stop: str


def simulate(records: pd.DataFrame, batches: Sequence[Sequence[str]], settings: PolicySettings,
             budget: Budget | None = None, ev: Evidence | None = None) -> Simulation:
    """Run the policy over ``records`` with the prompts cut into ``batches`` (``ev``:
    their :func:`evidence`, when the caller has it already)."""
    ev = ev if ev is not None else evidence(records)
    # Integer codes: a stage's mask is two lookups, not set membership over strings.
    cell_codes, cell_names = pd.factorize(column(records, "cell_id").astype(str), sort=False)
    prompt_codes, prompt_names = pd.factorize(column(records, "prompt_id").astype(str),
                                              sort=False)
    prompt_at = {p: k for k, p in enumerate(prompt_names)}
    n_prompts = sum(len(b) for b in batches)
    order = [p for b in batches for p in b]
    active = set(map(str, cell_names))
    allowed = np.zeros(len(prompt_names), dtype=bool)
    ran = np.zeros(len(records), dtype=bool)
    decisions: list[Decision] = []
    stop = "every prompt run"

    def running(cells: set[str], prompts: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        on = np.asarray([str(c) in cells for c in cell_names], dtype=bool)
        return np.asarray(on[cell_codes] & prompts[prompt_codes], dtype=bool)

    for stage, batch in enumerate(batches):
        allowed[[prompt_at[p] for p in batch if p in prompt_at]] = True
        ran |= running(active, allowed)
        decision = decide(ev.subset(ran), settings, n_prompts, order, with_choices=False)
        decisions.append(decision)
        active = decision.active
        if not active:
            stop = "decided"
            return Simulation(ran, decisions, stage + 1, stop)
        if stage + 1 < len(batches) and budget is not None:
            next_allowed = allowed.copy()
            next_allowed[[prompt_at[p] for p in batches[stage + 1] if p in prompt_at]] = True
            todo = running(active, next_allowed) & ~ran
            cells = np.asarray(cell_names)[cell_codes]
            counts = {str(c): int(n) for c, n in pd.Series(cells[todo]).value_counts().items()}
            why = over_budget(spend(records[ran], budget.prices, budget.cpu_cores),
                              projected_spend(records[ran], counts, budget.prices,
                                              budget.cpu_cores),
                              budget.max_hours, budget.max_usd)
            if why is not None:
                return Simulation(ran, decisions, stage + 1, f"budget: {why}")
    return Simulation(ran, decisions, len(batches), stop)


@dataclass
class ReplaySummary:
    """N replays of one run, against the full run's answer and, for a constructed run,
    against its truth (:mod:`bench.analysis.regret`)."""

    n_replays: int
    n_generations: int
    n_prompts: int
    first_batch: int
    batch: int
    confidence: float
    speed_only: bool
    full_headline: dict[str, str]
    full_frontier: set[str]
    goal: str = "headline"
    full_stability: dict[str, HeadlineStability] = field(default_factory=dict)
    full_frontier_stability: float = math.nan
    fractions: list[float] = field(default_factory=list)  # of generations
    compute_fractions: list[float] = field(default_factory=list)  # of compute seconds
    choices: list[dict[str, str]] = field(default_factory=list)
    as_good: list[dict[str, bool]] = field(default_factory=list)  # against the full run
    as_good_truth: list[dict[str, bool]] = field(default_factory=list)
    full_as_good_truth: dict[str, bool] = field(default_factory=dict)
    resamples_as_good_truth: dict[str, float] = field(default_factory=dict)
    frontier_same: list[bool] = field(default_factory=list)
    stops: list[str] = field(default_factory=list)
    seconds: float = math.nan  # wall time of the replays
    resolution: dict[str, Resolution] = field(default_factory=dict)  # of the full run

    @property
    def headline_same(self) -> list[bool]:
        return [c == self.full_headline for c in self.choices]

    def shares(self, verdicts: list[dict[str, bool]]) -> dict[str, float]:
        """hardware -> share of replays whose choice there is as good."""
        return {hw: share([v.get(hw, False) for v in verdicts]) for hw in self.full_headline}

    def to_json(self) -> dict[str, Any]:
        """What ``adaptive-replay --json`` prints."""
        comp = np.asarray(self.compute_fractions, dtype=np.float64)
        out: dict[str, Any] = {
            "replays": self.n_replays, "seconds": self.seconds,
            "generations": self.n_generations, "prompts": self.n_prompts,
            "first_batch": self.first_batch, "batch": self.batch,
            "confidence": self.confidence, "goal": self.goal,
            "compute_spent_mean": float(comp.mean()),
            "compute_spent_p90": float(np.quantile(comp, 0.9)),
            "generations_spent_mean": float(np.mean(self.fractions)),
            "full_choices": self.full_headline, "choices": self.choices,
            "as_good": self.shares(self.as_good),
            "headline_same": share(self.headline_same),
            "frontier_same": share(self.frontier_same),
            "full_stability": {hw: st.same for hw, st in self.full_stability.items()},
            "resolution_points": {hw: r.half_width * 100 for hw, r in self.resolution.items()},
            "stops": dict(pd.Series(self.stops).value_counts().astype(int)),
        }
        if self.as_good_truth:
            out["as_good_truth"] = self.shares(self.as_good_truth)
            out["full_as_good_truth"] = self.full_as_good_truth
            out["resamples_as_good_truth"] = self.resamples_as_good_truth
        return out

    def lines(self) -> list[str]:
        """The summary in words (what the command prints)."""
        def text(flags: list[bool]) -> str:
            return f"{sum(flags)}/{len(flags)} = {np.mean(flags):.1%}" if flags else "n/a"

        def per_hw(shares: Mapping[str, float]) -> str:
            return ", ".join(f"{hw} {v:.0%}" for hw, v in shares.items())

        frac = np.asarray(self.fractions)
        comp = np.asarray(self.compute_fractions)
        mode = ("speed alone (quality not meaningful or not scored)" if self.speed_only
                else "speed and quality")
        out = [
            f"replays: {self.n_replays} (prompt order reshuffled per replay); run: "
            f"{self.n_generations} generations over {self.n_prompts} prompts",
            f"policy: first batch {self.first_batch} prompts, then {self.batch} per stage, "
            f"{self.confidence:.0%} anytime-valid intervals, goal {self.goal}, decided on {mode}",
            f"(a) compute seconds spent: mean {comp.mean():.1%}, p90 "
            f"{np.quantile(comp, 0.9):.1%}; generations: mean {frac.mean():.1%}, range "
            f"{frac.min():.1%}-{frac.max():.1%}",
            f"(b) choice as good as the full run's (within its WER budget and "
            f"{AS_GOOD_TOLERANCE:.0%} of its choice's RTF): {per_hw(self.shares(self.as_good))}",
        ]
        if self.as_good_truth:
            out += [
                f"(t) choice as good by the truth (true WER within the budget, true RTF within "
                f"{AS_GOOD_TOLERANCE:.0%} of the truly best): "
                f"{per_hw(self.shares(self.as_good_truth))}",
                "(t') for context, by the truth: the full run's own choice "
                + ", ".join(f"{hw} {'as good' if ok else 'NOT as good'}"
                            for hw, ok in self.full_as_good_truth.items())
                + f"; its prompt resamples' choices {per_hw(self.resamples_as_good_truth)}",
            ]
        out += [f"(r) {hw}: {r.text()}" for hw, r in self.resolution.items()]
        out += [
            f"(c) headline exactly the full run's ({_ids(self.full_headline)}): "
            f"{text(self.headline_same)}",
            *(f"(c') how firmly the full run's prompts support its headline on {hw}: "
              f"{st.text()}" for hw, st in self.full_stability.items()),
            f"(d) frontier set same as the full run's ({len(self.full_frontier)} cells): "
            f"{text(self.frontier_same)}; the full run's own prompt resamples give the same "
            f"set in {self.full_frontier_stability:.0%} of {DEFAULT_RESAMPLES}",
        ]
        wrong = pd.Series([_ids(c) for c in self.choices if c != self.full_headline])
        if len(wrong):
            out.append("headlines that differed: " + ", ".join(
                f"{k} x{v}" for k, v in wrong.value_counts().items()))
        stops = pd.Series(self.stops).value_counts()
        out.append("stopped because: " + "; ".join(f"{n} {why}" for why, n in stops.items()))
        if self.n_prompts <= self.first_batch:
            out.append(f"note: the run has {self.n_prompts} prompts, no more than the first "
                       f"batch ({self.first_batch}): the policy can stop nothing early here")
        return out


def _ids(choices: Mapping[str, str]) -> str:
    return ", ".join(f"{hw}: {cid or 'none'}" for hw, cid in choices.items())


def replay(records: pd.DataFrame, *, first_batch: int, batch: int, settings: PolicySettings,
           n_replays: int, seed: int = 0, budget: Budget | None = None,
           truth: Mapping[str, CellTruth] | None = None) -> ReplaySummary:
    """Replay the policy ``n_replays`` times (prompt orders from seeds seed, seed+1, ...),
    judging each choice against the full run and, given ``truth``, the truth."""
    started = time.perf_counter()
    prompts = list(dict.fromkeys(column(records, "prompt_id").astype(str)))
    ev = evidence(records)
    speed_only = ev.quality != "ok"
    budget_points = settings.wer_budget_points
    baselines, full_cells, picked = pick_headline(cell_summary(ev), ev, budget_points,
                                                  settings.baseline_cell)
    full_head = {c.hardware: c.cell_id for c in picked}
    firmness = resampled_stability(ev, budget_points, settings.baseline_cell, seed=seed)
    summary = ReplaySummary(n_replays, len(records), len(prompts), first_batch, batch,
                            settings.confidence, speed_only, full_head,
                            frontier_set(full_cells, speed_only=speed_only), settings.goal,
                            firmness.headline, firmness.frontier.same_set)
    against_run = run_yardstick(full_cells, full_head, budget_points, speed_only)
    if not speed_only:
        summary.resolution = wer_resolution(ev, full_cells, {hw: b.cell_id for hw, b in
                                                             baselines.items()}, budget_points)
    against_truth: Yardstick | None = None
    if truth is not None:
        against_truth = truth_yardstick(truth, {hw: b.cell_id for hw, b in baselines.items()},
                                        budget_points, speed_only)
        summary.full_as_good_truth = {hw: against_truth.as_good(hw, c)
                                      for hw, c in full_head.items()}
        summary.resamples_as_good_truth = {
            hw: sum(sh for cid, sh in {st.choice: st.same, **st.others}.items()
                    if against_truth.as_good(hw, cid))
            for hw, st in firmness.headline.items()}
    seconds = pd.to_numeric(column(records, "t_total"), errors="coerce").to_numpy()
    total_seconds = float(np.nansum(seconds))
    for r in range(n_replays):
        batches = stage_batches(prompts, first_batch, batch, seed + r)
        sim = simulate(records, batches, settings, budget, ev)
        ran = ev.subset(sim.ran)
        _, cells, choices = pick_headline(cell_summary(ran), ran, budget_points,
                                          settings.baseline_cell,
                                          among=sim.decisions[-1].in_contention())
        head = {c.hardware: c.cell_id for c in choices}
        summary.fractions.append(float(sim.ran.mean()))
        summary.compute_fractions.append(float(np.nansum(seconds[sim.ran])) / total_seconds
                                         if total_seconds > 0 else math.nan)
        summary.choices.append(head)
        summary.as_good.append({hw: against_run.as_good(hw, c) for hw, c in head.items()})
        if against_truth is not None:
            summary.as_good_truth.append({hw: against_truth.as_good(hw, c)
                                          for hw, c in head.items()})
        if settings.goal == "frontier":
            summary.frontier_same.append(frontier_set(cells, speed_only=speed_only)
                                         == summary.full_frontier)
        summary.stops.append(sim.stop)
    summary.seconds = time.perf_counter() - started
    return summary


__all__ = ["Budget", "ReplaySummary", "Simulation", "Spend", "replay", "simulate"]
