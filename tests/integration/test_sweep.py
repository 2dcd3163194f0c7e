"""End-to-end sweeps of the tiny random model through the real CLI and store."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.backends.local import LocalBackend
from bench.cli import main
from bench.run.runner import run_sweep
from bench.spec.parser import load_spec
from echo_tts.pipeline import EchoPipeline

EXPECTED = 4 * 2 * 2  # cells x prompts x seeds


def records_of(root: Path) -> list[dict[str, object]]:
    (run,) = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]


def test_sweep_records_are_complete_and_typed(tiny_spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    assert main(["sweep", str(tiny_spec), "--out", str(out)]) == 0
    records = records_of(out)
    assert len(records) == EXPECTED
    assert len({r["key"] for r in records}) == EXPECTED
    spec = load_spec(tiny_spec)
    nfe = {c.id: c.sampler.nfe() for c in spec.cells}
    for r in records:
        assert r["status"] == "ok"
        assert r["nfe"] == nfe[r["cell_id"]] * r["n_chunks"]  # type: ignore[index]
        for stage in ("t_text_encode", "t_speaker_encode", "t_sampling", "t_decode", "t_total"):
            assert isinstance(r[stage], float) and r[stage] >= 0  # type: ignore[operator]
        assert r["t_total"] >= r["t_sampling"]  # type: ignore[operator]
        assert r["rtf_full"] == pytest.approx(r["t_total"] / r["full_seconds"])  # type: ignore[operator]
        assert r["random_weights"] is True and isinstance(r["peak_rss_bytes"], int)
        assert (out / next(p.name for p in out.iterdir() if p.is_dir()) / str(r["audio_path"])).is_file()
    run = next(p for p in out.iterdir() if p.is_dir())
    frame = pd.read_parquet(run / "records.parquet")
    assert len(frame) == EXPECTED
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["ok"] == EXPECTED
    assert manifest["environment"]["spec_hash"] == spec.hash


def test_failing_generations_are_recorded_and_the_sweep_goes_on(
        tiny_spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = EchoPipeline.synthesize_long

    def flaky(self: EchoPipeline, text: str, *args: object, **kwargs: object) -> object:
        sampler = args[1]
        if sampler.sequence_length == 24 and sampler.cfg_mode == "none":  # type: ignore[attr-defined]
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(self, text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(EchoPipeline, "synthesize_long", flaky)
    outcome = run_sweep(load_spec(tiny_spec), LocalBackend(), root=tmp_path / "runs", progress=False)
    assert outcome.exit_code == 1
    assert outcome.failed == 4 and outcome.ok == EXPECTED - 4
    (label,) = outcome.failures
    assert "len=24" in label and "out of memory" in outcome.failures[label]
    failed = [r for r in records_of(tmp_path / "runs") if r["status"] == "failed"]
    assert {r["error_type"] for r in failed} == {"RuntimeError"}


def test_bad_spec_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('[model]\nmodel = "random:tiny"\n[grid]\nnum_steps = 40\n')
    assert main(["sweep", str(spec), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "num_steps" in err[0] and "Traceback" not in err[0]


def test_dry_run_lists_cells_and_nfe(tiny_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", str(tiny_spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 cells" in out and f"= {EXPECTED} generations" in out
    # NFE: none = 2 steps x 1 row; independent = 3 rows on t=0.999, 1 row on t=0.4995.
    assert "          2  steps=2 cfg=none" in out and "          4  steps=2 cfg=independent" in out


def test_missing_weights_stop_the_sweep_with_one_line(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "missing.toml"
    spec.write_text('[model]\nmodel = "/nonexistent/echo-weights"\ncodec = "random:tiny"\n'
                    'pca = "random:tiny"\ndtype = "float32"\ndevice = "cpu"\n'
                    '[prompts]\nids = ["en-002"]\n[grid]\nnum_steps = [2]\n'
                    '[measure]\nwarmup = 0\nscore = false\n')
    assert main(["sweep", str(spec), "--out", str(tmp_path / "runs"), "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "/nonexistent/echo-weights" in err[0]


def test_a_history_spec_runs_in_full_then_is_checked_against_that_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.spec.history_aware import HISTORY_LOG
    from bench.store.records import load_records
    from tests.integration.conftest import TINY_SPEC

    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC.format(repeats=1, score="true") + "[history]\nfirst_batch = 2\n")
    out = tmp_path / "runs"
    assert main(["sweep", str(spec), "--out", str(out), "--no-report"]) == 0
    assert "no complete full run of tiny" in capsys.readouterr().out
    first = next(p for p in out.iterdir() if p.is_dir())
    assert main(["sweep", str(spec), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"history: checking against {first.name}" in said and "history look 0" in said
    second = next(p for p in out.iterdir() if p.is_dir() and p != first)
    log = json.loads((second / HISTORY_LOG).read_text())
    assert log["reference"]["run_id"] == first.name and log["stages"][0]["draws"] == 2
    # Scored after each look (the random ASR makes quality no figure, and says so).
    assert log["quality"] == "not compared: random weights or ASR"
    ran = load_records(second)
    assert ran["wer"].notna().all() and len(ran) <= EXPECTED
    assert "Checked against the last full run" in (second / "report.html").read_text()
