"""The analytic FLOP counter against torch's FlopCounterMode on real forward passes."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from echo_tts import ModelConfig, SamplerConfig, encode_text, load_model
from echo_tts.flops import forward_row_flops, modulation_flops, sampling_flops
from echo_tts.model import AttentionPlan
from echo_tts.sampling import (
    encode_speaker_condition,
    encode_text_condition,
    key_mask,
    key_spans,
)


def counted(fn: object, *args: object) -> int:
    # The math SDPA backend decomposes attention into matmuls the counter sees.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn(*args)  # type: ignore[operator]
    return int(counter.get_total_flops())


@pytest.mark.parametrize("preset, seq_len, speaker_latents", [("tiny", 32, 8), ("tiny", 17, 0),
                                                               ("small", 24, 16)])
def test_forward_row_flops_match_counted(preset: str, seq_len: int, speaker_latents: int) -> None:
    model = load_model(f"random:{preset}")
    ids, mask = encode_text(["Count my flops, please."])
    text_state, text_mask = encode_text_condition(model, ids, mask)
    speaker = torch.randn(1, speaker_latents, 80) if speaker_latents else None
    speaker_mask = torch.ones(1, speaker_latents, dtype=torch.bool) if speaker_latents else None
    spk_state, spk_tokens = encode_speaker_condition(model, speaker, speaker_mask, 1)
    kinds = ("cond", "no_text", "no_speaker")
    context = model.context_kv(3, seq_len, text_state, spk_state)
    masked = AttentionPlan(mask=key_mask(kinds, context.segments, text_mask, spk_tokens, None))
    modulation = model.modulation(torch.tensor([0.7]))
    x = torch.randn(3, seq_len, 80)
    text_len, speaker_len = ids.shape[1], spk_state.shape[1]
    assert counted(model, x, modulation, context, masked) == 3 * forward_row_flops(
        model.config, seq_len, text_len + speaker_len)
    # Sliced attention scores only the keys each row kind sees (no speaker: none of them).
    spans = key_spans(kinds, context.segments, text_mask, spk_tokens, None)
    assert spans is not None
    seen_speaker = speaker_len if speaker_latents else 0
    assert counted(model, x, modulation, context, AttentionPlan(spans=spans)) == sum(
        forward_row_flops(model.config, seq_len, n)
        for n in (text_len + seen_speaker, seen_speaker, text_len))
    assert counted(model.modulation, torch.tensor([0.7])) == modulation_flops(model.config)


def test_official_size_matches_the_design_floor() -> None:
    # 40 steps, independent CFG over [0.5, 1]: 80 rows of 640 latents. Per latent one
    # row costs about 2.9 GFLOP here (AdaLN runs once per step, not per token).
    cfg = ModelConfig.preset("echo-tts-base")
    flops = sampling_flops(cfg, SamplerConfig(), text_len=120, speaker_tokens=1)
    assert flops.rows == 80
    per_latent = flops.per_row / 640
    assert 2.8e9 < per_latent < 3.0e9
    assert 145e12 < flops.total < 155e12
