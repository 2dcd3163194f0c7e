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
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.analysis.adaptive import (
    Decision,
    PolicySettings,
    Spend,
    decide,
    headline_choices,
    over_budget,
    projected_spend,
    spend,
)
from bench.analysis.cells import summarize_cells
from bench.analysis.evidence import Evidence, cell_summary, evidence
from bench.analysis.frontier import frontier_set
from bench.analysis.prices import Prices
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
    cells = np.asarray(column(records, "cell_id").astype(str))
    prompts = np.asarray(column(records, "prompt_id").astype(str))
    all_cells = list(dict.fromkeys(cells))
    n_prompts = sum(len(b) for b in batches)
    active = set(all_cells)
    allowed: set[str] = set()
    ran = np.zeros(len(records), dtype=bool)
    decisions: list[Decision] = []
    stop = "every prompt run"
    for stage, batch in enumerate(batches):
        allowed |= set(batch)
        ran |= np.isin(cells, list(active)) & np.isin(prompts, list(allowed))
        decision = decide(ev.subset(ran), settings, n_prompts)
        decisions.append(decision)
        active = decision.active
        if not active:
            stop = "decided"
            return Simulation(ran, decisions, stage + 1, stop)
        if stage + 1 < len(batches) and budget is not None:
            next_allowed = allowed | set(batches[stage + 1])
            todo = np.isin(cells, list(active)) & np.isin(prompts, list(next_allowed)) & ~ran
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
    """N replays of one run, against the full run's answer."""

    n_replays: int
    n_generations: int
    n_prompts: int
    first_batch: int
    batch: int
    confidence: float
    speed_only: bool
    full_headline: dict[str, str]
    full_frontier: set[str]
    goal: str = "frontier"
    full_stability: dict[str, HeadlineStability] = field(default_factory=dict)
    full_frontier_stability: float = math.nan
    fractions: list[float] = field(default_factory=list)  # of generations
    compute_fractions: list[float] = field(default_factory=list)  # of compute seconds
    headline_same: list[bool] = field(default_factory=list)
    frontier_same: list[bool] = field(default_factory=list)
    stops: list[str] = field(default_factory=list)
    wrong_headlines: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The summary in words (what the command prints)."""
        def share(flags: list[bool]) -> str:
            return f"{sum(flags)}/{len(flags)} = {np.mean(flags):.1%}" if flags else "n/a"

        frac = np.asarray(self.fractions)
        comp = np.asarray(self.compute_fractions)
        mode = ("speed alone (quality not meaningful or not scored)" if self.speed_only
                else "speed and quality")
        out = [
            f"replays: {self.n_replays} (prompt order reshuffled per replay); run: "
            f"{self.n_generations} generations over {self.n_prompts} prompts",
            f"policy: first batch {self.first_batch} prompts, then {self.batch} per stage, "
            f"{self.confidence:.0%} confidence, goal {self.goal}, decided on {mode}",
            f"(a) generations spent: mean {frac.mean():.1%}, median {np.median(frac):.1%}, "
            f"range {frac.min():.1%}-{frac.max():.1%}; compute seconds spent: mean "
            f"{comp.mean():.1%}",
            f"(b) headline same as the full run's ({_ids(self.full_headline)}): "
            f"{share(self.headline_same)}",
            *(f"(b') how firmly the full run's prompts support its headline on {hw}: "
              f"{st.text()}" for hw, st in self.full_stability.items()),
            f"(c) frontier set same as the full run's ({len(self.full_frontier)} cells: "
            f"{', '.join(sorted(self.full_frontier))}): {share(self.frontier_same)}",
            f"(c') how firmly the full run's prompts support its frontier set: the same set "
            f"in {self.full_frontier_stability:.0%} of {DEFAULT_RESAMPLES} prompt resamples",
        ]
        if self.wrong_headlines:
            out.append("headlines that differed: " + ", ".join(
                f"{k} x{v}" for k, v in sorted(self.wrong_headlines.items())))
        stops = pd.Series(self.stops).value_counts()
        out.append("stopped because: " + "; ".join(f"{n} {why}" for why, n in stops.items()))
        if self.n_prompts <= self.first_batch:
            out.append(f"note: the run has {self.n_prompts} prompts, no more than the first "
                       f"batch ({self.first_batch}): the policy can stop nothing early here")
        return out


def _ids(choices: dict[str, str]) -> str:
    return ", ".join(f"{hw}: {cid or 'none'}" for hw, cid in choices.items())


def replay(records: pd.DataFrame, *, first_batch: int, batch: int, settings: PolicySettings,
           n_replays: int, seed: int = 0, budget: Budget | None = None) -> ReplaySummary:
    """Replay the policy ``n_replays`` times (prompt orders from seeds seed, seed+1, ...)."""
    prompts = list(dict.fromkeys(column(records, "prompt_id").astype(str)))
    # The full run's answer from the report's own summary; the replays' from the
    # policy's lighter one (the same figures, checked by a test), thousands of times.
    full_cells = summarize_cells(records, n_boot=1)
    ev = evidence(records)
    speed_only = ev.quality != "ok"
    firmness = resampled_stability(ev, settings.wer_budget_points, settings.baseline_cell, seed=seed)
    full_head = headline_choices(full_cells, settings.wer_budget_points, settings.baseline_cell,
                                 ev.units)
    full_front = frontier_set(full_cells, speed_only=speed_only)
    summary = ReplaySummary(n_replays, len(records), len(prompts), first_batch, batch,
                            settings.confidence, speed_only, full_head, full_front,
                            settings.goal,
                            firmness.headline, firmness.frontier.same_set)
    total_seconds = float(pd.to_numeric(column(records, "t_total"), errors="coerce").sum())
    for r in range(n_replays):
        batches = stage_batches(prompts, first_batch, batch, seed + r)
        sim = simulate(records, batches, settings, budget, ev)
        subset = records[sim.ran]
        ran = ev.subset(sim.ran)
        cells = cell_summary(ran)
        summary.fractions.append(float(sim.ran.mean()))
        seconds = float(pd.to_numeric(column(subset, "t_total"), errors="coerce").sum())
        summary.compute_fractions.append(seconds / total_seconds if total_seconds > 0
                                         else math.nan)
        head = headline_choices(cells, settings.wer_budget_points, settings.baseline_cell,
                                ran.units)
        summary.headline_same.append(head == full_head)
        if head != full_head:
            key = _ids(head)
            summary.wrong_headlines[key] = summary.wrong_headlines.get(key, 0) + 1
        front = frontier_set(cells, speed_only=speed_only)
        summary.frontier_same.append(front == full_front)
        summary.stops.append(sim.stop)
    return summary


__all__ = ["Budget", "ReplaySummary", "Simulation", "Spend", "replay", "simulate"]
