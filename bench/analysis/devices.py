"""Cards that were not the ones asked for: Modal may place work on another card than a
cell's GPU string names (it lists ``H100`` and the pinned ``H100!``: an unpinned H100
request may run on a better card when Modal upgrades it), and a record keeps the CUDA
device name it ran on. A cell whose records ran on another card than its GPU has timings
(and prices) of that card, so the report says so.
"""

from __future__ import annotations

import pandas as pd

from bench.analysis.prices import Prices
from bench.scoring.outcomes import column


def device_mismatch_notes(records: pd.DataFrame, prices: Prices) -> list[str]:
    """One note per (cell, card) where a record's ``device_name`` is a known card other
    than the cell's ``gpu`` (both matched through the price file's names; a name it
    does not know is not judged)."""
    seen: dict[tuple[str, str, str], int] = {}
    for cell_id, gpu, device in zip(column(records, "cell_id"), column(records, "gpu"),
                                    column(records, "device_name"), strict=True):
        if not isinstance(gpu, str) or not isinstance(device, str):
            continue
        asked, _ = prices.key_for(gpu)
        got, _ = prices.key_for(None, device)
        if asked is not None and got is not None and asked != got:
            key = (str(cell_id), gpu, device)
            seen[key] = seen.get(key, 0) + 1
    return [f"cell {cell_id} asked for {gpu} but {count} generation(s) ran on {device}: its "
            f"timings and cost are that card's, not {gpu}'s"
            + (f" (pin it with {gpu}! on Modal)" if gpu == "H100" else "")
            for (cell_id, gpu, device), count in sorted(seen.items())]
