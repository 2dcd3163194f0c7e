"""Which GPU memory budgets a cell fits: its need (resident weights + working peak where
measured, else the peak reserved memory) plus the CUDA context, against each card size.
A cell that ran out of memory never fits the card it ran on.

Memory in bytes; budgets and headroom in GB (1e9 bytes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from bench.scoring.outcomes import column, is_number

#: GPU memory budgets (GB) and the cards that have them.
VRAM_BUDGETS_GB: dict[int, str] = {
    16: "T4", 24: "L4, A10G", 40: "A100-40GB", 48: "L40S", 80: "A100-80GB, H100", 141: "H200",
}
#: Memory a CUDA process holds outside the caching allocator (context, cuBLAS workspaces,
#: fragmentation), so a cell whose peak reserved memory equals the card size still fails.
CUDA_CONTEXT_BYTES = 500_000_000


def memory_need(cell: Mapping[Any, Any]) -> tuple[float, str]:
    """(bytes a cell needs on the device, the figures it comes from).

    Resident weights plus the cell's working peak when the records carry them (measured
    after what earlier cells left was freed); else the peak reserved memory (what the
    caching allocator held, which may include what earlier cells left). NaN on CPU runs.
    """
    weights: Any = cell.get("weights_resident")
    working: Any = cell.get("working_peak")
    if is_number(weights) and is_number(working):
        return float(weights) + float(working), "resident weights + working peak"
    reserved: Any = cell.get("peak_reserved")
    return (float(reserved) if is_number(reserved) else math.nan), "peak reserved"


def card_budget_gb(hardware: str, budgets_gb: Iterable[int] = VRAM_BUDGETS_GB) -> int | None:
    """The memory budget (GB) of the card a cell ran on, from :data:`VRAM_BUDGETS_GB`'s
    card names (``A10G``, ``H100:2`` -> its single card); None when unknown."""
    card = hardware.split(":", 1)[0].upper().rstrip("!")
    for budget in budgets_gb:
        names = {n.strip().upper() for n in VRAM_BUDGETS_GB.get(budget, "").split(",")}
        if card in names or (card == "A10" and "A10G" in names):
            return budget
    return None


def vram_fit(cells: pd.DataFrame, budgets_gb: Iterable[int] = VRAM_BUDGETS_GB,
             context_bytes: int = CUDA_CONTEXT_BYTES) -> pd.DataFrame:
    """Headroom of each cell on each GPU memory budget, in GB (1e9 bytes).

    The need is :func:`memory_need` plus ``context_bytes`` for the CUDA context. A column
    per budget holds ``budget - needed`` (negative: does not fit); NaN where unknown (a
    CPU run). A cell that ran out of memory (``n_oom`` > 0) fits no budget up to its
    card's (``-inf``: it did not fit there) and is unknown above it; ``oom`` marks it.
    ``needed_gb`` is the need itself, ``weights_gb``/``working_gb`` its parts when
    measured, ``basis`` what the need is made of.
    """
    budgets = list(budgets_gb)
    needs = [memory_need(r) for r in cells.to_dict("records")]
    needed = pd.Series([(n + context_bytes) / 1e9 for n, _ in needs], index=cells.index,
                       dtype=float)
    oom = [is_number(v) and v > 0 for v in column(cells, "n_oom")]
    out = pd.DataFrame({"cell_label": column(cells, "cell_label"),
                        "hardware": column(cells, "hardware"), "needed_gb": needed,
                        "weights_gb": pd.to_numeric(column(cells, "weights_resident"),
                                                    errors="coerce") / 1e9,
                        "working_gb": pd.to_numeric(column(cells, "working_peak"),
                                                    errors="coerce") / 1e9,
                        "basis": [b for _, b in needs], "oom": oom}, index=cells.index)
    for budget in budgets:
        out[f"{budget} GB"] = budget - needed
    for i, cell_id in enumerate(cells.index):
        if not oom[i]:
            continue
        card = card_budget_gb(str(out.at[cell_id, "hardware"]), budgets)
        for budget in budgets:
            ran_out = card is not None and budget <= card
            out.at[cell_id, f"{budget} GB"] = -math.inf if ran_out else math.nan
    return out
