"""The history-aware nightly on constructed pairs of nights (tests/nightly_runs.py): an
unchanged night stops most cells after the first batch and flags nothing; a planted
slowdown or WER step is flagged as the full comparison flags it; the command's JSON and
its refusal of runs that do not pair."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.analysis.nightly import NightSettings, batches, comparable, twin_table
from bench.analysis.nightly_replay import replay_nights
from bench.cli import main
from bench.store.records import records_frame
from tests.adaptive_runs import write_run
from tests.nightly_runs import CASES, SLOW_CELL, WER_CELL, nightly_pair, write_pair


def test_an_unchanged_night_flags_nothing_and_spends_little() -> None:
    last, tonight = (records_frame(r) for r in nightly_pair(5, CASES["same"]))
    out = replay_nights(last, tonight, replays=3, seed=0)
    assert out.full_flags == [] and not any(out.flagged.values())
    # Every cell ran the first 3 of 24 prompts; most stopped there.
    assert 0.05 < out.compute_spent_mean < 0.5
    assert out.agreement == 1.0


@pytest.mark.parametrize(("case", "cell"), [("slower", SLOW_CELL), ("wer", WER_CELL)])
def test_a_planted_change_is_flagged_like_the_full_comparison(case: str, cell: str) -> None:
    last, tonight = (records_frame(r) for r in nightly_pair(6, CASES[case]))
    out = replay_nights(last, tonight, replays=5, seed=0)
    assert out.full_flags == [cell]
    assert out.flagged[cell] == 1.0
    assert sum(out.flagged.values()) == 1.0  # no other cell
    metric = "speed" if case == "slower" else "wer"
    assert out.full[cell].metrics[metric].state == "step"


def test_batches_and_pairing() -> None:
    order = [f"p{k}" for k in range(7)]
    assert batches(order, NightSettings(first_batch=3, batch=2)) == [
        ("p0", "p1", "p2"), ("p3", "p4"), ("p5", "p6")]
    last, tonight = (records_frame(r) for r in nightly_pair(7, CASES["same"], prompts=4))
    assert comparable(last, tonight) is None
    assert len(twin_table(last, tonight)) == len(tonight)
    other = tonight.assign(seed=tonight["seed"] + 5)
    assert "no twin last night" in (comparable(last, other) or "")


def test_nightly_replay_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    last, tonight = write_pair(tmp_path, 8, CASES["slower"], prompts=10)
    assert main(["nightly-replay", str(last), str(tonight), "--replays", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["replays"] == 3 and out["full_flags"] == [SLOW_CELL]
    assert out["flagged"][SLOW_CELL] == 1.0 and 0 < out["compute_spent_mean"] < 1
    odd = write_run(tmp_path / "odd", "other", nightly_pair(8, CASES["same"], prompts=3,
                                                            seeds=1)[0][:5])
    assert main(["nightly-replay", str(odd), str(tonight)]) == 2
    assert "cannot be paired" in capsys.readouterr().err
