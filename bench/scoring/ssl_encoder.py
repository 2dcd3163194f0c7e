"""Self-supervised speech encoders of the wav2vec 2.0 family: WavLM-large and wav2vec 2.0 base.

Our own PyTorch implementation, written from the architecture as published (WavLM paper and
microsoft/unilm; fairseq's wav2vec 2.0). Module and parameter names follow the official
fairseq checkpoints, so their state dicts load with strict key checking:

* ``feature_extractor.conv_layers.<i>.0.weight``: the strided waveform convolutions; their
  norm is ``.2.1.{weight,bias}`` (a LayerNorm over channels in every block, "layer_norm"
  mode) or ``.2.{weight,bias}`` on block 0 only (a GroupNorm with one group per channel,
  "default" mode);
* ``layer_norm``, ``post_extract_proj``, ``mask_emb`` (unused at inference, but stored);
* ``encoder.pos_conv.0.{weight_g,weight_v,bias}``: the weight-normalised convolutional
  position embedding; ``encoder.layer_norm``;
* ``encoder.layers.<i>.self_attn.{q,k,v,out}_proj``, ``self_attn_layer_norm``, ``fc1``,
  ``fc2``, ``final_layer_norm``; WavLM adds ``self_attn.grep_linear`` and ``self_attn.grep_a``
  (gated relative position bias) in every layer and ``self_attn.relative_attention_bias``
  in layer 0, whose bucketed bias every later layer reuses through its own gate.

Every size is a field of `SSLConfig`, so the tests build the same code at toy sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WAV2VEC2_BASE", "WAVLM_LARGE", "SSLConfig", "SSLEncoder"]

_CONV_STACK = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2


@dataclass(frozen=True)
class SSLConfig:
    """Sizes and variants of a wav2vec 2.0-family encoder.

    ``conv_layers`` lists (channels, kernel, stride) of the waveform convolutions (the
    official stack turns 16 kHz into 50 frames/s). ``layer_norm_first`` selects pre-norm
    layers (WavLM-large; the encoder's final LayerNorm then comes after the last layer)
    or post-norm ones (wav2vec 2.0 base; the LayerNorm comes before the first layer).
    ``rel_pos_buckets`` = 0 turns WavLM's gated relative position bias off.
    ``normalize_waveform`` standardises each input waveform (zero mean, unit variance),
    as WavLM-large was trained.
    """

    conv_layers: tuple[tuple[int, int, int], ...] = _CONV_STACK
    extractor_norm: str = "layer"  # "layer": every block; "group": block 0 only
    embed_dim: int = 1024
    ffn_dim: int = 4096
    heads: int = 16
    layers: int = 24
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    layer_norm_first: bool = True
    rel_pos_buckets: int = 320
    rel_pos_max_distance: int = 800
    normalize_waveform: bool = True

    def __post_init__(self) -> None:
        if self.extractor_norm not in ("layer", "group"):
            raise ValueError(f"extractor_norm must be 'layer' or 'group', got {self.extractor_norm!r}")
        if self.embed_dim % self.heads or self.embed_dim % self.pos_conv_groups:
            raise ValueError("embed_dim must be divisible by heads and pos_conv_groups")
        if self.pos_conv_kernel % 2:
            raise ValueError("pos_conv_kernel must be even (the official kernels are)")


# Published configurations: WavLM-large (microsoft/unilm, the s3prl "wavlm_large" upstream
# Seed-TTS-eval's speaker model is built on) and wav2vec 2.0 base (fairseq wav2vec_small,
# the SSL model inside UTMOS22 strong).
WAVLM_LARGE = SSLConfig()
WAV2VEC2_BASE = SSLConfig(extractor_norm="group", embed_dim=768, ffn_dim=3072, heads=12,
                          layers=12, layer_norm_first=False, rel_pos_buckets=0,
                          normalize_waveform=False)


class _SwapChannels(nn.Module):
    """[B, C, T] <-> [B, T, C], so a LayerNorm can normalise over channels."""

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(-2, -1)


def _conv_block(n_in: int, n_out: int, kernel: int, stride: int, norm: str | None) -> nn.Sequential:
    # Index 1 is the dropout of the training graph: kept as an Identity so the norm sits
    # at index 2, where the checkpoint keys put it.
    parts: list[nn.Module] = [nn.Conv1d(n_in, n_out, kernel, stride=stride, bias=False), nn.Identity()]
    if norm == "layer":
        parts.append(nn.Sequential(_SwapChannels(), nn.LayerNorm(n_out), _SwapChannels()))
    elif norm == "group":
        parts.append(nn.GroupNorm(n_out, n_out))
    parts.append(nn.GELU())
    return nn.Sequential(*parts)


class FeatureExtractor(nn.Module):
    """Waveform [B, samples] -> frames [B, channels, frames]."""

    def __init__(self, cfg: SSLConfig) -> None:
        super().__init__()
        blocks = []
        n_in = 1
        for i, (dim, kernel, stride) in enumerate(cfg.conv_layers):
            norm = "layer" if cfg.extractor_norm == "layer" else ("group" if i == 0 else None)
            blocks.append(_conv_block(n_in, dim, kernel, stride, norm))
            n_in = dim
        self.conv_layers = nn.ModuleList(blocks)

    def forward(self, wav: Tensor) -> Tensor:
        x = wav.unsqueeze(1)
        for block in self.conv_layers:
            x = block(x)
        return x


class WeightNormConv(nn.Module):
    """Grouped Conv1d whose weight is ``weight_g * weight_v / ||weight_v||``, the norm taken
    over every dimension but the kernel axis (weight_norm with dim=2), stored as the two
    tensors the official checkpoints hold (``weight_g`` [1, 1, K], ``weight_v``)."""

    def __init__(self, channels: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.randn(channels, channels // groups, kernel) * 0.02)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.padding = kernel // 2
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        norm = self.weight_v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
        weight = self.weight_g * self.weight_v / norm
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class _DropLast(nn.Module):
    """An even kernel with padding k/2 yields one frame too many; drop the last one."""

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, :-1]


class SelfAttention(nn.Module):
    """Multi-head self-attention, optionally with WavLM's gated relative position bias."""

    def __init__(self, cfg: SSLConfig, has_bias_table: bool) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.heads = cfg.heads
        self.head_dim = dim // cfg.heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.gated = cfg.rel_pos_buckets > 0
        self.buckets = cfg.rel_pos_buckets
        self.max_distance = cfg.rel_pos_max_distance
        if self.gated:
            # Per head: 8 logits from the query's head slice, summed in two groups of 4
            # into the gates a and b; grep_a is a learned per-head constant.
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, cfg.heads, 1, 1))
        if has_bias_table:
            self.relative_attention_bias = nn.Embedding(cfg.rel_pos_buckets, cfg.heads)

    def position_bias(self, length: int) -> Tensor:
        """Bucketed relative position bias [heads, T, T] (T5-style buckets, bidirectional:
        half of the buckets per direction, half of those exact, the rest log-spaced up to
        ``max_distance``)."""
        pos = torch.arange(length, device=self.relative_attention_bias.weight.device)
        rel = pos[None, :] - pos[:, None]  # key position - query position
        half = self.buckets // 2
        bucket = (rel > 0).long() * half
        dist = rel.abs()
        exact = half // 2
        log_part = exact + (
            torch.log(dist.float().clamp(min=1) / exact) / math.log(self.max_distance / exact)
            * (half - exact)
        ).long()
        bucket = bucket + torch.where(dist < exact, dist, log_part.clamp(max=half - 1))
        bias: Tensor = self.relative_attention_bias(bucket)  # [T, T, heads]
        return bias.permute(2, 0, 1)

    def forward(self, x: Tensor, bias: Tensor | None) -> Tensor:
        """x: [B, T, C]; bias: [heads, T, T] or None. Returns [B, T, C]."""
        b, t, c = x.shape

        def split(y: Tensor) -> Tensor:
            return y.view(b, t, self.heads, self.head_dim).transpose(1, 2)

        mask = None
        if bias is not None and self.gated:
            gates = torch.sigmoid(self.grep_linear(split(x)).view(b, self.heads, t, 2, 4).sum(-1))
            gate_a, gate_b = gates[..., :1], gates[..., 1:]
            gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0  # [B, H, T, 1], per query
            mask = gate * bias.unsqueeze(0)
        elif bias is not None:
            mask = bias.unsqueeze(0)
        out = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)),
                                             split(self.v_proj(x)), attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, c))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: SSLConfig, has_bias_table: bool) -> None:
        super().__init__()
        self.self_attn = SelfAttention(cfg, has_bias_table)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        self.final_layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.pre_norm = cfg.layer_norm_first

    def forward(self, x: Tensor, bias: Tensor | None) -> Tensor:
        if self.pre_norm:
            x = x + self.self_attn(self.self_attn_layer_norm(x), bias)
            return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
        x = self.self_attn_layer_norm(x + self.self_attn(x, bias))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: SSLConfig) -> None:
        super().__init__()
        self.pos_conv = nn.Sequential(
            WeightNormConv(cfg.embed_dim, cfg.pos_conv_kernel, cfg.pos_conv_groups),
            _DropLast(), nn.GELU())
        self.layers = nn.ModuleList(
            EncoderLayer(cfg, has_bias_table=cfg.rel_pos_buckets > 0 and i == 0)
            for i in range(cfg.layers))
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.pre_norm = cfg.layer_norm_first

    def forward(self, x: Tensor) -> list[Tensor]:
        """x: [B, T, C]. Returns the hidden states the way s3prl exposes them: the input of
        every layer, then the encoder's output (after the final LayerNorm in pre-norm
        models), so ``layers + 1`` tensors of shape [B, T, C]."""
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.pre_norm:
            x = self.layer_norm(x)
        first = self.layers[0]
        assert isinstance(first, EncoderLayer)
        attn = first.self_attn
        bias = attn.position_bias(x.shape[1]) if hasattr(attn, "relative_attention_bias") else None
        states = []
        for layer in self.layers:
            states.append(x)
            x = layer(x, bias)
        states.append(self.layer_norm(x) if self.pre_norm else x)
        return states


class SSLEncoder(nn.Module):
    """Waveform(s) at 16 kHz -> hidden states, one per layer input plus the output.

    Args of forward: ``wav`` [B, samples], all items the same length (no padding mask:
    callers encode clips of different lengths one at a time).
    """

    def __init__(self, cfg: SSLConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.feature_extractor = FeatureExtractor(cfg)
        channels = cfg.conv_layers[-1][0]
        self.layer_norm = nn.LayerNorm(channels)
        self.post_extract_proj = nn.Linear(channels, cfg.embed_dim)
        # Learned mask vector of pre-training; stored in the checkpoints, unused here.
        self.mask_emb = nn.Parameter(torch.zeros(cfg.embed_dim))
        self.encoder = TransformerEncoder(cfg)

    def min_samples(self) -> int:
        """Fewest samples that give one frame out of the convolution stack."""
        n = 1
        for _, kernel, stride in reversed(self.cfg.conv_layers):
            n = (n - 1) * stride + kernel
        return n

    def forward(self, wav: Tensor) -> list[Tensor]:
        if self.cfg.normalize_waveform:
            wav = F.layer_norm(wav, wav.shape[-1:])
        frames = self.feature_extractor(wav).transpose(1, 2)
        states: list[Tensor] = self.encoder(self.post_extract_proj(self.layer_norm(frames)))
        return states
