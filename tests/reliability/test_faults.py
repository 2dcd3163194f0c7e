"""Faults injected into the pipeline and the scorer: recorded per cell, the sweep goes on.

One sweep of six cells (num_steps 1..6, so each label is distinct) runs with a different
fault on five of them: an exception, a CUDA-out-of-memory error, NaN audio, silent audio
and a full disk while writing the WAV; the scorer fails on the files of the sixth. The
sweep must finish, exit 1, name the failed cells in its summary, keep the failures in the
records and score only normal audio.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bench.core import faults
from bench.spec.parser import load_spec
from tests.reliability.conftest import cli, raw_lines, run_dir, write_spec

pytestmark = pytest.mark.slow


def label_of(steps: int) -> str:
    return f"steps={steps} cfg=none"


def test_injected_faults_are_recorded_and_the_sweep_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally: Counter[str]) -> None:
    spec_path = write_spec(tmp_path, steps=[1, 2, 3, 4, 5, 6])
    spec = load_spec(spec_path)
    cell = {c.sampler.num_steps: c for c in spec.cells}
    plan = {
        "raise_in_generation": label_of(1),
        "oom": label_of(2),
        "nan_latents": label_of(3),
        "silent_audio": label_of(4),
        "disk_full_on_audio": cell[5].id,  # WAV names start with the cell id
        "fail_scoring_file": cell[6].id,
    }
    monkeypatch.setenv(faults.ENV, ",".join(f"{k}:{v}" for k, v in plan.items()))
    root = tmp_path / "runs"
    result = cli("sweep", str(spec_path), "--out", str(root), "--no-report")
    tally["faults_injected"] += len(plan)
    tally["fault_sweeps"] += 1

    assert result.code == 1, result.err[-2000:]
    # The summary names each failed cell with its first error.
    summary = result.out
    assert f"failed cell [{cell[1].label}]: InjectedFault: injected fault" in summary
    assert f"failed cell [{cell[2].label}]: RuntimeError: CUDA out of memory" in summary
    assert f"failed cell [{cell[5].label}]: OSError: [Errno 28] No space left" in summary
    assert "2 scoring failures" in summary
    assert "generations: 6 ok, 6 failed" in summary

    run = run_dir(root)
    records = {str(r["key"]): r for r in raw_lines(run)}
    assert len(records) == 12
    by_steps: dict[int, list[dict[str, object]]] = {}
    for r in records.values():
        by_steps.setdefault(int(r["num_steps"]), []).append(r)  # type: ignore[call-overload]
    for steps, error_type, phase in ((1, "InjectedFault", "generation"),
                                     (2, "RuntimeError", "generation"),
                                     (5, "OSError", "write-audio")):
        assert all(r["status"] == "failed" and r["error_type"] == error_type
                   and r["error_phase"] == phase for r in by_steps[steps]), steps
    assert all(r["status"] == "ok" and r["audio_nan"] for r in by_steps[3])
    assert all(r["status"] == "ok" and r["audio_silent"] for r in by_steps[4])
    # No partial WAV of the full disk is left behind.
    assert not list((run / "audio").glob("*.tmp"))
    assert not [p for p in (run / "audio").iterdir() if p.name.startswith(cell[5].id)]

    scores = {str(s["key"]): s for s in raw_lines(run, "scores.jsonl")}
    status = {k: scores[k]["score_status"] for k in scores}
    for r in by_steps[3]:
        assert status[str(r["key"])] == "skipped_nan_audio"
    for r in by_steps[3] + by_steps[4]:
        # Not transcribed, but scored as saying nothing: every reference word deleted.
        line = scores[str(r["key"])]
        assert line["wer"] == 1.0 and line["transcript"] == "" and line["hits"] == 0
        assert line["deletions"] == line["ref_words"] > 0
    for r in by_steps[4]:
        assert status[str(r["key"])] == "skipped_silent_audio"
    for r in by_steps[6]:
        assert status[str(r["key"])] == "failed"
        assert "injected fault" in str(scores[str(r["key"])]["score_error"])
    assert not any(str(r["key"]) in scores for steps in (1, 2, 5) for r in by_steps[steps])
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["failed"] == 6
    tally["failed_generations_recorded"] += 6
    tally["nan_or_silent_flagged"] += len(by_steps[3]) + len(by_steps[4])
    tally["scoring_failures_recorded"] += len(by_steps[6])


def test_faults_are_off_unless_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.ENV, raising=False)
    assert faults.argument("oom") is None and not faults.matches("oom", "anything")
    faults.generation("steps=1")  # no-op
    monkeypatch.setenv(faults.ENV, "not_a_fault")
    with pytest.raises(ValueError, match="unknown fault"):
        faults.argument("oom")
