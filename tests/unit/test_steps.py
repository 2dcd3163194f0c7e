"""History's step changes: twins paired across runs, the step rule of
bench.analysis.steps per figure (an anytime-valid interval wholly beyond the step size),
its sizes the nightly's, and the property of issue 15: a uniform 15 % slowdown over mixed
prompt lengths is flagged, no change is not."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.analysis.history import (
    STEP_RULES,
    describe_rule,
    flag_step_changes,
    paired_step_change,
    step_changes,
)
from bench.analysis.nightly import NightSettings
from bench.analysis.steps import METRICS, StepSizes

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


def flag_rate(slowdown: float, seed: int, noise: float = 0.05) -> float:
    rng = np.random.default_rng(seed)
    flagged = 0
    for _ in range(SIMULATIONS):
        before, after = mixed_prompt_runs(rng, slowdown, noise=noise)
        flagged += paired_step_change(before, after).step != ""
    return flagged / SIMULATIONS


def test_uniform_15_percent_slowdown_over_mixed_prompts_is_flagged() -> None:
    # With the constructed nightly's 3 % timing jitter (bench/scripts/nightly_runs.py) the
    # interval over 32 twins is about +-2.6 %, so it lies beyond x1.1 almost always.
    assert flag_rate(1.15, seed=1, noise=0.03) >= 0.95


def test_no_change_is_not_flagged() -> None:
    assert flag_rate(1.0, seed=2) <= 0.10


def test_a_change_beyond_the_size_is_a_step_only_when_its_interval_is() -> None:
    # 12 % slower with 5 % jitter: the estimate lies beyond x1.1 but its interval (about
    # +-4.5 % over 32 twins) reaches below it, so the rule cannot say it is a step.
    rng = np.random.default_rng(5)
    changes = [paired_step_change(*mixed_prompt_runs(rng, 1.12)) for _ in range(50)]
    beyond = [c for c in changes if c.ratio > 1.1]
    assert len(beyond) >= 25 and all(c.low > 1.0 for c in beyond)
    assert all(c.step == "" for c in beyond if c.low <= 1.1)
    assert all(c.step == "slower" for c in changes if c.low > 1.1)


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
    # A figure without pairs is still named: it must not pass for the speed change.
    changes = step_changes({"rtf": before, "sim": {"a/0/0": math.nan}},
                           {"rtf": after, "sim": {"a/0/0": 0.5}})
    assert [(c.metric, c.n_pairs) for c in changes] == [("rtf", 2), ("sim", 0)]


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


def test_history_and_the_nightly_read_the_same_step_sizes() -> None:
    sizes = StepSizes()
    assert NightSettings().sizes == sizes
    assert sorted(rule.step_metric for rule in STEP_RULES) == sorted(METRICS)
    # Each figure changed by 1.6 sizes (little noise) is a step, by 0.6 sizes is not: the
    # sizes history applies are StepSizes' (0.6 of SIM's or WER's is beyond the old
    # gate-margin sizes, 0.01 and 0.5 points).
    rng = np.random.default_rng(6)
    keys = [f"p{k}/0/0" for k in range(40)]
    for rule in STEP_RULES:
        size = sizes.shown(rule.step_metric)
        for multiple, flagged in ((1.6, True), (0.6, False), (-1.6, True)):
            base = rng.uniform(2.0, 4.0, len(keys))
            jitter = rng.normal(0.0, 0.1, len(keys))
            if rule.step_metric == "speed":
                after = base * size ** (multiple + 0.1 * jitter)
                weights = None
            elif rule.step_metric == "wer":
                weights = rng.integers(20, 60, len(keys)).astype(float)
                base = base * weights / 100  # word errors
                after = base + (multiple + 0.1 * jitter) * size / 100 * weights
            else:
                after = base + (multiple + 0.1 * jitter) * size
                weights = None
            figures = [{rule.metric: dict(zip(keys, values, strict=True))}
                       for values in (base, after)]
            if rule.weight is not None and weights is not None:
                for figs in figures:
                    figs[rule.weight] = dict(zip(keys, weights, strict=True))
            [change] = step_changes(*figures, rules=[rule])
            assert (change.step != "") == flagged, (rule.metric, multiple, change)
    # and history and the dashboard print those sizes
    text = describe_rule()
    assert "x1.1 " in text and "corpus WER 1 point," in text and "SIM 0.02" in text
    assert "UTMOS 0.1" in text and "DNSMOS OVRL 0.1" in text
