"""``echo-bench score`` with quality metrics and ``echo-bench models``: missing models are
one line and exit 2 while everything else is scored; the models folder is listed and filled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.cli import main
from bench.store.layout import record_key
from bench.store.run_store import RunStore


def _run_with_one_generation(root: Path) -> Path:
    spec = {"measure": {"asr": "random:tiny", "asr_device": "cpu"}}
    with RunStore.create(root, spec=spec, spec_name="t", spec_hash="h", environment={}) as store:
        (store.path / "audio").mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        t = np.arange(int(3.0 * 44_100)) / 44_100
        wav = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
        sf.write(str(store.path / "audio" / "a.wav"), wav + 0.01 * rng.standard_normal(t.size), 44_100)
        store.append({"key": record_key("c", "p", 0, 0), "cell_id": "c", "status": "ok",
                      "prompt_id": "p", "text": "hello there", "audio_path": "audio/a.wav"})
        return store.path


def test_score_records_what_it_can_and_names_the_missing_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ECHO_BENCH_WHISPER_CACHE", str(tmp_path / "whisper"))
    run = _run_with_one_generation(tmp_path / "runs")
    models = tmp_path / "models"
    code = main(["score", str(run), "--sim", "wavlm-ecapa", "--mos", "dnsmos",
                 "--models-dir", str(models)])
    out = capsys.readouterr().out
    assert code == 2
    [line] = [x for x in out.splitlines() if x.startswith("sim not scored:")]
    assert "wavlm_large_finetune.pth" in line and str(models) in line
    assert f"echo-bench models fetch wavlm-ecapa --models-dir {models}" in line
    with RunStore.open(run) as store:
        [record] = store.records()
    assert record["asr_model"].startswith("whisper:random:") and record["wer"] is not None
    assert record["sim_skipped"].startswith("model missing: ")
    assert 1.0 <= record["dnsmos_ovrl"] <= 5.0 and record["dnsmos_model"].startswith("dnsmos-p835:")


def test_score_refuses_an_unknown_mos_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_with_one_generation(tmp_path / "runs")
    assert main(["score", str(run), "--mos", "pesq"]) == 2
    assert "--mos: unknown metric pesq" in capsys.readouterr().err


def test_models_list_and_fetch_from_a_local_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    assert main(["models", "list", "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    assert f"models folder: {models}" in out and "wavlm-ecapa" in out and "missing" in out
    copy = tmp_path / "download.pt"
    copy.write_bytes(b"weights")
    assert main(["models", "fetch", "utmos22-strong", "--from", str(copy),
                 "--models-dir", str(models)]) == 0
    assert (models / "utmos22_strong_step7459_v1.pt").read_bytes() == b"weights"
    assert main(["models", "fetch", "nope", "--models-dir", str(models)]) == 2
