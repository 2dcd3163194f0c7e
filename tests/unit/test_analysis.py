"""Analysis on hand-built record tables, with exact expected values."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench.analysis.cells import summarize_cells
from bench.analysis.cost import add_costs, cost_per_audio_hour
from bench.analysis.flop_model import sampling_flops
from bench.analysis.frontier import add_frontiers, pareto_mask
from bench.analysis.headline import choose_baselines, headline
from bench.analysis.memory_fit import vram_fit
from bench.analysis.prices import Prices, load_prices
from bench.analysis.speedup import add_speedups
from bench.core.errors import UserError
from echo_tts.config import ModelConfig
from echo_tts.flops import forward_row_flops, modulation_flops


def rec(cell: str, prompt: str, *, steps: int, cfg: str = "independent", length: int = 640,
        gpu: str | None = "A10G", t_sampling: float, t_other: float = 1.0, nfe: int,
        audio: float = 10.0, reserved: float | None = None, **extra: Any) -> dict[str, Any]:
    total = t_sampling + t_other
    return {
        "key": f"{cell}/{prompt}/0/0", "cell_id": cell, "prompt_id": prompt, "seed": 0,
        "repeat": 0, "status": "ok", "cell_label": f"steps={steps} cfg={cfg} len={length}",
        "gpu": gpu, "device_name": "cpu" if gpu is None else "NVIDIA A10G",
        "num_steps": steps, "cfg_mode": cfg, "sequence_length": length, "nfe": nfe,
        "n_chunks": 1, "t_text_encode": 0.1, "t_speaker_encode": 0.0,
        "t_sampling": t_sampling, "t_decode": t_other - 0.1, "t_total": total,
        "t_sampling_per_nfe": t_sampling / nfe, "audio_seconds": audio, "full_seconds": audio,
        "rtf": total / audio, "rtf_full": total / audio, "audio_nan": False,
        "audio_silent": False, "peak_allocated_bytes": reserved, "peak_reserved_bytes": reserved,
        "peak_rss_bytes": 1e9, **extra,
    }


def scored(record: dict[str, Any], errors: int, words: int = 10,
           meaningful: bool = True) -> dict[str, Any]:
    return {**record, "ref_words": words, "hits": words - errors, "substitutions": errors,
            "deletions": 0, "insertions": 0, "wer": errors / words, "cer": errors / words,
            "reference_norm": "x" * words, "transcript_norm": "x" * words,
            "empty_hyp": False, "quality_meaningful": meaningful}


@pytest.fixture
def table() -> pd.DataFrame:
    # Baseline 40 steps independent (NFE 100), a 20-step cell (NFE 50), a 20-step
    # alternating cell (NFE 35). Two prompts each.
    rows = []
    for prompt, base_s in (("a", 10.0), ("b", 12.0)):
        rows.append(scored(rec("base", prompt, steps=40, t_sampling=base_s, nfe=100,
                               reserved=20e9), errors=1))
        rows.append(scored(rec("half", prompt, steps=20, t_sampling=base_s / 2, nfe=50,
                               reserved=20e9), errors=1))
        rows.append(scored(rec("alt", prompt, steps=20, cfg="alternating", t_sampling=base_s / 4,
                               nfe=35, reserved=30e9), errors=3))
    return pd.DataFrame(rows)


def test_pareto_mask_dominance_ties_and_nan() -> None:
    x = [1.0, 2.0, 3.0, 1.0, 2.0, math.nan]
    y = [5.0, 3.0, 3.0, 5.0, 1.0, 0.0]
    # (3,3) is dominated by (2,3); (2,3) by (2,1); the tie (1,5) twice stays; NaN never.
    assert pareto_mask(x, y).tolist() == [True, False, False, True, True, False]


def test_summary_medians_counts_and_quality(table: pd.DataFrame) -> None:
    cells = summarize_cells(table, n_boot=50)
    assert list(cells.index) == ["base", "half", "alt"]
    base = cells.loc["base"]
    assert base["t_sampling_median"] == pytest.approx(11.0)
    assert base["t_total_median"] == pytest.approx(12.0)
    assert base["rtf_median"] == pytest.approx(1.2)
    assert base["x_realtime"] == pytest.approx(1 / 1.2)
    assert base["n_ok"] == 2 and base["n_failed"] == 0
    assert base["peak_reserved"] == 20e9
    assert base["corpus_wer"] == pytest.approx(0.1)
    assert cells.loc["alt", "corpus_wer"] == pytest.approx(0.3)
    assert base["quality"] == "ok"
    assert base["hardware"] == "A10G"


def test_costs_frontier_speedups_and_headline(table: pd.DataFrame) -> None:
    prices = Prices(gpu={"A10": 0.0003}, aliases={"A10G": "A10"})
    cells = add_frontiers(add_costs(summarize_cells(table, n_boot=50), prices))
    # 0.0003 $/s x RTF 1.2 x 3600 s = 1.296 $ per audio hour.
    assert cells.loc["base", "cost_per_audio_hour"] == pytest.approx(1.296)
    assert cells.loc["half", "cost_per_audio_hour"] == pytest.approx(0.0003 * 0.65 * 3600)
    # half beats base on speed at equal WER; alt is fastest but worse: both on the front.
    assert cells["front_hw"].tolist() == [False, True, True]
    assert cells["front_cost"].tolist() == [False, True, True]

    baselines = choose_baselines(cells)
    assert baselines["A10G"].cell_id == "base"
    cells = add_speedups(cells, table, baselines)
    half = cells.loc["half"]
    assert half["speedup_sampling"] == pytest.approx(2.0)
    assert half["predicted_sampling"] == pytest.approx(2.0)
    assert half["sampling_gap"] == pytest.approx(0.0)
    # Prompt a: base total 11 s; predicted 1 + 10 x 0.5 = 6 s -> 11/6; measured 11/6.
    # Prompt b: 13 s; predicted 1 + 6 = 7 -> 13/7. Median of the two.
    assert half["predicted_total"] == pytest.approx((11 / 6 + 13 / 7) / 2)
    assert half["speedup_total"] == pytest.approx((11 / 6 + 13 / 7) / 2)
    alt = cells.loc["alt"]
    # FLOPs: 100 vs 35 forward rows of equal size, conditioning for 40 vs 20 steps.
    cfg = ModelConfig.preset("echo-tts-base")
    row, mod = forward_row_flops(cfg, 640, 1), modulation_flops(cfg)
    predicted = (100 * row + 40 * mod) / (35 * row + 20 * mod)
    assert alt["predicted_sampling"] == pytest.approx(predicted)
    assert 100 / 35 > predicted > 2.8
    assert alt["speedup_sampling"] == pytest.approx(4.0)
    assert alt["sampling_gap"] == pytest.approx(4.0 - predicted)
    assert cells.loc["base", "speedup_total"] == pytest.approx(1.0)

    # WER budget 0.5 points over 10 %: alt (30 %) is out, half (10 %) is the pick.
    (choice,) = headline(cells, baselines, 0.5)
    assert (choice.cell_id, choice.speed_only) == ("half", False)
    assert choice.wer_limit == pytest.approx(0.105)
    # A 25-point budget admits alt, the fastest.
    assert headline(cells, baselines, 25.0)[0].cell_id == "alt"


def test_random_quality_makes_the_choice_speed_only(table: pd.DataFrame) -> None:
    table = table.assign(quality_meaningful=False)
    cells = summarize_cells(table, n_boot=20)
    assert set(cells["quality"]) == {"not meaningful"}
    baselines = choose_baselines(cells)
    (choice,) = headline(add_speedups(cells, table, baselines), baselines)
    assert choice.speed_only and choice.cell_id == "alt"
    assert "not meaningful" in choice.note


def test_baseline_fallbacks(table: pd.DataFrame) -> None:
    cells = summarize_cells(table[table["cell_id"] != "base"], n_boot=20)
    baseline = choose_baselines(cells)["A10G"]
    assert baseline.cell_id == "half" and "slowest" in baseline.reason
    chosen = choose_baselines(cells, baseline_cell="alt")["A10G"]
    assert chosen.cell_id == "alt" and "chosen" in chosen.reason
    with pytest.raises(UserError, match="not in this run"):
        choose_baselines(cells, baseline_cell="nope")


def test_default_baseline_prefers_the_plain_execution_path() -> None:
    # A speed-options sweep: every cell has production sampler settings.
    rows = [rec(cell, p, steps=40, t_sampling=t, nfe=100, **extra)
            for p in ("a", "b")
            for cell, t, extra in (
                ("compiled", 8.0, {"compile": True, "cuda_graphs": False, "attention": "sliced"}),
                ("masked", 11.0, {"compile": False, "cuda_graphs": False, "attention": "masked"}),
                ("plain", 10.0, {"compile": False, "cuda_graphs": False, "attention": "sliced"}))]
    baseline = choose_baselines(summarize_cells(pd.DataFrame(rows), n_boot=20))["A10G"]
    assert baseline.cell_id == "plain" and "production default" in baseline.reason


def test_vram_fit_headroom_and_cpu_unknown(table: pd.DataFrame) -> None:
    fit = vram_fit(summarize_cells(table, n_boot=20), budgets_gb=[24, 40],
                   context_bytes=500_000_000)
    assert fit.loc["base", "needed_gb"] == pytest.approx(20.5)
    assert fit.loc["base", "24 GB"] == pytest.approx(3.5)
    assert fit.loc["alt", "24 GB"] == pytest.approx(-6.5)  # does not fit
    assert fit.loc["alt", "40 GB"] == pytest.approx(9.5)
    cpu = pd.DataFrame([rec("c", "a", steps=4, gpu=None, t_sampling=1.0, nfe=8)])
    assert math.isnan(vram_fit(summarize_cells(cpu), budgets_gb=[16]).loc["c", "16 GB"])


def test_prices_shipped_file_and_lookup() -> None:
    prices = load_prices()
    assert prices.gpu["A10"] == 0.000306 and prices.cpu_per_core_second == 0.0000131
    assert "modal.com/pricing" in prices.source
    assert prices.per_second("A10G", None)[0] == 0.000306
    assert prices.per_second("H100:2", None)[0] == pytest.approx(2 * 0.001097)
    assert prices.per_second(None, "NVIDIA A100-SXM4-80GB")[0] == 0.000694
    assert prices.per_second(None, "NVIDIA A100-SXM4-40GB")[0] == 0.000583
    assert prices.per_second(None, "NVIDIA L40S")[0] == 0.000542
    assert prices.per_second(None, "NVIDIA L4")[0] == 0.000222
    assert prices.per_second(None, "cpu", cpu_cores=2)[0] == pytest.approx(2 * 0.0000131)
    assert prices.per_second(None, "Some Accelerator")[0] is None
    assert math.isnan(cost_per_audio_hour(None, 1.0))


@pytest.mark.parametrize("text", ["gpu_per_second = 5", "aliases = [1]",
                                  "[gpu_per_second]\nH100 = 'cheap'", "date = ["])
def test_malformed_price_file_is_a_user_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(UserError, match="is malformed"):
        load_prices(path)


def test_predicted_speedup_sees_sequence_length_and_context() -> None:
    # Same steps and CFG (same NFE), half the latents: NFE alone predicts 1.0x; the FLOP
    # model predicts more than 2x (self-attention shrinks with the square of the length).
    text = "x" * 99  # 99 bytes + BOS = 100 context tokens
    rows = [rec(cell, "a", steps=40, length=length, t_sampling=t, nfe=100,
                normalized_text=text, model="random:tiny")
            for cell, length, t in (("base", 640, 10.0), ("short", 320, 4.0))]
    table = pd.DataFrame(rows)
    cells = summarize_cells(table, n_boot=10)
    cells = add_speedups(cells, table, choose_baselines(cells))
    cfg = ModelConfig.preset("tiny")
    mod = 40 * modulation_flops(cfg)
    expected = ((100 * forward_row_flops(cfg, 640, 100) + mod)
                / (100 * forward_row_flops(cfg, 320, 100) + mod))
    assert cells.loc["short", "predicted_sampling"] == pytest.approx(expected)
    assert cells.loc["short", "predicted_sampling"] > 2.0
    assert cells.loc["short", "speedup_sampling"] == pytest.approx(2.5)
    # Context counts too: a longer prompt makes each row attend to more keys.
    assert sampling_flops({**rows[0], "normalized_text": text * 3}) > sampling_flops(rows[0])
    assert math.isnan(sampling_flops({**rows[0], "nfe": None}))


def test_nfe_per_chunk_skips_records_without_nfe() -> None:
    # A record without nfe (an older run, a failed field) must neither crash the summary
    # nor shift the other records' nfe onto the wrong chunk counts.
    rows = [rec("c", p, steps=4, t_sampling=1.0, nfe=n, n_chunks=k)
            for p, n, k in (("a", 8, 1), ("b", 9, 1), ("c", 24, 2))]
    rows[1]["nfe"] = None
    cells = summarize_cells(pd.DataFrame(rows), n_boot=10)
    assert cells.loc["c", "nfe_per_chunk"] == 10.0  # median of 8/1 and 24/2
    cells = summarize_cells(pd.DataFrame(rows[:2]), n_boot=10)
    assert cells.loc["c", "nfe_per_chunk"] == 8.0
