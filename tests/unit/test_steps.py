"""History's step changes: twins paired across runs, one anytime-valid interval per figure,
and the property of issue 15: a uniform 15 % slowdown over mixed prompt lengths is
flagged, no change is not."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.analysis.history import flag_step_changes, paired_step_change

SIMULATIONS = 200


def mixed_prompt_runs(rng: np.random.Generator, slowdown: float, *, noise: float = 0.05,
                      seeds: int = 2) -> tuple[dict[str, float], dict[str, float]]:
    """Per-generation RTFs of two runs over 8 short prompts (RTF 1.5-3: fixed costs over
    little speech) and 8 long ones (RTF 0.2-0.4), each generation with ``noise``
    (log-normal sigma) timing jitter; the second run is ``slowdown`` times slower."""
    true = np.concatenate([rng.uniform(1.5, 3.0, 8), rng.uniform(0.2, 0.4, 8)])
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    for p, rtf in enumerate(true):
        for seed in range(seeds):
            key = f"p{p}/{seed}/0"
            before[key] = float(rtf * rng.lognormal(0.0, noise))
            after[key] = float(rtf * slowdown * rng.lognormal(0.0, noise))
    return before, after


def flag_rate(slowdown: float, seed: int) -> float:
    rng = np.random.default_rng(seed)
    flagged = 0
    for _ in range(SIMULATIONS):
        before, after = mixed_prompt_runs(rng, slowdown)
        flagged += paired_step_change(before, after).step != ""
    return flagged / SIMULATIONS


def test_uniform_15_percent_slowdown_over_mixed_prompts_is_flagged() -> None:
    assert flag_rate(1.15, seed=1) >= 0.95


def test_no_change_is_not_flagged() -> None:
    assert flag_rate(1.0, seed=2) <= 0.10


def test_a_speedup_is_flagged_faster_and_a_small_change_is_not_a_step() -> None:
    rng = np.random.default_rng(3)
    before, after = mixed_prompt_runs(rng, 1 / 1.3)
    change = paired_step_change(before, after)
    assert change.step == "faster" and change.ratio == pytest.approx(1 / 1.3, rel=0.05)
    assert change.high < 1.0 and change.n_pairs == 32  # surely changed
    # Surely a change, but within the factor (x1.05 < x1.1): no step.
    before, after = mixed_prompt_runs(rng, 1.05, noise=0.005)
    small = paired_step_change(before, after)
    assert 1.0 < small.low <= small.high < 1.1 and small.step == ""


def test_only_twins_are_compared() -> None:
    before = {"a/0/0": 1.0, "b/0/0": 2.0, "gone/0/0": 100.0}
    after = {"b/0/0": 4.0, "a/0/0": 2.0, "new/0/0": 0.01, "c/0/0": math.nan}
    change = paired_step_change(before, after)
    assert change.n_pairs == 2 and change.ratio == pytest.approx(2.0)
    # Two pairs, both exactly x2: fewer twins than an interval at 95 % rests on, no step.
    assert change.step == ""
    assert paired_step_change({"a": 1.0}, {"b": 1.0}).n_pairs == 0


def test_flag_step_changes_pairs_each_run_with_the_cells_previous_one() -> None:
    rng = np.random.default_rng(4)
    first, slow = mixed_prompt_runs(rng, 1.2)
    same = {k: v * 1.001 for k, v in slow.items()}
    history = pd.DataFrame([
        {"run_id": "r1", "cell_id": "c", "rtfs": first},
        {"run_id": "r1", "cell_id": "d", "rtfs": first},
        {"run_id": "r2", "cell_id": "c", "rtfs": slow},
        {"run_id": "r3", "cell_id": "c", "rtfs": same},
    ])
    out = flag_step_changes(history)
    assert list(out["step"]) == ["", "", "slower", ""]
    assert math.isnan(out.loc[0, "ratio"]) and out.loc[0, "n_pairs"] == 0
    assert out.loc[2, "n_pairs"] == 32 and out.loc[3, "ratio"] == pytest.approx(1.001)
