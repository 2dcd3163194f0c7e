"""Step changes between two runs of one cell, paired as the gate pairs them.

Two runs of a spec use the same prompts, seeds and repeats, so a generation in one run has
a twin in the other: the same text, the same noise. Comparing twins removes the spread
between prompts (a short prompt's RTF can be several times a long one's), which an
unpaired test of the pooled values cannot see past: a uniform 15 % slowdown over a mix of
short and long prompts hides in that spread.

Rule (asv's, both conditions): the paired ratio (the median over twins of after/before)
is beyond ``factor`` either way, AND the Wilcoxon
signed-rank test on the twins' log ratios says the change is not zero: two-sided p (twice
the smaller one-sided p) below ``alpha``. One test, always the same one.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.cells import pair_index, summarize_cells
from bench.analysis.signed_rank import signed_rank_p_greater
from bench.scoring.outcomes import (
    column,
    is_number,
)


@dataclass(frozen=True)
class StepChange:
    """``ratio``: median over twins of after/before (> 1 slower); ``p_value`` two-sided;
    ``n_pairs`` twins compared; ``step`` "slower", "faster" or "" (no step)."""

    ratio: float
    p_value: float
    n_pairs: int
    step: str


NO_PAIRS = StepChange(math.nan, math.nan, 0, "")


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
    p = min(1.0, 2 * min(signed_rank_p_greater(logs), signed_rank_p_greater(-logs)))
    beyond = ratio > factor or ratio < 1 / factor
    step = ("slower" if ratio > 1 else "faster") if beyond and p < alpha else ""
    return StepChange(ratio, p, len(keys), step)


def _positive(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def history_table(root: str | Path, spec_name: str | None = None) -> pd.DataFrame:
    """Key figures of every run under ``root`` (optionally of one spec), oldest first.

    One row per (run, cell): ``run_id``, ``started_at``, ``git_commit``, ``spec_name``,
    ``cell_id``, ``cell_label``, ``rtf_median``, ``corpus_wer`` (NaN unless scored and
    meaningful; failed and silent generations count as empty transcripts),
    ``failure_rate`` (share without speech) and ``rtfs`` (per-generation RTF keyed by
    (prompt, seed, repeat), so runs pair twin generations). Runs whose records cannot be
    read are skipped.
    """
    from bench.store.history import list_runs
    from bench.store.layout import StoreError
    from bench.store.records import load_records

    root = Path(root)
    rows: list[dict[str, Any]] = []
    for entry in list_runs(root, spec_name):
        run_dir = root / str(entry.get("path") or entry.get("run_id"))
        try:
            records = load_records(run_dir)
        except (StoreError, OSError):
            continue
        if not len(records) or "cell_id" not in records.columns:
            continue
        cells = summarize_cells(records, n_boot=200)
        ok = records[column(records, "status") == "ok"]
        for cell_id, cell in cells.iterrows():
            mine = ok[ok["cell_id"] == cell_id]
            rtfs = {key: float(v) for key, v in zip(pair_index(mine), column(mine, "rtf"),
                                                    strict=True) if is_number(v)}
            rows.append({
                "run_id": entry.get("run_id"), "started_at": entry.get("started_at"),
                "git_commit": entry.get("git_commit"), "spec_name": entry.get("spec_name"),
                "cell_id": cell_id, "cell_label": cell["cell_label"],
                "rtf_median": cell["rtf_median"],
                "corpus_wer": cell["corpus_wer"] if cell["quality"] == "ok" else math.nan,
                "failure_rate": cell["failure_rate"], "rtfs": rtfs,
            })
    return pd.DataFrame(rows)


def flag_step_changes(history: pd.DataFrame, factor: float = 1.1, alpha: float = 0.05
                      ) -> pd.DataFrame:
    """``history`` plus, per row, the change against the same cell's previous run, over
    the generations both runs made (:func:`bench.analysis.history.paired_step_change`): ``ratio``
    (median over twins of RTF now / before), ``p_value`` (two-sided signed-rank),
    ``n_pairs`` and ``step`` ("slower", "faster" or "")."""
    from bench.analysis.history import NO_PAIRS, paired_step_change

    out = history.copy()
    changes = []
    previous: dict[str, Mapping[Hashable, float]] = {}
    for _, row in out.iterrows():
        before = previous.get(str(row["cell_id"]))
        changes.append(NO_PAIRS if before is None else paired_step_change(
            before, row["rtfs"], factor=factor, alpha=alpha))
        previous[str(row["cell_id"])] = row["rtfs"]
    out["ratio"] = [c.ratio for c in changes]
    out["p_value"] = [c.p_value for c in changes]
    out["n_pairs"] = [c.n_pairs for c in changes]
    out["step"] = [c.step for c in changes]
    return out
