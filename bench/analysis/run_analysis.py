"""A run analysed: its cells summarised, frontiers, costs, baselines and the headline; and
two runs compared cell by cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis.cells import cell_rows, pair_scores, summarize_cells
from bench.analysis.cost import add_costs
from bench.analysis.devices import device_mismatch_notes
from bench.analysis.evidence import evidence
from bench.analysis.frontier import add_frontiers
from bench.analysis.headline import (
    DEFAULT_WER_BUDGET_POINTS,
    Baseline,
    Choice,
    choose_baselines,
    pick_headline,
)
from bench.analysis.memory_fit import vram_fit
from bench.analysis.noise import machine_pace, pace_range
from bench.analysis.prices import Prices, load_prices
from bench.analysis.speedup import add_speedups
from bench.analysis.stability import FrontierStability, HeadlineStability, resampled_stability
from bench.core.errors import UserError
from bench.scoring.outcomes import (
    column,
    has_scores,
)


@dataclass
class RunAnalysis:
    """Everything a report shows about one run."""

    run_dir: Path
    manifest: dict[str, Any]
    records: pd.DataFrame
    cells: pd.DataFrame
    baselines: dict[str, Baseline]
    choices: list[Choice]
    vram: pd.DataFrame
    prices: Prices
    wer_budget_points: float
    notes: list[str]
    #: The machine pace's p10 and p90 over its median (:func:`pace_range`); None when no
    #: cell ran interleaved with enough others to have one.
    pace_range: tuple[float, float] | None = None
    #: hardware -> how firmly the prompts support the headline's choice
    #: (:mod:`bench.analysis.stability`).
    stability: dict[str, HeadlineStability] = field(default_factory=dict)
    #: How firmly the prompts support the main frontier, and each cell's place on it.
    frontier_stability: FrontierStability | None = None

    @property
    def cell_labels(self) -> dict[str, str]:
        """cell id -> its label (steps, CFG mode, length, ...)."""
        return {str(c): str(label) for c, label in zip(
            self.cells.index, column(self.cells, "cell_label"), strict=True)}

    @property
    def quality_status(self) -> str:
        """"ok" (every scored cell meaningful), "not meaningful" or "not scored"."""
        statuses = set(column(self.cells, "quality"))
        if not statuses or statuses == {"not scored"}:
            return "not scored"
        return "not meaningful" if "not meaningful" in statuses else "ok"

    @property
    def failures(self) -> pd.DataFrame:
        """Failed generations with their error, phase and place."""
        failed = self.records[column(self.records, "status") == "failed"]
        keep = [c for c in ("key", "cell_id", "cell_label", "prompt_id", "seed", "error",
                            "error_phase", "error_where") if c in failed.columns]
        return failed[keep]


def analyze_run(run_dir: str | Path, *, prices: Prices | None = None,
                baseline_cell: str | None = None,
                wer_budget_points: float = DEFAULT_WER_BUDGET_POINTS,
                n_boot: int = 1000) -> RunAnalysis:
    """Load a run directory and compute every figure of its report."""
    from bench.store.files import read_json
    from bench.store.layout import MANIFEST, StoreError
    from bench.store.records import load_records

    run_dir = Path(run_dir)
    try:
        records = load_records(run_dir)
        manifest = read_json(run_dir / MANIFEST)
    except StoreError as err:
        raise UserError(str(err)) from None
    if not len(records) or "cell_id" not in records.columns:
        raise UserError(f"run {run_dir} has no records yet; run or resume the sweep first")
    prices = prices or load_prices()
    cpu_cores = (manifest.get("environment") or {}).get("cpu_count")
    pace = machine_pace(records)
    ev = evidence(records)
    cells = summarize_cells(records, n_boot=n_boot, pace=pace, ev=ev)
    cells = add_costs(cells, prices, cpu_cores if isinstance(cpu_cores, int) else None)
    cells = add_frontiers(cells)
    cells = add_speedups(cells, records, choose_baselines(cells, baseline_cell))
    adaptive = bool(column(records, "adaptive_stage").notna().any())
    baselines, cells, choices = pick_headline(
        cells, ev, wer_budget_points, baseline_cell,
        among=_left_in_contention(run_dir) if adaptive else None)
    notes = [f"{b.hardware}: baseline {b.cell_id} — {b.reason}" for b in baselines.values()]
    notes += device_mismatch_notes(records, prices)
    firmness = resampled_stability(ev, wer_budget_points, baseline_cell)
    return RunAnalysis(
        run_dir=run_dir, manifest=manifest, records=records, cells=cells,
        baselines=baselines, choices=choices,
        vram=vram_fit(cells), prices=prices, wer_budget_points=wer_budget_points, notes=notes,
        pace_range=pace_range(pace),
        stability=firmness.headline, frontier_stability=firmness.frontier)


def _left_in_contention(run_dir: Path) -> set[str] | None:
    """The cells an adaptive run's last stage left in contention for the headline (its
    log, ``adaptive.json``); None for a log that predates them."""
    from bench.spec.adaptive import ADAPTIVE_LOG
    from bench.store.files import read_json

    path = run_dir / ADAPTIVE_LOG
    stages = (read_json(path).get("stages") or []) if path.exists() else []
    if not stages or "contenders" not in stages[-1]:
        return None
    return {str(c) for ids in stages[-1]["contenders"].values() for c in ids}


def compare_runs(candidate: RunAnalysis, baseline: RunAnalysis, n_boot: int = 1000
                 ) -> pd.DataFrame:
    """Cells present in both runs (paired by cell id): median RTF of each, their ratio
    (candidate / baseline; > 1 is slower), and the paired corpus-WER difference
    (candidate - baseline, fraction) with its 95 % interval, paired by (prompt, seed);
    failed and silent generations count as empty transcripts (:mod:`bench.scoring.outcomes`)."""
    from bench.scoring.wer import paired_difference

    rows = []
    for cell_id in candidate.cells.index:
        if cell_id not in baseline.cells.index:
            continue
        new, old = candidate.cells.loc[cell_id], baseline.cells.loc[cell_id]
        row = {"cell_id": cell_id, "cell_label": new["cell_label"],
               "rtf_baseline": old["rtf_median"], "rtf_candidate": new["rtf_median"],
               "rtf_ratio": new["rtf_median"] / old["rtf_median"],
               "delta_wer": math.nan, "delta_wer_lo": math.nan, "delta_wer_hi": math.nan}
        a = pair_scores(cell_rows(baseline.records, str(cell_id)),
                        scored=has_scores(baseline.records))
        b = pair_scores(cell_rows(candidate.records, str(cell_id)),
                        scored=has_scores(candidate.records))
        if a and b:
            diff = paired_difference(a, b, n_boot=n_boot)
            row.update(delta_wer=diff.delta_corpus_wer, delta_wer_lo=diff.ci_low,
                       delta_wer_hi=diff.ci_high)
        rows.append(row)
    return pd.DataFrame(rows)
