"""The adaptive part of ``echo-bench sweep``: after each stage, score what it made, ask
the policy (:mod:`bench.analysis.adaptive`) which cells are still undecided, check the
budget, and log the decision in ``RUN/adaptive.json`` (the report's "stopped early"
section reads it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bench.analysis.adaptive import (
    PolicySettings,
    decide,
    over_budget,
    projected_spend,
    spend,
)
from bench.analysis.prices import load_prices
from bench.run.runner import Staging
from bench.spec.adaptive import ADAPTIVE_LOG, AdaptiveSpec, stage_batches
from bench.spec.prompt_files import Prompt
from bench.spec.sweep import SpecError, SweepSpec
from bench.store.files import write_json_atomic
from bench.store.records import records_frame
from bench.store.run_store import RunStore


class AdaptiveStages:
    """The staging of one adaptive sweep (:class:`bench.run.runner.Staging`)."""

    def __init__(self, spec: SweepSpec, prompts: list[Prompt],
                 score: Callable[[RunStore], None] | None) -> None:
        if spec.adaptive is None:
            raise SpecError(f"spec {spec.name} has no [adaptive] table; add one with "
                            "first_batch and a budget (max_gpu_hours or max_usd), see README")
        self.settings: AdaptiveSpec = spec.adaptive
        if len(prompts) < self.settings.first_batch:
            raise SpecError(f"adaptive.first_batch = {self.settings.first_batch} but the prompt "
                            f"set has {len(prompts)} prompts; lower first_batch or use more "
                            "prompts", key="adaptive.first_batch")
        self.spec = spec
        self.score = score
        self.n_prompts = len(prompts)
        self.batches = tuple(stage_batches([p.id for p in prompts], self.settings.first_batch,
                                           self.settings.batch, self.settings.seed))
        self.policy = PolicySettings(confidence=self.settings.confidence,
                                     wer_budget_points=self.settings.wer_budget,
                                     goal=self.settings.goal)
        self.prices = load_prices()
        self.log: dict[str, Any] = {
            "settings": self.settings.to_dict(), "n_prompts": self.n_prompts,
            "n_cells": len(spec.cells),
            "full_generations": (len(spec.cells) * self.n_prompts * len(spec.measure.seeds)
                                 * spec.measure.repeats),
            "batches": [list(b) for b in self.batches], "stages": [], "stop": None,
        }

    def staging(self) -> Staging:
        return Staging(self.batches, self.after_stage)

    def after_stage(self, store: RunStore, stage: int, cells: frozenset[str]) -> frozenset[str]:
        if self.score is not None:
            self.score(store)  # decisions on quality need this stage's scores
        records = records_frame(store.records())
        decision = decide(records, self.policy, self.n_prompts,
                          [p for batch in self.batches for p in batch])
        active = frozenset(decision.active)
        cores = (store.manifest.get("environment") or {}).get("cpu_count")
        cores = cores if isinstance(cores, int) else None
        spent = spend(records, self.prices, cores)
        stop: str | None = None
        last = stage + 1 >= len(self.batches)
        if not active:
            stop = ("decided: the headline is settled" if self.policy.goal == "headline"
                    else "decided: the headline and frontier membership are settled")
        elif last:
            stop = "every prompt run: some cells were still undecided"
        else:
            allowed = {p for batch in self.batches[:stage + 2] for p in batch}
            have = set(zip(records["cell_id"].astype(str), records["prompt_id"].astype(str),
                           strict=True))
            per_prompt = len(self.spec.measure.seeds) * self.spec.measure.repeats
            todo = {c: per_prompt * sum((c, p) not in have for p in allowed) for c in active}
            why = over_budget(spent, projected_spend(records, todo, self.prices, cores),
                              self.settings.max_gpu_hours, self.settings.max_usd)
            if why is not None:
                stop = f"budget: {why}"
        self.log["stages"] = [s for s in self.log["stages"] if s["stage"] < stage] + [{
            "stage": stage, "cells_run": sorted(cells),
            "generations": len(records), "spent_hours": spent.hours,
            "spent_usd": None if np.isnan(spent.usd) else spent.usd,
            "active": sorted(active), "note": decision.note,
            "headline_decided": decision.headline_decided, "choices": decision.choices,
            "contenders": decision.contenders,
            "decisions": {c: d.to_dict() for c, d in decision.cells.items()},
        }]
        self.log["stop"] = stop
        write_json_atomic(store.path / ADAPTIVE_LOG, self.log)
        print(f"adaptive stage {stage}: {len(cells)} cells, {len(records)} generations so far; "
              f"{len(active)} undecided" + (f"; stop ({stop})" if stop else "")
              + f" [{decision.note}]")
        return frozenset() if stop else active
