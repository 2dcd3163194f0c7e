"""How noisy a cell's timings were, and what the machine was doing meanwhile.

A median hides its spread: a cell whose total times scatter widely was measured on a busy
or throttling machine, and its comparisons with other cells deserve less trust. Each
cell gets a dispersion figure, the interquartile range of its total generation time
over the median (robust to one outlier, unitless so cells of any speed compare), and is
flagged *unstable* beyond :data:`UNSTABLE_DISPERSION`. Beside it, the machine's state
while the cell ran, from the per-generation snapshots (:mod:`bench.run.machine`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

#: IQR / median of total time above which a cell is flagged unstable. Repeated
#: generations of one cell on a quiet machine spread by a few percent; 10 % means
#: something else shared the machine or its clocks moved.
UNSTABLE_DISPERSION = 0.10
#: Fewer timings than this give no dispersion (a quartile of two values says nothing).
MIN_TIMINGS = 3
#: Throttle reasons that slow a busy GPU (the others say it idled or synced clocks).
SLOWING_REASONS = frozenset({"sw_power_cap", "hw_slowdown", "sw_thermal", "hw_thermal",
                             "hw_power_brake"})


def dispersion(values: Any) -> float:
    """IQR / median of the finite positive ``values``; NaN below :data:`MIN_TIMINGS`."""
    x = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(np.float64)
    x = x[np.isfinite(x) & (x > 0)]
    if x.size < MIN_TIMINGS:
        return math.nan
    q1, median, q3 = np.percentile(x, [25, 50, 75])
    return float((q3 - q1) / median)


def cell_noise(ok: pd.DataFrame) -> dict[str, Any]:
    """A cell's noise figures from its ok records: ``dispersion`` (of ``t_total``),
    ``unstable``, ``interleaved`` (ran in rounds with other cells), and the machine's
    state while it ran: ``load_avg_max``, ``cpu_mhz_min``, ``gpu_sm_clock_min``,
    ``gpu_temp_max`` and ``gpu_throttled`` (slowing throttle reasons seen, or "")."""
    def col(name: str) -> pd.Series:
        return ok[name] if name in ok.columns else pd.Series([], dtype=object)

    def extreme(name: str, pick: str) -> float:
        x = pd.to_numeric(col(name), errors="coerce").dropna()
        return float(getattr(x, pick)()) if len(x) else math.nan

    spread = dispersion(col("t_total"))
    reasons = sorted({r for v in col("gpu_throttle").dropna() for r in str(v).split(",")}
                     & SLOWING_REASONS)
    return {"dispersion": spread, "unstable": bool(spread > UNSTABLE_DISPERSION),
            "interleaved": bool(any(v is True for v in col("order_interleaved"))),
            "load_avg_max": extreme("load_avg_1m", "max"),
            "cpu_mhz_min": extreme("cpu_mhz", "min"),
            "gpu_sm_clock_min": extreme("gpu_sm_clock_mhz", "min"),
            "gpu_temp_max": extreme("gpu_temp_c", "max"),
            "gpu_throttled": ",".join(reasons)}
