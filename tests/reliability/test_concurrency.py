"""Two writers at once: the second sweep or scorer on a run is refused; the history index
loses no line when many runs append to it together."""

from __future__ import annotations

import json
import multiprocessing
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.store.history import HistoryIndex
from bench.store.run_store import RunStore
from tests.reliability.conftest import REPO, cli, run_dir, size, write_spec

pytestmark = pytest.mark.slow


def test_second_sweep_and_scorer_on_a_locked_run_are_refused(
        tmp_path: Path, tally: Counter[str]) -> None:
    spec = write_spec(tmp_path, steps=[1])
    root = tmp_path / "runs"
    assert cli("sweep", str(spec), "--out", str(root), "--no-score", "--no-report").code == 0
    run = run_dir(root)
    with RunStore.open(run):  # another process (here: this one) holds the run
        for argv in (["sweep", str(spec), "--out", str(root), "--resume", str(run)],
                     ["score", str(run)]):
            result = cli(*argv)
            tally["concurrent_writers_tried"] += 1
            assert result.one_line_error(), result.err
            assert "in use by another process" in result.err
            tally["concurrent_writers_refused"] += 1


def test_second_sweep_process_is_refused_while_the_first_runs(
        tmp_path: Path, tally: Counter[str]) -> None:
    spec = write_spec(tmp_path, steps=[1, 2, 3, 4], seeds=list(range(20)))  # long enough
    root = tmp_path / "runs"
    command = [sys.executable, "-m", "bench.cli", "sweep", str(spec), "--out", str(root),
               "--no-score", "--no-report"]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(root.glob("*/records.jsonl")):
            time.sleep(0.05)
        run = run_dir(root)
        second = subprocess.run([*command, "--resume", str(run)], cwd=REPO,
                                capture_output=True, text=True, timeout=300)
        tally["concurrent_writers_tried"] += 1
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().startswith("echo-bench: error:")
        assert "in use by another process" in second.stderr
        tally["concurrent_writers_refused"] += 1
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def _append_entries(root: str, worker: int, count: int) -> None:
    index = HistoryIndex(root)
    for i in range(count):
        index.append({"run_id": f"w{worker}-{i}", "spec_name": "x", "status": "complete",
                      "started_at": f"{i:06d}", "counts": {"ok": i}})


def test_history_index_loses_nothing_under_concurrent_appends(
        tmp_path: Path, tally: Counter[str]) -> None:
    workers, each = size(4, 8), size(50, 400)
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_append_entries, args=(str(tmp_path), w, each))
             for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    lines = (tmp_path / "index.jsonl").read_text().splitlines()
    assert len(lines) == workers * each
    assert {json.loads(line)["run_id"] for line in lines} == {
        f"w{w}-{i}" for w in range(workers) for i in range(each)}
    assert len(HistoryIndex(tmp_path).runs()) == workers * each
    tally["index_appends_concurrent"] += workers * each
    tally["index_appends_lost"] += workers * each - len(lines)
