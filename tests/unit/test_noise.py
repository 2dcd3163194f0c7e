"""Per-cell timing dispersion, the unstable flag and the machine's state beside them."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from bench.analysis.flop_model import sampling_flops
from bench.analysis.noise import (
    UNSTABLE_DISPERSION,
    cell_noise,
    dispersion,
    machine_pace,
    pace_range,
    repeat_ratios,
    work_ratios,
)

#: Seconds per unit of each stage's work: a made-up machine, only their constancy matters.
RATES = {"t_text_encode": 2e-5, "t_speaker_encode": 1e-5, "t_sampling": 4e-12,
         "t_decode": 3e-4}


def test_dispersion_is_the_p10_p90_range_over_the_median() -> None:
    assert dispersion([1.0, 1.0, 1.0, 1.0]) == 0.0
    # Percentiles of 1..5 (linear interpolation): p10 1.4, median 3, p90 4.6.
    assert dispersion([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(3.2 / 3)
    assert math.isnan(dispersion([1.0, 2.0]))  # too few to say
    assert dispersion([None, float("nan"), 2.0, 2.0, 2.0]) == 0.0


def varied_prompts(burst: set[int] | None = None) -> pd.DataFrame:
    """A dozen generations of one cell whose prompts differ widely (15 to 900 text bytes,
    1 to 4 chunks, speaker references of 60 to 400 tokens), each stage timed at exactly
    :data:`RATES` per unit of work; the generations in ``burst`` ran twice as slow."""
    rows: list[dict[str, Any]] = []
    for i in range(12):
        chunks = 1 + i % 4
        text = "x" * (15 + 80 * i)
        row: dict[str, Any] = {
            "prompt_id": f"p{i}", "seed": 0, "repeat": 0, "model": "random:tiny",
            "num_steps": 8, "sequence_length": 640, "n_chunks": chunks, "nfe": 16 * chunks,
            "normalized_text": text, "speaker_tokens": 60 + 30 * i}
        work = {"t_text_encode": len(text) + chunks,
                "t_speaker_encode": chunks * row["speaker_tokens"],
                "t_sampling": sampling_flops(row), "t_decode": chunks * 640}
        slow = 2.0 if i in (burst or set()) else 1.0
        for stage, rate in RATES.items():
            row[stage] = slow * rate * work[stage]
        row["t_total"] = sum(row[stage] for stage in RATES)
        rows.append(row)
    return pd.DataFrame(rows)


def test_equal_time_per_unit_of_work_is_not_unstable_however_varied_the_prompts() -> None:
    steady = varied_prompts()
    # The premise: the raw totals spread far beyond the threshold (that is the workload).
    assert dispersion(steady["t_total"]) > 3 * UNSTABLE_DISPERSION
    noise = cell_noise(steady)
    assert noise["dispersion"] == pytest.approx(0.0, abs=1e-9)
    assert work_ratios(steady) == pytest.approx([1.0] * len(steady))
    assert math.isnan(noise["repeat_dispersion"])  # no repeats in this spec
    assert not noise["unstable"]


def test_a_burst_on_a_few_generations_is_unstable() -> None:
    noise = cell_noise(varied_prompts(burst={3, 7, 10}))
    assert noise["unstable"] and noise["dispersion"] > UNSTABLE_DISPERSION
    ratios = work_ratios(varied_prompts(burst={3, 7, 10}))
    # The cell's median rate comes from the undisturbed majority: the burst reads as 2x.
    assert ratios[[3, 7, 10]] == pytest.approx([2.0] * 3)


def test_one_stray_generation_in_a_dozen_is_not_a_burst() -> None:
    # A single slow generation (a garbage-collector pause) moves neither p10 nor p90.
    assert not cell_noise(varied_prompts(burst={5}))["unstable"]


def test_repeats_of_one_prompt_and_seed_are_compared_with_each_other() -> None:
    # Three prompts of very different cost, each repeated three times with the same time:
    # no stage times, no work model needed, nothing unstable.
    base = {"a": 0.2, "b": 1.0, "c": 5.0}
    steady = pd.DataFrame([{"prompt_id": p, "seed": 0, "repeat": r, "t_total": t}
                           for p, t in base.items() for r in range(3)])
    quiet = cell_noise(steady)
    assert quiet["repeat_dispersion"] == 0.0 and not quiet["unstable"]
    assert math.isnan(quiet["dispersion"])  # no NFE: no unit of work to divide by
    burst = steady.copy()
    burst.loc[(burst["prompt_id"] == "b") & (burst["repeat"] == 1), "t_total"] *= 2
    burst.loc[(burst["prompt_id"] == "c") & (burst["repeat"] == 2), "t_total"] *= 2
    assert cell_noise(burst)["unstable"]
    # A prompt and seed generated once has nothing to be compared with.
    assert len(repeat_ratios(steady[steady["repeat"] == 0])) == 0


def test_scattered_repeats_are_flagged_unstable_with_the_machine_state() -> None:
    # Five repeats of one prompt and seed (the same work each time): spread is noise.
    same = {"prompt_id": ["p"] * 5, "seed": [0] * 5}
    steady = pd.DataFrame({**same, "t_total": [1.00, 1.01, 0.99, 1.02, 1.00],
                           "load_avg_1m": [0.5, 0.7, 0.6, 0.5, 0.5],
                           "order_interleaved": [True] * 5})
    noisy = pd.DataFrame({**same, "t_total": [1.0, 1.6, 0.9, 2.4, 1.1],
                          "load_avg_1m": [0.5, 6.0, 0.6, 7.5, 0.4],
                          "gpu_sm_clock_mhz": [1755, 1200, 1755, 990, 1755],
                          "gpu_throttle": ["none", "sw_power_cap", "gpu_idle",
                                           "sw_thermal,sw_power_cap", "none"]})
    quiet, busy = cell_noise(steady), cell_noise(noisy)
    assert quiet["repeat_dispersion"] < UNSTABLE_DISPERSION and not quiet["unstable"]
    assert quiet["interleaved"] and not busy["interleaved"]
    assert busy["unstable"] and busy["repeat_dispersion"] > UNSTABLE_DISPERSION
    assert busy["load_avg_max"] == 7.5 and busy["gpu_sm_clock_min"] == 990
    assert busy["gpu_throttled"] == "sw_power_cap,sw_thermal"
    assert quiet["gpu_throttled"] == "" and math.isnan(quiet["gpu_sm_clock_min"])


def interleaved_run(cells: int, slow: Callable[[int, int], float],
                    interleaved: bool = True) -> pd.DataFrame:
    """``cells`` cells of :func:`varied_prompts`, run in rounds (one generation of each
    cell per prompt, in cell order) when ``interleaved``, else one cell after the other;
    ``slow(cell, i)`` scales every stage of the cell's ``i``-th generation."""
    frames = []
    for c in range(cells):
        cell = varied_prompts()
        cell["cell_id"] = f"c{c}"
        cell["status"] = "ok"
        cell["order_group"] = 0
        cell["order_interleaved"] = interleaved
        rounds = cell.index.to_numpy()
        cell["order_seq"] = rounds * cells + c if interleaved else c * len(cell) + rounds
        factor = [slow(c, i) for i in cell.index]
        for stage in [*RATES, "t_total"]:
            cell[stage] = cell[stage] * factor
        frames.append(cell)
    return pd.concat(frames, ignore_index=True)


def flagged(run: pd.DataFrame) -> list[str]:
    pace = machine_pace(run)
    return [str(cell_id) for cell_id, cell in run.groupby("cell_id")
            if cell_noise(cell, pace)["unstable"]]


def test_a_slowdown_of_the_whole_machine_in_an_interleaved_run_is_the_runs_not_a_cells() -> None:
    # Rounds 4-7 of 12 ran at half speed for every cell: a busy neighbour, not the cells.
    run = interleaved_run(8, lambda c, i: 2.0 if 4 <= i <= 7 else 1.0)
    # The premise: without the pace, every cell reads as unstable.
    assert all(cell_noise(cell)["unstable"] for _, cell in run.groupby("cell_id"))
    assert flagged(run) == []
    low, high = pace_range(machine_pace(run)) or (math.nan, math.nan)
    assert low == pytest.approx(1.0) and high == pytest.approx(2.0)


def test_a_burst_on_one_cell_stays_that_cells_in_an_interleaved_run() -> None:
    run = interleaved_run(8, lambda c, i: 2.0 if c == 5 and i in (3, 7, 10) else 1.0)
    assert flagged(run) == ["c5"]
    # On top of a machine-wide slowdown too.
    both = interleaved_run(8, lambda c, i: (2.0 if 4 <= i <= 7 else 1.0)
                           * (2.0 if c == 5 and i in (1, 9, 10) else 1.0))
    assert flagged(both) == ["c5"]


def test_a_slowdown_in_a_sequential_run_stays_in_the_cells_it_hit() -> None:
    # One cell after the other: the slow stretch (generations 40-55 of 96) biased the
    # medians of the cells it hit, c3 and c4, and is theirs to show.
    run = interleaved_run(8, lambda c, i: 2.0 if 40 <= c * 12 + i < 56 else 1.0,
                          interleaved=False)
    assert flagged(run) == ["c3", "c4"]
    assert pace_range(machine_pace(run)) is None
