"""Failures and silence count, one rule everywhere (bench.scoring.outcomes): report analysis, gate
and history agree on hand-built runs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bench.analysis.cells import summarize_cells
from bench.analysis.cost import add_costs
from bench.analysis.headline import choose_baselines, headline
from bench.analysis.memory_fit import vram_fit
from bench.analysis.prices import Prices
from bench.analysis.speedup import add_speedups
from bench.gate.thresholds import GateThresholds
from bench.gate.verdict import decide
from bench.scoring.outcomes import has_scores, outcome, quality_scores, usable
from tests.unit.test_analysis import rec, scored

TEXT = "the quick brown fox jumps over the lazy dog again"


def words(record: dict[str, Any], errors: int) -> dict[str, Any]:
    return {**scored(record, errors), "text": TEXT, "asr_model": "fake"}


def silent(record: dict[str, Any]) -> dict[str, Any]:
    # As an older scorer stored it: a skip line with no figures.
    return {**record, "text": TEXT, "audio_silent": True, "asr_model": "fake",
            "score_status": "skipped_silent_audio", "ref_words": None, "wer": None,
            "rtf": None, "audio_seconds": 0.0}


def failed(record: dict[str, Any], error: str = "OutOfMemoryError: CUDA out of memory"
           ) -> dict[str, Any]:
    keep = ("key", "cell_id", "cell_label", "prompt_id", "seed", "repeat", "gpu",
            "device_name", "num_steps", "cfg_mode", "sequence_length")
    return {**{k: record[k] for k in keep}, "status": "failed", "text": TEXT, "error": error,
            "error_type": error.split(":")[0]}


PROMPTS = [f"p{i}" for i in range(6)]


def run_with_bad_fast_cells() -> pd.DataFrame:
    """Baseline (40 steps), a good cell (30 steps) and three faster cells: one speaks the
    wrong words, one is half silent, one failed every generation (out of memory)."""
    rows = []
    for i, p in enumerate(PROMPTS):
        rows.append(words(rec("base", p, steps=40, t_sampling=10.0 + i, nfe=100,
                              reserved=12e9), 1))
        rows.append(words(rec("good", p, steps=30, t_sampling=7.5 + i, nfe=75,
                              reserved=12e9), 1))
        rows.append(words(rec("wrong", p, steps=4, t_sampling=1.0, nfe=10, reserved=12e9), 8))
        half = rec("half-silent", p, steps=8, t_sampling=2.0, nfe=20, reserved=12e9)
        rows.append(silent(half) if i % 2 else words(half, 0))
        rows.append(failed(rec("oom", p, steps=6, t_sampling=1.5, nfe=15)))
    return pd.DataFrame(rows)


def test_no_speech_counts_as_all_deletions_in_the_cell_wer() -> None:
    cells = summarize_cells(run_with_bad_fast_cells(), n_boot=50)
    half = cells.loc["half-silent"]
    # Three prompts perfect, three silent (10 words deleted each): 30 / 60, not 0 %.
    assert half["corpus_wer"] == pytest.approx(0.5)
    assert (half["n_silent"], half["n_scored"], half["failure_rate"]) == (3, 6, 0.5)
    # Silent generations are infinitely slow in speech RTF: the median sits between a
    # finite and an infinite value, so it is infinite (numpy's own quantile gives NaN).
    assert math.isinf(half["rtf_median"]) and math.isfinite(half["rtf_p10"])
    oom = cells.loc["oom"]
    assert oom["corpus_wer"] == pytest.approx(1.0) and oom["quality"] == "ok"
    assert (oom["n_failed"], oom["n_oom"], oom["failure_rate"]) == (6, 6, 1.0)
    assert not usable(oom) and not usable(half) and usable(cells.loc["wrong"])


def test_headline_recommends_none_of_the_bad_fast_cells() -> None:
    records = run_with_bad_fast_cells()
    cells = summarize_cells(records, n_boot=50)
    baselines = choose_baselines(cells)
    cells = add_speedups(cells, records, baselines)
    (choice,) = headline(cells, baselines, 0.5)
    assert choice.cell_id == "good" and not choice.speed_only
    assert "left out" in choice.note
    # Even a budget that admits any WER never picks a cell without speech.
    assert headline(cells, baselines, 100.0)[0].cell_id == "wrong"


def test_a_cell_without_scores_does_not_switch_the_budget_off() -> None:
    # Before: one unscored cell made the whole GPU "speed only" and the 80 %-WER cell won.
    records = run_with_bad_fast_cells()
    records = records[records["cell_id"] != "oom"]
    unscored = [rec("unscored", p, steps=2, t_sampling=0.5, nfe=5) for p in PROMPTS]
    records = pd.concat([records, pd.DataFrame(unscored)], ignore_index=True)
    cells = summarize_cells(records, n_boot=50)
    assert cells.loc["unscored", "quality"] == "not scored"
    (choice,) = headline(cells, choose_baselines(cells), 0.5)
    assert choice.cell_id == "good" and not choice.speed_only


def test_no_usable_cell_names_none() -> None:
    records = run_with_bad_fast_cells()
    records = records[records["cell_id"].isin(["base", "oom", "half-silent"])].copy()
    records.loc[records["cell_id"] == "base", "audio_silent"] = True
    cells = summarize_cells(records, n_boot=50)
    (choice,) = headline(cells, choose_baselines(cells), 0.5)
    assert choice.cell_id == "" and math.isnan(choice.rtf)
    assert "no usable cell" in choice.note and "the baseline itself has" in choice.note


def test_unscored_runs_have_no_wer_made_of_failures() -> None:
    raw = [rec("c", p, steps=4, t_sampling=1.0, nfe=8) for p in PROMPTS]
    records = pd.DataFrame([*raw, failed(raw[0])])
    assert not has_scores(records)
    assert quality_scores(records)[1] == []
    assert summarize_cells(records, n_boot=10).loc["c", "quality"] == "not scored"
    # Audio that was never kept has no figure and is not counted against the cell.
    kept = pd.DataFrame([words(raw[0], 0), {**raw[1], "asr_model": "fake",
                                             "score_status": "skipped_no_audio"}])
    rated, scores = quality_scores(kept)
    assert len(scores) == 1 and list(rated["prompt_id"]) == ["p0"]


def test_out_of_memory_cell_never_fits_its_card() -> None:
    records = run_with_bad_fast_cells()
    # Half the generations of a 24 GB-card cell ran out of memory; the others peaked at 10 GB.
    mixed = [rec("mixed", p, steps=40, t_sampling=5.0, nfe=100, reserved=10e9, gpu="L4")
             for p in PROMPTS]
    mixed = [failed(r) if i % 2 else r for i, r in enumerate(mixed)]
    cells = summarize_cells(pd.concat([records, pd.DataFrame(mixed)], ignore_index=True),
                            n_boot=20)
    fit = vram_fit(cells, budgets_gb=[16, 24, 40])
    assert fit.loc["mixed", "oom"] and fit.loc["mixed", "needed_gb"] == pytest.approx(10.5)
    assert fit.loc["mixed", "16 GB"] == -math.inf and fit.loc["mixed", "24 GB"] == -math.inf
    assert math.isnan(fit.loc["mixed", "40 GB"])  # never measured above its card
    assert fit.loc["base", "16 GB"] == pytest.approx(3.5)
    assert not fit.loc["base", "oom"]


def test_vram_fit_uses_resident_weights_plus_working_peak_when_recorded() -> None:
    rows = [rec("c", p, steps=4, t_sampling=1.0, nfe=8, reserved=30e9,
                weights_resident_bytes=6e9, working_peak_bytes=w)
            for p, w in (("a", 2e9), ("b", 3e9))]
    fit = vram_fit(summarize_cells(pd.DataFrame(rows), n_boot=10), budgets_gb=[16],
                   context_bytes=500_000_000)
    assert fit.loc["c", "needed_gb"] == pytest.approx(9.5)
    assert (fit.loc["c", "weights_gb"], fit.loc["c", "working_gb"]) == (6.0, 3.0)
    assert fit.loc["c", "basis"] == "resident weights + working peak"


def test_report_and_gate_judge_a_half_silent_candidate_alike() -> None:
    records = run_with_bad_fast_cells()
    base = records[records["cell_id"] == "base"]
    half = records[records["cell_id"] == "half-silent"]
    cells = summarize_cells(records, n_boot=50)
    verdict = decide(base, half, GateThresholds(min_prompts=1))
    wer = verdict.check("quality.wer")
    delta = (cells.loc["half-silent", "corpus_wer"] - cells.loc["base", "corpus_wer"]) * 100
    assert wer.figures["delta"] == pytest.approx(delta)
    generations = verdict.check("generations")
    assert generations.status == "FAIL" and "3 silent" in generations.summary
    # A failed candidate counts in quality too, not only in the generations check.
    oom = records[records["cell_id"] == "oom"]
    oom_wer = decide(base, oom, GateThresholds(min_prompts=1)).check("quality.wer")
    assert oom_wer.figures["delta"] == pytest.approx(
        (cells.loc["oom", "corpus_wer"] - cells.loc["base", "corpus_wer"]) * 100)


def test_outcome_counts() -> None:
    r = rec("c", "a", steps=4, t_sampling=1.0, nfe=8)
    counts = outcome([r, {**r, "audio_nan": True}, silent(r), failed(r, "RuntimeError: x"),
                      failed(r)])
    assert (counts.n, counts.n_failed, counts.n_oom, counts.n_nan, counts.n_silent) == \
        (5, 2, 1, 1, 1)
    assert counts.failure_rate == pytest.approx(0.8)


def test_cost_per_audio_hour_is_a_ratio_of_sums() -> None:
    # A constructed mix: short prompts (1-2 s of speech) and long ones (25-30 s) with a
    # fixed compute per generation, as a fixed 640-latent sequence gives.
    rng = np.random.default_rng(3)
    audio = np.concatenate([rng.uniform(1, 2, 12), rng.uniform(25, 30, 8)])
    compute = rng.uniform(5.0, 6.0, audio.size)
    rows = [{**rec("c", f"p{i}", steps=40, t_sampling=c - 1.0, nfe=100, audio=a)}
            for i, (a, c) in enumerate(zip(audio, compute, strict=True))]
    price = 0.000306
    cells = add_costs(summarize_cells(pd.DataFrame(rows), n_boot=10),
                      Prices(gpu={"A10": price}, aliases={"A10G": "A10"}))
    expected = price * compute.sum() / audio.sum() * 3600
    assert cells.loc["c", "cost_per_audio_hour"] == pytest.approx(expected)
    # The median per-generation RTF (a latency figure) would overstate it several-fold.
    median_cost = price * float(np.median(compute / audio)) * 3600
    assert median_cost > 2 * expected
    assert cells.loc["c", "rtf_median"] == pytest.approx(np.median(compute / audio))


def test_usable_mask_applies_usables_rule_to_every_row() -> None:
    from bench.scoring.outcomes import usable_mask

    rows = [{"n_ok": 3, "n_failed": 0, "n_nan": 0, "n_silent": 0},  # usable
            {"n_ok": 3, "n_failed": 1, "n_nan": 0, "n_silent": 0},  # a failure
            {"n_ok": 3, "n_failed": 0, "n_nan": 1, "n_silent": 0},  # a NaN
            {"n_ok": 3, "n_failed": 0, "n_nan": 0, "n_silent": 2},  # silent
            {"n_ok": 0, "n_failed": 0, "n_nan": 0, "n_silent": 0},  # never ran
            {"n_ok": 2, "n_failed": None, "n_nan": None, "n_silent": None}]  # counts missing
    frame = pd.DataFrame(rows)
    assert list(usable_mask(frame)) == [usable(r) for r in rows]
    assert list(usable_mask(frame)) == [True, False, False, False, False, True]
    assert list(usable_mask(frame.drop(columns=["n_nan"]))) == [True, False, True, False,
                                                                False, True]
