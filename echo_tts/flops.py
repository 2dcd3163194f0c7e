"""Analytic FLOP counts of the sampler (multiply-add = 2 FLOPs; matmuls and attention only).

The per-token path of one forward row is every DiT linear layer (q, k, v, gate, out and
the SwiGLU MLP) plus in/out projections, and attention over self + context keys. AdaLN
coefficients depend only on t, so this implementation computes them once per step for
all rows; the text/speaker encoders and their key/value projections run once per call.
These counts give the hardware floor: FLOPs / the device's measured matmul rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from echo_tts.config import ModelConfig
from echo_tts.sampling import SamplerConfig


def forward_row_flops(cfg: ModelConfig, seq_len: int, context_len: int) -> int:
    """FLOPs of one DiT forward row over ``seq_len`` latents attending to ``context_len``
    context keys (text + speaker tokens + prefix tokens)."""
    d, inner = cfg.model_size, cfg.intermediate_size
    linear = 5 * d * d + 3 * d * inner  # wq, wk, wv, gate, wo; w1, w3, w2
    attention = 2 * 2 * seq_len * (seq_len + context_len) * d  # QK^T and AV
    per_layer = 2 * seq_len * linear + attention
    projections = 2 * seq_len * (cfg.latent_size * d * 2)  # in_proj and out_proj
    return cfg.num_layers * per_layer + projections


def modulation_flops(cfg: ModelConfig) -> int:
    """FLOPs of the timestep conditioning and every layer's AdaLN for one step."""
    d, r = cfg.model_size, cfg.adaln_rank
    cond = 2 * (cfg.timestep_embed_size * d + d * d + d * 3 * d)
    adaln = 2 * cfg.num_layers * 3 * (2 * d * r + 2 * r * d)
    return cond + adaln


def encoder_flops(width: int, inner: int, layers: int, tokens: int) -> int:
    """FLOPs of a transformer encoder stack over ``tokens`` tokens."""
    return layers * (2 * tokens * (5 * width * width + 3 * width * inner) + 4 * tokens * tokens * width)


def context_flops(cfg: ModelConfig, text_len: int, speaker_tokens: int) -> int:
    """FLOPs of the text and speaker encoders and every layer's context K/V projections."""
    text = encoder_flops(cfg.text_model_size, cfg.text_intermediate_size, cfg.text_num_layers,
                         text_len)
    speaker_in = 2 * speaker_tokens * cfg.latent_size * cfg.speaker_patch_size * cfg.speaker_model_size
    speaker = speaker_in + encoder_flops(cfg.speaker_model_size, cfg.speaker_intermediate_size,
                                         cfg.speaker_num_layers, speaker_tokens)
    kv = 2 * 2 * cfg.num_layers * cfg.model_size * (text_len * cfg.text_model_size
                                                     + speaker_tokens * cfg.speaker_model_size)
    return text + speaker + kv


@dataclass(frozen=True)
class SamplingFlops:
    """A sampler call's FLOPs by part; ``total`` sums them."""

    rows: int  # forward rows over the whole schedule (NFE x batch)
    per_row: int
    forward: int
    modulation: int
    context: int

    @property
    def total(self) -> int:
        return self.forward + self.modulation + self.context


def sampling_flops(cfg: ModelConfig, sampler: SamplerConfig, text_len: int,
                   speaker_tokens: int, batch: int = 1) -> SamplingFlops:
    """FLOPs of one ``sample_latents`` call for ``batch`` prompts of ``text_len`` bytes
    with ``speaker_tokens`` speaker patches (1 when there is no speaker reference)."""
    per_row = forward_row_flops(cfg, sampler.sequence_length, text_len + speaker_tokens)
    rows = sampler.nfe() * batch
    return SamplingFlops(
        rows=rows,
        per_row=per_row,
        forward=rows * per_row,
        modulation=sampler.num_steps * modulation_flops(cfg),
        context=batch * context_flops(cfg, text_len, speaker_tokens),
    )
