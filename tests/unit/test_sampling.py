from __future__ import annotations

import math

import pytest
import torch

from echo_tts import CFG_MODES, SamplerConfig, encode_text, load_model, sample_latents
from echo_tts.sampling import combine_guidance, guidance_rows


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    return load_model("random:tiny")


def test_defaults_are_production() -> None:
    c = SamplerConfig()
    assert (c.num_steps, c.cfg_mode, c.cfg_scale_text, c.cfg_scale_speaker) == (40, "independent", 3.0, 8.0)
    assert (c.cfg_min_t, c.cfg_max_t, c.sequence_length) == (0.5, 1.0, 640)
    assert c.truncation_factor is None and c.speaker_kv_scale is None


@pytest.mark.parametrize("kwargs, word", [
    (dict(num_steps=0), "num_steps"),
    (dict(num_steps=2.5), "num_steps"),
    (dict(sequence_length=641), "sequence_length"),
    (dict(sequence_length=0), "sequence_length"),
    (dict(cfg_scale_text=math.inf), "cfg_scale_text"),
    (dict(cfg_scale_speaker=math.nan), "cfg_scale_speaker"),
    (dict(cfg_min_t=-0.1), "cfg_min_t"),
    (dict(cfg_max_t=1.5), "cfg_max_t"),
    (dict(cfg_min_t=0.8, cfg_max_t=0.6), "above"),
    (dict(cfg_mode="double"), "independent, alternating, joint, none"),
    (dict(rescale_k=1.0), "together"),
    (dict(truncation_factor=0.0), "truncation_factor"),
    (dict(speaker_kv_max_layers=0), "speaker_kv_max_layers"),
])
def test_validation_names_the_problem(kwargs: dict[str, object], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        SamplerConfig(**kwargs)  # type: ignore[arg-type]


def test_nfe_counts_rows() -> None:
    # 40 steps over linspace(1, 0)*0.999: t >= 0.5 on the first 20 steps.
    assert SamplerConfig().guided_steps().count(True) == 20
    assert SamplerConfig().nfe() == 20 * 3 + 20
    assert SamplerConfig(cfg_mode="joint").nfe() == 20 * 2 + 20
    assert SamplerConfig(cfg_mode="alternating").nfe() == 20 * 2 + 20
    assert SamplerConfig(cfg_mode="none").nfe() == 40
    assert SamplerConfig(cfg_min_t=0.0).nfe() == 120


def test_alternating_switches_dropped_signal() -> None:
    assert guidance_rows("alternating", 0) == ("cond", "no_text")
    assert guidance_rows("alternating", 1) == ("cond", "no_speaker")
    assert guidance_rows("independent", None) == ("cond",)


def test_combine_guidance_formulas() -> None:
    c, nt, ns, nb = (torch.full((1,), v) for v in (1.0, 0.5, 0.25, 0.0))
    cfg = SamplerConfig(cfg_scale_text=2.0, cfg_scale_speaker=4.0)
    assert combine_guidance({"cond": c, "no_text": nt, "no_speaker": ns}, cfg).item() == 1 + 2 * 0.5 + 4 * 0.75
    joint = SamplerConfig(cfg_mode="joint", cfg_scale_text=2.0, cfg_scale_speaker=4.0)
    assert combine_guidance({"cond": c, "no_both": nb}, joint).item() == 1 + 6 * 1.0
    alt = SamplerConfig(cfg_mode="alternating", cfg_scale_text=2.0, cfg_scale_speaker=4.0)
    assert combine_guidance({"cond": c, "no_speaker": ns}, alt).item() == 1 + 4 * 0.75


@pytest.mark.parametrize("mode", CFG_MODES)
def test_deterministic_per_seed(tiny, mode: str) -> None:  # type: ignore[no-untyped-def]
    ids, mask = encode_text(["Seeded."])
    cfg = SamplerConfig(num_steps=3, cfg_mode=mode, sequence_length=16)  # type: ignore[arg-type]
    a = sample_latents(tiny, text_ids=ids, text_mask=mask, config=cfg, seed=3)
    b = sample_latents(tiny, text_ids=ids, text_mask=mask, config=cfg, seed=3)
    c = sample_latents(tiny, text_ids=ids, text_mask=mask, config=cfg, seed=4)
    assert a.shape == (1, 16, 80) and torch.equal(a, b) and not torch.equal(a, c)


def test_per_row_seeds_match_unbatched_calls(tiny) -> None:  # type: ignore[no-untyped-def]
    cfg = SamplerConfig(num_steps=3, sequence_length=16)
    ids, mask = encode_text(["First prompt.", "Second, longer prompt."])
    batched = sample_latents(tiny, text_ids=ids, text_mask=mask, config=cfg, seed=[5, 6])
    for row, (text, seed) in enumerate([("First prompt.", 5), ("Second, longer prompt.", 6)]):
        one_ids, one_mask = encode_text([text], max_length=ids.shape[1])
        single = sample_latents(tiny, text_ids=one_ids, text_mask=one_mask, config=cfg, seed=seed)
        torch.testing.assert_close(batched[row], single[0], rtol=1e-4, atol=1e-5)


def test_dropping_speaker_changes_output_only_with_a_speaker(tiny) -> None:  # type: ignore[no-untyped-def]
    ids, mask = encode_text(["Speaker test."])
    spk = torch.randn(1, 8, 80)
    on = torch.ones(1, 8, dtype=torch.bool)
    cfg = SamplerConfig(num_steps=2, sequence_length=8, cfg_mode="none")
    with_spk = sample_latents(tiny, text_ids=ids, text_mask=mask, speaker_latent=spk, speaker_mask=on, config=cfg)
    masked = sample_latents(tiny, text_ids=ids, text_mask=mask, speaker_latent=spk,
                            speaker_mask=torch.zeros_like(on), config=cfg)
    none = sample_latents(tiny, text_ids=ids, text_mask=mask, config=cfg)
    assert not torch.allclose(with_spk, none)
    torch.testing.assert_close(masked, none)


@pytest.mark.parametrize("min_t", [0.0, 0.3, 0.5, 0.7, 0.999, 1.0])
def test_speaker_kv_restore_step_is_the_crossing_step(min_t: float) -> None:
    config = SamplerConfig(speaker_kv_scale=1.5, speaker_kv_min_t=min_t)
    t = config.schedule().tolist()
    crossing = [i for i in range(config.num_steps) if t[i] >= min_t > t[i + 1]]
    assert config.speaker_kv_restore_step() == (crossing[0] if crossing else None)
    assert SamplerConfig(speaker_kv_min_t=min_t).speaker_kv_restore_step() is None
