"""Speed-ups of each cell against its hardware's baseline cell, paired by prompt, seed
and repeat: the headline's (an RTF ratio) and the "Measured vs predicted speed-up"
table's (time ratios, measured and predicted from the FLOP model).

Two kinds, because they answer different questions:

* ``speedup_rtf`` is what the headline's choice is made on: compute seconds per second
  of speech. Cells with different sequence lengths (or random weights) produce different
  amounts of audio for the same prompt, so a ratio of times can say "slower" of a cell
  whose RTF is lower; the RTF ratio cannot contradict the median RTFs beside it.
* ``speedup_sampling`` / ``speedup_total`` are time ratios: what the FLOP count predicts
  (``predicted_*``) is time for the same prompt, not time per second of audio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.analysis.cells import aligned_numbers, nanmedian, pair_index, speech_rtfs
from bench.analysis.flop_model import sampling_flops
from bench.analysis.headline import Baseline
from bench.scoring.outcomes import column

#: Columns :func:`add_speedups` fills, one figure per cell.
SPEEDUPS: tuple[str, ...] = ("speedup_rtf", "speedup_sampling", "predicted_sampling",
                             "speedup_total", "predicted_total")


def add_speedups(cells: pd.DataFrame, records: pd.DataFrame,
                 baselines: Mapping[str, Baseline]) -> pd.DataFrame:
    """Add measured and FLOP-predicted speed-ups against each hardware's baseline cell.

    Generations are paired by (prompt, seed, repeat) with the baseline's; only the pairs
    both cells ran count (an adaptive run's cells ran different prompts):

    * ``speedup_rtf`` = baseline median speech RTF / cell median speech RTF over the
      pairs (a NaN or silent generation's RTF is infinite, as in the cell table). With
      every pair in common it is exactly the ratio of the two cells' ``rtf_median``;
    * ``speedup_sampling`` = median over pairs of baseline t_sampling / cell t_sampling;
    * ``predicted_sampling`` = median of baseline sampling FLOPs / cell sampling FLOPs
      (:func:`bench.analysis.flop_model.sampling_flops`; time proportional to FLOPs);
    * ``speedup_total`` = median over pairs of baseline t_total / cell t_total (a time
      ratio: it ignores how much audio each produced);
    * ``predicted_total`` = baseline t_total / (baseline non-sampling time + baseline
      t_sampling x cell FLOPs / baseline FLOPs): only the sampling share shrinks (Amdahl);
    * ``*_gap`` = measured - predicted (positive: faster than the FLOP count promises).

    ``baseline_id`` names the baseline; ``n_pairs`` counts the pairs (0: no figures).
    """
    out = cells.copy()
    ok = records[column(records, "status") == "ok"]
    by_cell: dict[str, pd.DataFrame] = {
        str(cid): g.set_index(pair_index(g)) for cid, g in ok.groupby("cell_id", sort=False)}
    results: dict[str, list[float]] = {n: [] for n in SPEEDUPS}
    base_ids: list[str | None] = []
    pairs: list[int] = []
    for cell_id, row in out.iterrows():
        baseline = baselines.get(str(row["hardware"]))
        base_ids.append(baseline.cell_id if baseline else None)
        cell = by_cell.get(str(cell_id))
        base = by_cell.get(baseline.cell_id) if baseline else None
        common = (cell.index.intersection(base.index) if cell is not None and base is not None
                  else pd.Index([]))
        pairs.append(len(common))
        figures = (pair_speedups(base.loc[common], cell.loc[common])
                   if cell is not None and base is not None and len(common)
                   else dict.fromkeys(SPEEDUPS, math.nan))
        for n in SPEEDUPS:
            results[n].append(figures[n])
    out["baseline_id"] = base_ids
    out["n_pairs"] = pairs
    for n in SPEEDUPS:
        out[n] = results[n]
    out["sampling_gap"] = out["speedup_sampling"] - out["predicted_sampling"]
    out["total_gap"] = out["speedup_total"] - out["predicted_total"]
    return out


def pair_speedups(base: pd.DataFrame, cell: pd.DataFrame) -> dict[str, float]:
    """The :data:`SPEEDUPS` of ``cell`` against ``base``, two frames of ok records
    aligned row by row (the same prompt, seed and repeat in each row)."""
    def arr(frame: pd.DataFrame, name: str) -> npt.NDArray[np.float64]:
        return aligned_numbers(frame, name, math.nan)

    b_samp, c_samp = arr(base, "t_sampling"), arr(cell, "t_sampling")
    b_tot, c_tot = arr(base, "t_total"), arr(cell, "t_total")
    b_flops, c_flops = _flops(base), _flops(cell)
    with np.errstate(divide="ignore", invalid="ignore"):
        predicted_total = b_tot / ((b_tot - b_samp) + b_samp * c_flops / b_flops)
        ratios = {
            "speedup_sampling": b_samp / c_samp,
            "predicted_sampling": b_flops / c_flops,
            "speedup_total": b_tot / c_tot,
            "predicted_total": predicted_total,
        }
    figures = {name: nanmedian(values) for name, values in ratios.items()}
    figures["speedup_rtf"] = _rtf_ratio(speech_rtfs(base), speech_rtfs(cell))
    return figures


def _rtf_ratio(base: npt.NDArray[np.float64], cell: npt.NDArray[np.float64]) -> float:
    """Baseline median RTF / cell median RTF; an infinite median (most generations
    silent) gives 0 or inf, which says what it is, and NaN where either has no RTF."""
    if not base.size or not cell.size:
        return math.nan
    b, c = float(np.median(base)), float(np.median(cell))
    if math.isnan(b) or math.isnan(c) or c == 0 or (math.isinf(b) and math.isinf(c)):
        return math.nan
    return b / c


def _flops(frame: pd.DataFrame) -> npt.NDArray[np.float64]:
    return np.asarray([sampling_flops(r) for r in frame.to_dict("records")], dtype=np.float64)
