"""Gate decisions on hand-built record tables, the thresholds table, and spec building."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bench.analysis.cells import pair_scores
from bench.core.errors import UserError
from bench.gate.quality import prompts_needed
from bench.gate.sweep import GateSpec, build_sweep, dump_toml, load_gate_spec
from bench.gate.thresholds import GateThresholds
from bench.gate.verdict import decide
from echo_tts.production import ProductionConfig
from echo_tts.sampling import SamplerConfig

GIB = 2**30
FAST = GateThresholds(min_prompts=10)


def records(cell: str, errors: list[int], rtf: list[float], *, ref_words: int = 20,
            repeats: int = 1, random: bool = False, peak_gib: float = 10.0,
            gpu: str = "A10G", noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """One cell's records: prompt i has errors[i] word errors out of ref_words and a
    true rtf_full of rtf[i]; repeats get multiplicative noise from a fixed RNG."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for i, (err, r) in enumerate(zip(errors, rtf, strict=True)):
        for rep in range(repeats):
            rows.append({
                "key": f"{cell}/p{i:03d}/0/{rep}", "cell_id": cell, "cell_label": cell,
                "prompt_id": f"p{i:03d}", "seed": 0, "repeat": rep, "status": "ok",
                "error": None, "text": "x", "reference_norm": "w " * ref_words,
                "transcript_norm": "w", "ref_words": ref_words,
                "hits": ref_words - min(err, ref_words), "substitutions": min(err, ref_words),
                "deletions": 0, "insertions": max(0, err - ref_words),
                "wer": err / ref_words, "cer": err / ref_words / 2, "empty_hyp": False,
                "quality_meaningful": not random, "random_weights": random,
                "asr_random": False, "rtf_full": r * float(np.exp(noise * rng.standard_normal())),
                "peak_reserved_bytes": peak_gib * GIB, "gpu": gpu, "device_name": "NVIDIA A10G",
            })
    return pd.DataFrame(rows)


def errors_like(n: int, mean: float, seed: int, spread: int = 1) -> list[int]:
    rng = np.random.default_rng(seed)
    return [max(0, round(mean) + int(rng.integers(-spread, spread + 1))) for _ in range(n)]


# --------------------------------------------------------------------------- decisions


def test_clear_pass() -> None:
    errs = errors_like(40, 1, seed=1)
    base = records("a", errs, [1.0] * 40)
    cand = records("b", errs, [0.75] * 40)
    verdict = decide(base, cand, FAST)
    assert verdict.status == "PASS" and verdict.exit_code == 0
    assert verdict.check("quality.wer").status == "PASS"
    assert verdict.check("quality.cer").status == "PASS"
    assert verdict.check("speed").status == "PASS"
    assert verdict.check("speed").figures["ratio"] == pytest.approx(0.75)
    assert verdict.check("memory").status == "PASS"
    assert "PASS" in verdict.to_markdown() and "quality.wer" in verdict.to_text()


def test_clear_wer_regression_fails() -> None:
    base = records("a", errors_like(40, 1, seed=1), [1.0] * 40)
    cand = records("b", errors_like(40, 4, seed=2), [1.0] * 40)  # +15 points
    verdict = decide(base, cand, FAST)
    wer = verdict.check("quality.wer")
    assert wer.status == "FAIL" and wer.figures["ci_low"] > 0.5
    assert verdict.status == "FAIL" and verdict.exit_code == 1
    assert "quality.wer" in verdict.headline


def test_clear_speed_regression_fails() -> None:
    errs = errors_like(12, 1, seed=1)
    base = records("a", errs, [1.0] * 12, repeats=3, noise=0.02, seed=1)
    cand = records("b", errs, [1.3] * 12, repeats=3, noise=0.02, seed=2)
    verdict = decide(base, cand, FAST)
    speed = verdict.check("speed")
    assert speed.status == "FAIL"
    assert speed.figures["ratio"] == pytest.approx(1.3, rel=0.05)
    assert speed.figures["ratio_ci_low"] > 1.05  # the whole anytime interval is beyond
    assert speed.figures["n_pairs"] == 12
    assert verdict.exit_code == 1


@pytest.mark.parametrize("seed", range(5))
def test_noise_alone_never_fails_speed(seed: int) -> None:
    # Equal true speed, 10 % timing noise: the ratio of medians may stray past 1.05, but
    # the anytime interval must still hold the factor.
    errs = errors_like(12, 1, seed=1)
    base = records("a", errs, [1.0] * 12, repeats=2, noise=0.10, seed=100 + seed)
    cand = records("b", errs, [1.0] * 12, repeats=2, noise=0.10, seed=200 + seed)
    speed = decide(base, cand, FAST).check("speed")
    assert speed.status in ("PASS", "INCONCLUSIVE")


def test_noise_beyond_factor_is_inconclusive_not_fail() -> None:
    # A ratio past the factor on two pairs that disagree: the interval holds the factor,
    # so the check says INCONCLUSIVE and how many pairs a decision needs.
    base = records("a", [1, 1], [1.0, 1.0])
    cand = records("b", [1, 1], [1.2, 1.02])
    speed = decide(base, cand, FAST).check("speed")
    assert speed.status == "INCONCLUSIVE"
    assert speed.figures["ratio_ci_low"] < 1.05 < speed.figures["ratio_ci_high"]
    assert speed.n_needed is not None and speed.n_needed > 2


def test_too_few_prompts_is_inconclusive_with_number_needed() -> None:
    # 8 prompts of 200 words; the candidate is as good on average but swings by 2 points
    # per prompt, so the interval straddles the 0.5-point margin.
    thresholds = GateThresholds(min_prompts=5)
    base_err = [5] * 8
    cand_err = [9, 1, 9, 1, 9, 1, 9, 2]
    verdict = decide(records("a", base_err, [1.0] * 8, ref_words=200),
                     records("b", cand_err, [1.0] * 8, ref_words=200), thresholds)
    wer = verdict.check("quality.wer")
    assert wer.status == "INCONCLUSIVE"
    assert wer.n_needed is not None and wer.n_needed > 8
    assert verdict.status == "INCONCLUSIVE" and verdict.exit_code == 3
    assert f"~{wer.n_needed}" in verdict.headline


def test_below_min_prompts_is_inconclusive() -> None:
    errs = [1, 1, 1]
    verdict = decide(records("a", errs, [1.0] * 3), records("b", errs, [1.0] * 3),
                     GateThresholds(min_prompts=20))
    wer = verdict.check("quality.wer")
    assert wer.status == "INCONCLUSIVE" and wer.n_needed == 20


def test_candidate_faster_but_worse_fails_on_quality() -> None:
    base = records("a", errors_like(40, 1, seed=1), [1.0] * 40)
    cand = records("b", errors_like(40, 5, seed=2), [0.5] * 40)
    verdict = decide(base, cand, FAST)
    assert verdict.check("speed").status == "PASS"
    assert verdict.check("quality.wer").status == "FAIL"
    assert verdict.status == "FAIL"


def test_memory_over_budget_fails() -> None:
    errs = errors_like(40, 1, seed=1)
    base = records("a", errs, [1.0] * 40, peak_gib=20.0)
    cand = records("b", errs, [0.9] * 40, peak_gib=22.0)  # A10G: 24 GiB less 10 % = 21.6
    verdict = decide(base, cand, FAST)
    memory = verdict.check("memory")
    assert memory.status == "FAIL" and "reserved CUDA" in memory.summary
    assert verdict.status == "FAIL"
    roomy = decide(base, cand, GateThresholds(min_prompts=10, memory_budget_gb=80))
    assert roomy.check("memory").status == "PASS"


def test_cpu_run_reports_rss() -> None:
    base = records("a", [1] * 10, [1.0] * 10).drop(columns="peak_reserved_bytes")
    cand = records("b", [1] * 10, [1.0] * 10).drop(columns="peak_reserved_bytes")
    base["peak_rss_bytes"] = cand["peak_rss_bytes"] = 2 * GIB
    memory = decide(base, cand, FAST).check("memory")
    assert memory.status == "PASS" and "host RSS" in memory.summary


def test_memory_uses_resident_weights_plus_working_peak() -> None:
    # A candidate that halves the working memory shows the saving, even though the
    # allocator's reserved peak (left over from the baseline) says otherwise.
    base = records("a", [1] * 10, [1.0] * 10, peak_gib=20.0)
    cand = records("b", [1] * 10, [1.0] * 10, peak_gib=22.0)
    for frame, working in ((base, 8.0), (cand, 4.0)):
        frame["device"] = "cuda:0"
        frame["weights_resident_bytes"] = 12 * GIB
        frame["working_peak_bytes"] = working * GIB
    memory = decide(base, cand, FAST).check("memory")
    assert memory.status == "PASS" and "resident weights + working peak" in memory.summary
    assert memory.figures["candidate_peak_bytes"] == 16 * GIB
    assert memory.figures["baseline_peak_bytes"] == 20 * GIB
    cand["working_peak_bytes"] = 10 * GIB  # 22 GiB > 21.6 usable on an A10G
    assert decide(base, cand, FAST).check("memory").status == "FAIL"


def test_random_weights_do_not_decide_quality() -> None:
    errs = [1] * 10
    base = records("a", errs, [1.0] * 10, random=True)
    cand = records("b", [19] * 10, [0.5] * 10, random=True)  # "worse", but meaningless
    verdict = decide(base, cand, FAST)
    quality = verdict.check("quality")
    assert quality.status == "NOT_MEANINGFUL"
    assert quality.summary == "NOT MEANINGFUL (random weights)"
    assert verdict.status == "INCONCLUSIVE" and verdict.exit_code == 3
    assert "quality not checked" in verdict.headline
    speed_only = decide(base, cand, GateThresholds(require_quality=False))
    assert speed_only.status == "PASS" and "quality NOT CHECKED" in speed_only.headline


def test_failed_candidate_generation_fails() -> None:
    errs = errors_like(20, 1, seed=1)
    base = records("a", errs, [1.0] * 20)
    cand = records("b", errs, [1.0] * 20)
    cand.loc[0, "status"] = "failed"
    cand.loc[0, "error"] = "OutOfMemoryError: CUDA out of memory"
    generations = decide(base, cand, FAST).check("generations")
    assert generations.status == "FAIL" and "OutOfMemoryError" in generations.summary


def test_silent_candidate_audio_counts_as_empty_transcript() -> None:
    errs = [0] * 20
    base = records("a", errs, [1.0] * 20)
    cand = records("b", errs, [1.0] * 20)
    for col in ("ref_words", "wer", "cer"):
        cand[col] = None
    cand["score_status"] = "skipped_silent_audio"
    cand["text"] = "one two three four"
    wer = decide(base, cand, FAST).check("quality.wer")
    # Every word of the candidate's reference is an error, counted over the pair's
    # reference words (the baseline's; both sides share the prompt's text in a real gate).
    errors = pair_scores(cand, scored=True)[("p000", 0)].word_errors
    assert errors >= 1
    assert wer.status == "FAIL" and wer.figures["delta"] == pytest.approx(100 * errors / 20)


def test_sim_checked_when_present() -> None:
    errs = [1] * 20
    base = records("a", errs, [1.0] * 20)
    cand = records("b", errs, [1.0] * 20)
    base["sim"] = 0.70
    cand["sim"] = 0.60
    sim = decide(base, cand, FAST).check("quality.sim")
    assert sim.status == "FAIL"
    assert "quality.sim" not in [c.name for c in decide(base.drop(columns="sim"), cand,
                                                        FAST).checks]


def test_json_verdict_is_plain_json() -> None:
    import json

    verdict = decide(records("a", [1] * 10, [1.0] * 10), records("b", [1] * 10, [1.0] * 10),
                     FAST)
    data = json.loads(json.dumps(verdict.to_json(), allow_nan=False))
    assert data["exit_code"] == verdict.exit_code
    assert {c["name"] for c in data["checks"]} >= {"speed", "memory", "quality.wer"}


# --------------------------------------------------------------------------- statistics


def test_prompts_needed() -> None:
    # Estimate 0.2 below a 0.5 margin, upper half-width 0.6: (0.6 / 0.3)^2 = 4x the
    # prompts for a coin flip, times ((1.96 + 0.84) / 1.96)^2 = 2.04 for 80 % power.
    inflate = ((1.959964 + 0.841621) / 1.959964) ** 2
    assert prompts_needed(10, 0.2, -0.4, 0.8, 0.5) == math.ceil(40 * inflate)
    assert prompts_needed(10, 0.2, -0.4, 0.8, 0.5, power=0.5) == 40
    assert prompts_needed(10, 0.5, 0.0, 1.0, 0.5) is None
    assert prompts_needed(10, 1.0, 0.25, 1.5, 0.5, power=0.5) == 23  # ceil(10 * 1.5^2)


def test_prompts_needed_gives_the_stated_power() -> None:
    # Per-prompt differences ~ N(0.2, 1): a 20-prompt pilot's 95 % interval has half-width
    # 1.96 / sqrt(20). Re-running with the suggested n must decide (upper bound below the
    # 0.5 margin) in about 80 % of experiments, not the coin flip of the old estimate.
    sd, delta, margin, pilot = 1.0, 0.2, 0.5, 20
    half = 1.959964 * sd / math.sqrt(pilot)
    needed = prompts_needed(pilot, delta, delta - half, delta + half, margin)
    assert needed is not None
    rng = np.random.default_rng(5)
    diffs = rng.normal(delta, sd, (4000, needed))
    upper = diffs.mean(axis=1) + 1.959964 * diffs.std(axis=1, ddof=1) / math.sqrt(needed)
    assert 0.76 <= float((upper < margin).mean()) <= 0.84


# --------------------------------------------------------------------------- specs


def test_thresholds_reject_unknown_and_bad_values() -> None:
    with pytest.raises(UserError, match="wer_margn"):
        GateThresholds.from_table({"wer_margn": 1})
    with pytest.raises(UserError, match="speed_factor"):
        GateThresholds.from_table({"speed_factor": 0.9})
    with pytest.raises(UserError, match="speed_metric"):
        GateThresholds.from_table({"speed_metric": "rtf_ful"})
    assert GateThresholds.from_table({"wer_margin": 1}).wer_margin == 1
    for bad in (0, 2.5, True):
        with pytest.raises(UserError, match="max_rounds"):
            GateThresholds.from_table({"max_rounds": bad})
    assert GateThresholds.from_table({"max_rounds": 40}).max_rounds == 40
    assert GateThresholds().max_rounds is None


def test_dump_toml_round_trips() -> None:
    data = {"name": 'g "x"\n', "model": {"model": "random:tiny", "compile": False},
            "measure": {"seeds": [0, 1], "warmup": 1},
            "include": [{"num_steps": 4, "cfg_scale_text": 1e-05}, {"dtype": "float32"}]}
    assert tomllib.loads(dump_toml(data)) == data
    with pytest.raises(ValueError):
        dump_toml({"x": math.inf})


def test_shipped_gate_spec_and_production_config_build_a_sweep() -> None:
    root = Path(__file__).resolve().parents[2]
    gate = load_gate_spec(root / "bench" / "sweeps" / "gate.toml")
    assert gate.thresholds.wer_margin == 0.5 and gate.thresholds.speed_factor == 1.05
    production = ProductionConfig.from_file(root / "results" / "baselines" / "production.toml")
    candidate = ProductionConfig(sampler=SamplerConfig(num_steps=30), gpu="A10G")
    spec = build_sweep(gate, [production, candidate])
    assert [c.sampler.num_steps for c in spec.cells] == [40, 30]
    assert {c.gpu for c in spec.cells} == {"A10G"}
    assert spec.model.model == "jordand/echo-tts-base" and spec.measure.keep_audio
    # Identical configs collapse into one cell.
    assert len(build_sweep(gate, [production, production]).cells) == 1


def test_gate_spec_rejects_a_grid(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text('[model]\nmodel = "random:tiny"\n[grid]\nnum_steps = [4]\n')
    with pytest.raises(UserError, match="no \\[grid\\]"):
        load_gate_spec(path)


def test_different_weights_cannot_share_a_sweep(tmp_path: Path) -> None:
    gate = GateSpec({"model": {"device": "cpu"}}, GateThresholds(), tmp_path, "g", "g")
    a = ProductionConfig(model="random:tiny", codec="random:tiny", pca="random:tiny")
    b = ProductionConfig(model="random:small", codec="random:tiny", pca="random:tiny")
    with pytest.raises(UserError, match="different weights"):
        build_sweep(gate, [a, b])
