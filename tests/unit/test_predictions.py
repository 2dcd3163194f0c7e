"""The predictions section from constructed runs: a row per proposal, verdicts, rendering."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from bench.analysis.predictions import measure_predictions
from bench.analysis.prices import load_prices
from bench.report import predictions as predictions_report

PROMPTS = [f"p{i}" for i in range(6)]


def _records(cell: str, *, latency: float, device: str = "cpu", ok: bool = True,
             wer: float | None = None, random: bool = True, **extra: Any) -> list[dict[str, Any]]:
    rows = []
    for i, prompt in enumerate(PROMPTS):
        jitter = 1 + 0.01 * i
        row: dict[str, Any] = {
            "cell_id": cell, "cell_label": cell, "prompt_id": prompt, "seed": 0, "repeat": 0,
            "status": "ok" if ok else "failed", "device": device,
            "device_name": "cpu" if device == "cpu" else "NVIDIA A10G",
            "gpu": None if device == "cpu" else "A10G", "model": "random:tiny" if random
            else "jordand/echo-tts-base", "random_weights": random,
            "error": None if ok else "OutOfMemoryError: CUDA out of memory",
        }
        if ok:
            row.update(latency_seconds=latency * jitter, ttfb_seconds=latency * jitter / 2,
                       compute_seconds=latency * jitter, audio_seconds=24.0, rtf=latency / 24,
                       num_steps=40, cfg_mode="independent", sequence_length=640,
                       peak_rss_bytes=2e9, n_chunks=2, normalized_text="x" * 300,
                       prompt_category="passage")
            if device != "cpu":
                row["peak_reserved_bytes"] = 9e9
            if wer is not None:
                row.update(wer=wer + 0.001 * i, quality_meaningful=not random)
        row.update(extra)
        rows.append(row)
    return rows


def _manifest(predictions: list[dict[str, Any]]) -> dict[str, Any]:
    defaults: dict[str, Any] = {"gpu": None, "proposal": "", "speedup": None, "cost_factor": None,
                "measure": "latency", "vram_gb": None, "reference_seconds": None,
                "reference_audio_seconds": None, "category": None, "source": "",
                "candidate_cell": None, "change": {}}
    return {"spec": {"predictions": [dict(defaults, **p) for p in predictions]},
            "environment": {"cpu_count": 2}}


def test_cpu_run_renders_a_row_for_every_proposal_with_not_measurable_rows() -> None:
    records = pd.DataFrame(
        _records("base", latency=12.0)
        + _records("steps", latency=9.0)
        + _records("block", latency=12.0, ttfb_seconds=1.0)
        + _records("conc", latency=20.0, round_wall_seconds=20.0, round_requests=2)
        + _records("chunks", latency=6.5, chunk_parallel_mode="simulated-one-device")
        + _records("lowvram", latency=11.0)
        + _records("oom", latency=0, ok=False))
    manifest = _manifest([
        {"name": "baseline", "baseline_cell": "base", "reference_seconds": 12.0,
         "reference_audio_seconds": 48.0, "category": "passage"},
        {"name": "30 steps", "baseline_cell": "base", "candidate_cell": "steps", "speedup": 1.3},
        {"name": "blockwise", "baseline_cell": "base", "candidate_cell": "block",
         "measure": "ttfb"},
        {"name": "2 concurrent", "baseline_cell": "base", "candidate_cell": "conc",
         "measure": "throughput", "vram_gb": 24},
        {"name": "2 containers", "baseline_cell": "base", "candidate_cell": "chunks",
         "speedup": 2.0, "cost_factor": 2.0},
        {"name": "low VRAM", "baseline_cell": "base", "candidate_cell": "lowvram",
         "measure": "memory", "vram_gb": 8},
        {"name": "oom", "baseline_cell": "base", "candidate_cell": "oom", "speedup": 1.5},
    ])
    rows = {r.name: r for r in measure_predictions(records, manifest, load_prices(), n_boot=200)}
    assert list(rows) == ["baseline", "30 steps", "blockwise", "2 concurrent", "2 containers",
                          "low VRAM", "oom"]
    assert rows["baseline"].verdict == "not measurable here"  # CPU, tiny model vs an A10G
    assert rows["baseline"].measured_seconds is not None
    assert rows["baseline"].measured_seconds.estimate == pytest.approx(12 * 1.025, rel=1e-6)
    steps = rows["30 steps"]
    assert steps.speedup is not None and steps.speedup.estimate == pytest.approx(12 / 9)
    assert steps.verdict == "not measurable here" and "on CPU" in steps.why
    block = rows["blockwise"]
    # Baseline TTFB (its first chunk) is half its latency: 6 s x the prompts' jitter, vs 1 s.
    assert block.speedup is not None and block.speedup.estimate == pytest.approx(6 * 1.025)
    assert block.verdict == "not measurable here"
    conc = rows["2 concurrent"]
    # 24 s of audio per 10 s of worker time (20 s rounds of 2) vs 24 per ~12.3 s alone.
    assert conc.speedup is not None and conc.speedup.estimate == pytest.approx(1.2 * 1.025)
    assert "OOM risk" in conc.why
    assert rows["2 containers"].verdict == "not measurable here"
    assert rows["low VRAM"].verdict == "not measurable here" and "needs a GPU" in rows["low VRAM"].fit
    assert rows["oom"].verdict == "not measurable here" and "OutOfMemoryError" in rows["oom"].why

    data = predictions_report.section(records, manifest, load_prices(), n_boot=200)
    assert data is not None
    text = predictions_report.markdown(data)
    assert text.startswith("### The research's predictions, measured")
    assert text.count("not measurable here") >= 4
    assert "1.33 [" in text and "~12 s for ~48 s of audio" in text
    assert "latency p50/p90/p99 s" in text


def test_gpu_verdicts_holds_smaller_and_costs_quality() -> None:
    records = pd.DataFrame(
        _records("base", latency=12.0, device="cuda", wer=0.02, random=False)
        + _records("fast", latency=9.0, device="cuda", wer=0.02, random=False)
        + _records("slow", latency=11.0, device="cuda", wer=0.02, random=False)
        + _records("bad", latency=8.0, device="cuda", wer=0.10, random=False))
    manifest = _manifest([
        {"name": "baseline", "baseline_cell": "base", "reference_seconds": 12.0,
         "gpu": "A10G"},
        {"name": "fast", "baseline_cell": "base", "candidate_cell": "fast", "speedup": 1.3},
        {"name": "slow", "baseline_cell": "base", "candidate_cell": "slow", "speedup": 1.3},
        {"name": "bad", "baseline_cell": "base", "candidate_cell": "bad", "speedup": 1.3,
         "vram_gb": 8, "measure": "memory"},
    ])
    rows = {r.name: r for r in measure_predictions(records, manifest, load_prices(), n_boot=200)}
    assert rows["baseline"].verdict == "reproduces"
    assert rows["fast"].verdict == "holds"
    assert rows["slow"].verdict == "smaller than predicted"
    assert rows["bad"].verdict == "does not fit"  # 9 GB + context on an 8 GB card
    assert rows["fast"].quality["wer"].estimate == pytest.approx(0.0, abs=1e-12)
    # Cost per audio hour: A10G price x compute / audio, and 9/12 of the baseline's.
    assert rows["fast"].cost_ratio == pytest.approx(9 / 12)


def test_costs_quality_when_wer_rises_materially() -> None:
    records = pd.DataFrame(
        _records("base", latency=12.0, device="cuda", wer=0.02, random=False)
        + _records("bad", latency=8.0, device="cuda", wer=0.10, random=False))
    manifest = _manifest([{"name": "bad", "baseline_cell": "base", "candidate_cell": "bad",
                           "speedup": 1.3}])
    (row,) = measure_predictions(records, manifest, load_prices(), n_boot=200)
    assert row.verdict == "costs quality" and "wer" in row.why
    assert "WER +8.00 [" in predictions_report.quality_text(row)


def test_no_predictions_no_section() -> None:
    records = pd.DataFrame(_records("base", latency=1.0))
    assert predictions_report.section(records, {"spec": {}}, load_prices()) is None
