"""The report's "Stopped early" section of an adaptive run: which cells ran fewer
prompts than the grid and why (dominated by which cell, on which metric, with the
intervals), read from the run's decision log (``adaptive.json``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bench.analysis.run_analysis import RunAnalysis
from bench.scoring.outcomes import column
from bench.spec.adaptive import ADAPTIVE_LOG
from bench.store.files import read_json


@dataclass
class AdaptiveSection:
    """What the section shows: the run's stop, its spend, and one row per cell."""

    summary: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)


def adaptive_section(analysis: RunAnalysis) -> AdaptiveSection | None:
    """None for a run that was not adaptive."""
    path = analysis.run_dir / ADAPTIVE_LOG
    if not path.is_file():
        return None
    log = read_json(path)
    stages = log.get("stages") or []
    if not stages:
        return None
    records = analysis.records
    stage_col = column(records, "adaptive_stage")
    per_cell = records.assign(_stage=stage_col).groupby("cell_id", sort=False)
    last_stage = {str(c): int(g["_stage"].max()) for c, g in per_cell
                  if g["_stage"].notna().any()}
    counts = {str(c): len(g) for c, g in per_cell}
    by_stage = {int(s["stage"]): s for s in stages}
    final = stages[-1]
    n_full = int(log.get("full_generations") or 0)
    per_prompt = n_full // max(1, int(log.get("n_cells") or 1) * int(log.get("n_prompts") or 1))
    rows = []
    for cid, label in zip(analysis.cells.index, analysis.cells["cell_label"], strict=True):
        cid = str(cid)
        ran = last_stage.get(cid, -1)
        decision = (by_stage.get(ran) or final)["decisions"].get(cid, {})
        full = counts.get(cid, 0) >= per_prompt * int(log.get("n_prompts") or 0)
        state = ("every prompt" if full
                 else "undecided at the stop" if decision.get("active")
                 else f"stopped after stage {ran}")
        rows.append({"cell_id": cid, "cell_label": label, "generations": counts.get(cid, 0),
                     "stages": ran + 1, "state": state, "early": not full,
                     "reason": decision.get("reason", ""), "by": decision.get("by") or "",
                     "metric": decision.get("metric") or "",
                     "detail": decision.get("detail", "")})
    spent_usd = final.get("spent_usd")
    settings = log.get("settings") or {}
    budget = ", ".join(f"{k} = {settings[k]:g}" for k in ("max_gpu_hours", "max_usd")
                       if settings.get(k) is not None)
    ran_total = len(records)
    summary = [
        f"Adaptive run: first batch {settings.get('first_batch')} prompts, then "
        f"{settings.get('batch')} per stage, at {float(settings.get('confidence', 0.95)):.0%} "
        f"confidence; {len(stages)} stages.",
        f"Ran {ran_total} of the grid's {n_full} generations "
        f"({ran_total / n_full:.0%}); compute {final.get('spent_hours', math.nan):.4f} h"
        + (f", {spent_usd:.4f} USD" if isinstance(spent_usd, int | float) else "")
        + f" (budget: {budget or 'none'}).",
        f"Stopped: {log.get('stop') or 'not yet (the run is unfinished)'}.",
        f"Policy: {final.get('note', '')}. A cell whose figures stop others (a dominator, "
        "the headline's choice, the baseline) runs every prompt, so a cell that only looked "
        "good on a few prompts cannot end the search; every figure in this report is over "
        "the prompts each cell ran.",
    ]
    return AdaptiveSection(summary, rows)


def markdown(section: AdaptiveSection) -> str:
    lines = ["## Stopped early (adaptive run)", "", *section.summary, "",
             "| cell | generations | state | reason | comparison |", "|---|---:|---|---|---|"]
    if not any(r["early"] for r in section.rows):
        lines.append("| (no cell stopped early) | | | | |")
    for r in section.rows:
        if r["early"]:
            lines.append(f"| {r['cell_label']} `{r['cell_id']}` | {r['generations']} | "
                         f"{r['state']} | {r['reason']} | {r['detail']} |")
    return "\n".join(lines)
