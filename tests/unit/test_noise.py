"""Per-cell timing dispersion, the unstable flag and the machine's state beside them."""

from __future__ import annotations

import math

import pandas as pd

from bench.analysis.noise import UNSTABLE_DISPERSION, cell_noise, dispersion


def test_dispersion_is_iqr_over_median() -> None:
    assert dispersion([1.0, 1.0, 1.0, 1.0]) == 0.0
    # Quartiles of 1..5 are 2 and 4, the median 3.
    assert dispersion([1.0, 2.0, 3.0, 4.0, 5.0]) == 2 / 3
    assert math.isnan(dispersion([1.0, 2.0]))  # too few to say
    assert dispersion([None, float("nan"), 2.0, 2.0, 2.0]) == 0.0


def test_a_scattered_cell_is_flagged_unstable_with_the_machine_state() -> None:
    steady = pd.DataFrame({"t_total": [1.00, 1.01, 0.99, 1.02, 1.00],
                           "load_avg_1m": [0.5, 0.7, 0.6, 0.5, 0.5],
                           "order_interleaved": [True] * 5})
    noisy = pd.DataFrame({"t_total": [1.0, 1.6, 0.9, 2.4, 1.1],
                          "load_avg_1m": [0.5, 6.0, 0.6, 7.5, 0.4],
                          "gpu_sm_clock_mhz": [1755, 1200, 1755, 990, 1755],
                          "gpu_throttle": ["none", "sw_power_cap", "gpu_idle",
                                           "sw_thermal,sw_power_cap", "none"]})
    quiet, busy = cell_noise(steady), cell_noise(noisy)
    assert quiet["dispersion"] < UNSTABLE_DISPERSION and not quiet["unstable"]
    assert quiet["interleaved"] and not busy["interleaved"]
    assert busy["unstable"] and busy["dispersion"] > UNSTABLE_DISPERSION
    assert busy["load_avg_max"] == 7.5 and busy["gpu_sm_clock_min"] == 990
    assert busy["gpu_throttled"] == "sw_power_cap,sw_thermal"
    assert quiet["gpu_throttled"] == "" and math.isnan(quiet["gpu_sm_clock_min"])
