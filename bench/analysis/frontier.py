"""The speed/quality frontier: the cells no other cell beats on both axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd


def pareto_mask(x: Sequence[float] | npt.ArrayLike, y: Sequence[float] | npt.ArrayLike
                ) -> npt.NDArray[np.bool_]:
    """True for points no other point dominates, both axes lower-is-better.

    j dominates i when x_j <= x_i and y_j <= y_i with at least one strict. Points with a
    NaN coordinate are never on the front. Equal points are all on it.
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    finite = np.isfinite(xs) & np.isfinite(ys)
    keep = finite.copy()
    for i in np.flatnonzero(finite):
        others = finite & (xs <= xs[i]) & (ys <= ys[i]) & ((xs < xs[i]) | (ys < ys[i]))
        keep[i] = not others.any()
    return keep


def _front(cells: pd.DataFrame, x: str, y: str) -> npt.NDArray[np.bool_]:
    """Pareto front of x against y; with no y at all (unscored) the front is on x alone."""
    ys = cells[y].to_numpy(dtype=np.float64)
    if not np.isfinite(ys).any():
        ys = np.zeros(len(cells))
    return pareto_mask(cells[x].to_numpy(dtype=np.float64), ys)


def add_frontiers(cells: pd.DataFrame) -> pd.DataFrame:
    """Add ``front_hw`` (RTF vs corpus WER within the cell's hardware), ``front_all``
    (RTF vs WER over all cells) and ``front_cost`` (cost per audio hour vs WER over all
    cells; needs :func:`add_costs` first). Returns a new frame."""
    out = cells.copy()
    out["front_hw"] = False
    for _, group in out.groupby("hardware", sort=False):
        out.loc[group.index, "front_hw"] = _front(group, "rtf_median", "corpus_wer")
    out["front_all"] = _front(out, "rtf_median", "corpus_wer")
    if "cost_per_audio_hour" in out.columns:
        out["front_cost"] = _front(out, "cost_per_audio_hour", "corpus_wer")
    return out


def frontier_set(cells: pd.DataFrame, *, speed_only: bool) -> set[str]:
    """The main frontier's cells per hardware, from a cell summary: RTF vs corpus WER, or
    on median RTF alone when quality is not meaningful (the set the adaptive policy and
    its replay compare)."""
    out: set[str] = set()
    for _, group in cells.groupby("hardware", sort=False):
        x = group["rtf_median"].to_numpy(dtype=np.float64)
        y = (np.zeros(len(group)) if speed_only
             else group["corpus_wer"].to_numpy(dtype=np.float64))
        out |= {str(c) for c, keep in zip(group.index, pareto_mask(x, y), strict=True) if keep}
    return out
