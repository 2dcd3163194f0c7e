"""Cost per hour of audio: price per second x total compute seconds / total audio seconds
(a ratio of sums, not a median).
"""

from __future__ import annotations

import math

import pandas as pd

from bench.analysis.prices import Prices
from bench.scoring.outcomes import (
    column,
)


def cost_per_audio_hour(price_per_second: float | None, rtf: float) -> float:
    """Money per hour of audio: price/s x compute seconds per audio second x 3600 s.

    ``rtf`` must be the pooled ratio (total compute / total audio, :func:`pooled_rtf`):
    an hour of audio costs the sum of its compute, and a median of per-generation RTFs
    over a prompt mix of short and long texts is not that ratio.
    """
    if price_per_second is None or not math.isfinite(rtf):
        return math.nan
    return price_per_second * rtf * 3600.0


def add_costs(cells: pd.DataFrame, prices: Prices, cpu_cores: int | None = None) -> pd.DataFrame:
    """Add ``price_per_second``, ``price_basis`` (what was priced) and
    ``cost_per_audio_hour`` (from ``rtf_pooled``, total compute / total audio). Returns a
    new frame."""
    out = cells.copy()
    priced = [prices.per_second(g if isinstance(g, str) else None,
                                d if isinstance(d, str) else None, cpu_cores)
              for g, d in zip(column(out, "gpu"), column(out, "device_name"), strict=True)]
    out["price_per_second"] = [math.nan if p is None else p for p, _ in priced]
    out["price_basis"] = [basis for _, basis in priced]
    out["cost_per_audio_hour"] = [cost_per_audio_hour(p, r)
                                  for (p, _), r in zip(priced, out["rtf_pooled"], strict=True)]
    return out
