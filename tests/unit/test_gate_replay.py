"""Simulated gates with a known truth (issue 32): an identical candidate is rarely
FAILed however many rounds are added, a 2x slower one FAILs within a look or two, a
+1.5-point WER candidate FAILs; and the command's JSON shape."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from bench.cli import main
from bench.gate.replay import CASES, Design, _draw, _looks, simulate

BY_NAME = {c.name: c for c in CASES}


def test_identical_candidate_is_rarely_failed_with_rounds_added() -> None:
    design = Design(n_prompts=40)
    result = simulate(BY_NAME["identical"], 200, seed=7, design=design)
    assert result.fail_rate <= 0.05
    # Undecided gates ran every round of the budget: rounds were added.
    assert result.p90_pairs == design.n_prompts * design.budget_seeds


def test_a_clear_regression_stops_early_and_a_wer_loss_fails() -> None:
    slow = simulate(BY_NAME["slower-2x"], 200, seed=8)
    assert slow.fail_rate == 1.0 and slow.median_pairs <= 10
    worse = simulate(BY_NAME["wer-plus-1.5"], 200, seed=9)
    assert worse.fail_rate >= 0.9 and worse.pass_rate <= 0.05


def test_looks_follow_the_gate_passes() -> None:
    looks = _looks(Design(n_prompts=10, seeds=2))  # budget 6 seeds: pass 0 + 4 passes
    ends = [end for end, _ in looks]
    assert ends[:3] == [8, 16, 20]  # 4, 4 and 2 prompts under 2 seeds
    assert ends[3:6] == [24, 28, 30]  # then one seed per pass
    assert ends[-1] == 60 and [seen for _, seen in looks][:3] == [4, 8, 10]
    assert np.all(np.diff(ends) > 0)


def test_gate_replay_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gate-replay", "--gates", "20", "--prompts", "24", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = [c["name"] for c in out["cases"]]
    assert {"identical", "slower-2x", "slower-5pct", "wer-plus-1.5"} <= set(names)
    for case in out["cases"]:
        assert case["gates"] == 20
        assert {"fail_rate", "pass_rate", "median_pairs", "p90_pairs"} <= set(case)
    assert main(["gate-replay", "--gates", "0"]) == 2
    assert "--gates must be at least 1" in capsys.readouterr().err


def test_looking_after_every_stage_needs_the_anytime_interval() -> None:
    # A candidate exactly at the speed factor: the anytime gate FAILs it at most alpha of
    # the time however many looks; a fixed-level 90 % interval looked at after every stage
    # (adding rounds until something looks significant) FAILs it far more often.
    case, design = BY_NAME["slower-5pct"], Design()
    anytime = simulate(case, 200, seed=11, design=design)
    log_ratio = _draw(case, 200, np.random.default_rng(11), design)["log_ratio"]
    threshold = math.log(design.thresholds.speed_factor)
    failed, done = np.zeros(200, dtype=bool), np.zeros(200, dtype=bool)
    for end, _ in _looks(design):
        mean, se = log_ratio[:end].mean(0), log_ratio[:end].std(0, ddof=1) / math.sqrt(end)
        half = stats.t.ppf(0.95, end - 1) * se
        failed |= ~done & (mean - half > threshold)
        done |= (mean - half > threshold) | (mean + half < threshold)
    assert anytime.fail_rate <= 0.05
    assert failed.mean() > 0.15
