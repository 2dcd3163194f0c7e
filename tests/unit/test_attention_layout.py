"""Sliced attention (contiguous key spans, no mask) against the masked layout."""

from __future__ import annotations

import pytest
import torch

from echo_tts import CFG_MODES, SamplerConfig, encode_text, load_model
from echo_tts.acceleration import DiTForward
from echo_tts.model import AttentionPlan, EchoDiT
from echo_tts.sampling import (
    GUIDANCE_ROWS,
    Conditioning,
    attention_plan,
    encode_speaker_condition,
    encode_text_condition,
    euler_loop,
    initial_noise,
    key_mask,
    key_spans,
    sample_conditioned,
)


@pytest.fixture(scope="module")
def tiny() -> EchoDiT:
    return load_model("random:tiny")


def _prefix_mask(lengths: list[int], width: int) -> torch.Tensor:
    return torch.arange(width)[None] < torch.tensor(lengths)[:, None]


def _speakers(lengths: list[int]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(n, 80, generator=gen) for n in lengths]


def _conditioning(model: EchoDiT, texts: list[str], speakers: list[torch.Tensor]) -> Conditioning:
    """A batch of prompts and speaker latents [L_i, 80], each padded to the longest."""
    ids, mask = encode_text(texts)
    text_state, text_mask = encode_text_condition(model, ids, mask)
    lengths = [len(s) for s in speakers]
    width = max(lengths)
    padded = torch.stack([torch.cat([s, torch.zeros(width - len(s), 80)]) for s in speakers])
    spk_state, spk_tokens = encode_speaker_condition(
        model, padded, _prefix_mask(lengths, width), len(texts))
    return Conditioning(text_state, text_mask, spk_state, spk_tokens)


def _dense(spans: tuple[tuple[int, int, int, int], ...], rows: int, keys: int) -> torch.Tensor:
    mask = torch.zeros(rows, keys, dtype=torch.bool)
    for r0, r1, k0, k1 in spans:
        mask[r0:r1, k0:k1] = True
    return mask


@pytest.mark.parametrize("kinds", [*GUIDANCE_ROWS.values(), ("cond", "no_speaker"), ("cond", "no_both")])
def test_spans_see_exactly_the_keys_the_mask_allows(tiny: EchoDiT, kinds: tuple) -> None:  # type: ignore[type-arg]
    cond = _conditioning(tiny, ["Short.", "A much longer prompt here.", "Mid length."],
                         _speakers([8, 4, 0]))
    context = tiny.context_kv(3 * len(kinds), 12, cond.text_state, cond.speaker_state)
    masks = (cond.text_mask, cond.speaker_token_mask, None)
    spans = key_spans(kinds, context.segments, *masks)
    assert spans is not None
    dense = key_mask(kinds, context.segments, *masks)[:, 0, 0]
    assert torch.equal(_dense(spans, *dense.shape), dense)


def test_equal_rows_share_one_span_group(tiny: EchoDiT) -> None:
    cond = _conditioning(tiny, ["Same.", "Same."], _speakers([8, 8]))
    context = tiny.context_kv(6, 12, cond.text_state, cond.speaker_state)
    spans = key_spans(GUIDANCE_ROWS["independent"], context.segments, cond.text_mask,
                      cond.speaker_token_mask, None)
    assert spans is not None and [(r0, r1) for r0, r1, _, _ in spans] == [(0, 2), (2, 4), (4, 6)]


def test_a_mask_with_holes_falls_back_to_the_key_mask(tiny: EchoDiT) -> None:
    cond = _conditioning(tiny, ["Holes."], _speakers([8]))
    cond.text_mask[0, 2] = False  # not "valid keys, then padding"
    context = tiny.context_kv(3, 12, cond.text_state, cond.speaker_state)
    kinds = GUIDANCE_ROWS["independent"]
    assert key_spans(kinds, context.segments, cond.text_mask, cond.speaker_token_mask, None) is None
    plan = attention_plan(kinds, context.segments, cond, None, sliced=True)
    assert plan.mask is not None and not plan.spans
    with pytest.raises(ValueError, match="either spans or a mask"):
        AttentionPlan()


@pytest.mark.parametrize("mode", CFG_MODES)
def test_sliced_sampling_matches_masked(tiny: EchoDiT, mode: str) -> None:
    # Batch of 2 with unequal prompts and speakers: spans differ per row, padding on both.
    cond = _conditioning(tiny, ["First prompt.", "The second prompt is longer."],
                         _speakers([12, 4]))
    cfg = SamplerConfig(num_steps=4, cfg_mode=mode, sequence_length=16,  # type: ignore[arg-type]
                        speaker_kv_scale=1.5, speaker_kv_min_t=0.6)
    masked = sample_conditioned(tiny, cond, cfg, [3, 4], DiTForward(tiny, attention="masked"))
    sliced = sample_conditioned(tiny, cond, cfg, [3, 4], DiTForward(tiny, attention="sliced"))
    # Same arithmetic over the same keys; only the summation order differs.
    assert float((sliced - masked).norm() / masked.norm()) < 1e-5


@torch.inference_mode()
def test_sliced_prefix_continuation_matches_masked() -> None:
    model = load_model("random:tiny", keep_blockwise=True)
    cond = _conditioning(model, ["Continue this."], _speakers([8]))
    prefix = model.encode_prefix(torch.randn(1, 8, 80))
    prefix_mask = torch.ones(1, 2, dtype=torch.bool)
    cfg = SamplerConfig(num_steps=3, sequence_length=8)
    x = initial_noise(1, 8, 80, 0, model.device)
    outs = [euler_loop(model, x, cfg, cond, prefix, prefix_mask, start_pos=8,
                       forward=DiTForward(model, attention=layout))  # type: ignore[arg-type]
            for layout in ("masked", "sliced")]
    assert float((outs[1] - outs[0]).norm() / outs[0].norm()) < 1e-5


def test_unknown_layout_is_refused(tiny: EchoDiT) -> None:
    with pytest.raises(ValueError, match="sliced, masked"):
        DiTForward(tiny, attention="flash")  # type: ignore[arg-type]


@pytest.mark.parametrize("layout", ["sliced", "masked"])
def test_padding_changes_nothing(tiny: EchoDiT, layout: str) -> None:
    # Each item of a padded batch equals the item sampled alone at its own length.
    texts, speakers, seeds = ["Short.", "A noticeably longer prompt."], _speakers([12, 4]), [3, 4]
    cfg = SamplerConfig(num_steps=3, sequence_length=16)
    forward = DiTForward(tiny, attention=layout)  # type: ignore[arg-type]
    batched = sample_conditioned(tiny, _conditioning(tiny, texts, speakers), cfg, seeds, forward)
    for row in range(2):
        alone = _conditioning(tiny, texts[row : row + 1], speakers[row : row + 1])
        single = sample_conditioned(tiny, alone, cfg, seeds[row : row + 1], forward)
        torch.testing.assert_close(batched[row], single[0], rtol=1e-4, atol=1e-5)
