"""SIGKILL a sweep at many points, resume it, and check that nothing is lost or doubled.

One run directory goes through a chain of processes, each killed by an injected fault
(``bench.core.faults``) at a different point: between records, half-way through writing a
record line, during scoring and during the parquet export. A last clean process
resumes and must finish with every generation recorded exactly once, every torn line
detected, reported and repaired, all scores present and a valid parquet table.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tests.reliability.conftest import FULL, cli_subprocess, raw_lines, run_dir, write_spec

pytestmark = pytest.mark.slow

# Each chain: the faults of successive processes on one run. The spec has
# len(steps) cells x 2 prompts x 1 seed generations; scoring runs after each cell.
CI_CHAINS: list[tuple[list[int], list[str]]] = [
    ([1, 2], ["kill_after_record:1", "kill_during_record_write:2", "kill_during_scoring:1",
              "kill_during_parquet"]),
]
FULL_CHAINS: list[tuple[list[int], list[str]]] = [
    *CI_CHAINS,
    # Three cells (6 generations): every N below is reached whatever came before.
    *[([1, 2, 3], [f"kill_after_record:{n}", "kill_during_record_write:1",
                   "kill_during_scoring:1", "kill_during_parquet"]) for n in range(1, 6)],
    *[([1, 2, 3], [f"kill_during_record_write:{n}", "kill_after_record:1",
                   "kill_during_scoring:2", "kill_during_parquet"]) for n in range(2, 5)],
]


@pytest.mark.parametrize(("steps", "chain"), FULL_CHAINS if FULL else CI_CHAINS)
def test_killed_sweeps_resume_with_nothing_lost(
        steps: list[int], chain: list[str], tmp_path: Path, tally: Counter[str]) -> None:
    spec = write_spec(tmp_path, steps=steps)
    root = tmp_path / "runs"
    expected = len(steps) * 2
    torn_lines = 0
    for fault in chain:
        result = cli_subprocess("sweep", str(spec), "--out", str(root), "--no-report",
                                env={"ECHO_BENCH_FAULTS": fault})
        tally["kills_attempted"] += 1
        assert result.returncode == -signal.SIGKILL, (
            f"{fault}: the process was not killed (exit {result.returncode}); "
            f"{result.stderr[-1500:]}")
        tally[f"kill.{fault.split(':')[0]}"] += 1
        run = run_dir(root)
        data = (run / "records.jsonl").read_bytes()
        if data and not data.endswith(b"\n"):
            torn_lines += 1  # a half-written line the next process must repair

    # The same command again (no --resume) finds the unfinished run and completes it.
    final = cli_subprocess("sweep", str(spec), "--out", str(root), "--no-report")
    assert final.returncode == 0, final.stderr[-3000:]
    assert "resuming" in final.stdout
    tally["kills_survived"] += len(chain)
    run = run_dir(root)

    # Torn lines were reported on resume (the chain holds kill_during_record_write).
    assert torn_lines >= 1
    tally["torn_lines_repaired"] += torn_lines

    records = raw_lines(run)  # every line parses: no torn line was accepted
    keys = [str(r["key"]) for r in records]
    assert len(keys) == len(set(keys)) == expected, "each generation recorded exactly once"
    assert all(r["status"] == "ok" for r in records)
    scores: dict[str, dict[str, object]] = {}
    for line in raw_lines(run, "scores.jsonl"):
        scores[str(line["key"])] = line
    assert set(scores) == set(keys), "every generation scored"
    assert all(s["score_status"] == "ok" for s in scores.values())
    frame = pd.read_parquet(run / "records.parquet")
    assert sorted(frame["key"]) == sorted(keys) and frame["wer"].notna().all()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["records"] == expected
    assert not [p for p in run.rglob("*.tmp")], "temporary files of killed writers removed"
    wavs = {p.name for p in (run / "audio").glob("*.wav")}
    assert {Path(str(r["audio_path"])).name for r in records} == wavs
    tally["generations_expected"] += expected
    tally["generations_recorded_once"] += len(set(keys))
    tally["records_lost"] += expected - len(set(keys))


def test_torn_last_line_is_reported_and_repaired(tmp_path: Path, tally: Counter[str]) -> None:
    """The repair on resume says what it dropped (stderr), and the generation runs again."""
    spec = write_spec(tmp_path, steps=[1])
    root = tmp_path / "runs"
    torn = cli_subprocess("sweep", str(spec), "--out", str(root), "--no-score", "--no-report",
                          env={"ECHO_BENCH_FAULTS": "kill_during_record_write:2"})
    assert torn.returncode == -signal.SIGKILL
    run = run_dir(root)
    assert not (run / "records.jsonl").read_bytes().endswith(b"\n")
    resumed = cli_subprocess("sweep", str(spec), "--out", str(root), "--no-score", "--no-report")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "repaired:" in resumed.stderr and "torn last line" in resumed.stderr
    assert "resuming" in resumed.stdout and "1 of 2 generations already done" in resumed.stdout
    assert len(raw_lines(run)) == 2
    tally["kills_attempted"] += 1
    tally["kills_survived"] += 1
    tally["torn_lines_repaired"] += 1
    tally["generations_expected"] += 2
    tally["generations_recorded_once"] += 2
