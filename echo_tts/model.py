"""EchoDiT: the Echo-TTS diffusion transformer.

Parameter names follow the official checkpoint (``jordand/echo-tts-base``), so its state
dict loads with strict key matching. The forward pass is organised for sampling rather
than training:

* timestep conditioning depends only on t, so :meth:`EchoDiT.modulation` computes every
  layer's AdaLN shift/scale/gate for a whole schedule at once;
* text, speaker (and optional latent-prefix) keys/values are computed once per call to
  the sampler and written into a preallocated per-layer key/value buffer
  (:class:`ContextKV`) whose self slots receive the self-attention keys on every step,
  so nothing is concatenated inside the loop;
* the key axis is laid out so that each CFG row kind attends to one contiguous span
  without a mask (:class:`AttentionPlan`), which lets attention use the fused kernels;
* RoPE tables are cached per (length, device).

Shapes: B batch rows, S latent positions, C context keys, H heads, Dh head size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from echo_tts.config import ModelConfig

ROPE_THETA = 10000.0


# --------------------------------------------------------------------------- helpers


def rope_tables(head_dim: int, positions: Tensor) -> Tensor:
    """Complex rotations [len(positions), head_dim // 2] (float32 angles) for RoPE."""
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, head_dim, 2)[: head_dim // 2] / head_dim))
    angles = torch.outer(positions.to("cpu"), inv_freq)
    return torch.polar(torch.ones_like(angles), angles).to(positions.device)


def apply_rope(x: Tensor, rotation: Tensor) -> Tensor:
    """Rotate consecutive pairs of the last dim of x [B, S, H, Dh] by rotation [S, Dh/2]."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * rotation[:, None, :]).flatten(-2).type_as(x)


def timestep_embedding(t: Tensor, size: int) -> Tensor:
    """Sinusoidal embedding [N, size] of t [N] (t in [0, 1], frequencies scaled by 1000)."""
    half = size // 2
    freqs = 1000 * torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(t.dtype)


def rms_normalize(x: Tensor, eps: float) -> Tensor:
    """RMS normalisation over the last dim, computed in float32."""
    xf = x.float()
    return xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)


class RMSNorm(nn.Module):
    def __init__(self, shape: int | tuple[int, ...], eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(shape))

    def forward(self, x: Tensor) -> Tensor:
        return (rms_normalize(x, self.eps) * self.weight).to(x.dtype)


class MLP(nn.Module):
    """SwiGLU feed-forward."""

    def __init__(self, size: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(size, hidden, bias=False)
        self.w3 = nn.Linear(size, hidden, bias=False)
        self.w2 = nn.Linear(hidden, size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


# --------------------------------------------------------------------------- encoders


class EncoderAttention(nn.Module):
    """Self-attention with RoPE on every head, per-head q/k RMSNorm and a sigmoid gate."""

    def __init__(self, size: int, heads: int, causal: bool, eps: float) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.wq = nn.Linear(size, size, bias=False)
        self.wk = nn.Linear(size, size, bias=False)
        self.wv = nn.Linear(size, size, bias=False)
        self.wo = nn.Linear(size, size, bias=False)
        self.gate = nn.Linear(size, size, bias=False)
        self.q_norm = RMSNorm((heads, size // heads), eps)
        self.k_norm = RMSNorm((heads, size // heads), eps)

    def forward(self, x: Tensor, key_mask: Tensor | None, rope: Tensor) -> Tensor:
        b, s, _ = x.shape
        q = apply_rope(self.q_norm(self.wq(x).view(b, s, self.heads, -1)), rope)
        k = apply_rope(self.k_norm(self.wk(x).view(b, s, self.heads, -1)), rope)
        v = self.wv(x).view(b, s, self.heads, -1)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
            attn_mask=key_mask, is_causal=self.causal,
        )
        out = out.transpose(1, 2).reshape(b, s, -1) * torch.sigmoid(self.gate(x))
        return self.wo(out)


class EncoderBlock(nn.Module):
    def __init__(self, size: int, heads: int, hidden: int, causal: bool, eps: float) -> None:
        super().__init__()
        self.attention = EncoderAttention(size, heads, causal, eps)
        self.mlp = MLP(size, hidden)
        self.attention_norm = RMSNorm(size, eps)
        self.mlp_norm = RMSNorm(size, eps)

    def forward(self, x: Tensor, key_mask: Tensor | None, rope: Tensor) -> Tensor:
        x = x + self.attention(self.attention_norm(x), key_mask, rope)
        return x + self.mlp(self.mlp_norm(x))


class TextEncoder(nn.Module):
    """Bidirectional transformer over UTF-8 bytes."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.head_dim = cfg.text_model_size // cfg.text_num_heads
        self.text_embedding = nn.Embedding(cfg.text_vocab_size, cfg.text_model_size)
        self.blocks = nn.ModuleList(
            EncoderBlock(cfg.text_model_size, cfg.text_num_heads, cfg.text_intermediate_size,
                         False, cfg.norm_eps)
            for _ in range(cfg.text_num_layers)
        )

    def forward(self, ids: Tensor, mask: Tensor | None) -> Tensor:
        x = self.text_embedding(ids)
        rope = rope_tables(self.head_dim, torch.arange(ids.shape[1], device=ids.device))
        key_mask = None if mask is None else mask[:, None, None, :]
        for block in self.blocks:
            x = block(x, key_mask, rope)
        return x


class PatchEncoder(nn.Module):
    """Causal transformer over patches of latents (speaker reference or latent prefix)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.patch_size = cfg.speaker_patch_size
        self.head_dim = cfg.speaker_model_size // cfg.speaker_num_heads
        self.in_proj = nn.Linear(cfg.latent_size * cfg.speaker_patch_size, cfg.speaker_model_size)
        self.blocks = nn.ModuleList(
            EncoderBlock(cfg.speaker_model_size, cfg.speaker_num_heads,
                         cfg.speaker_intermediate_size, True, cfg.norm_eps)
            for _ in range(cfg.speaker_num_layers)
        )

    def forward(self, latent: Tensor) -> Tensor:
        """latent [B, L, latent_size] with L a multiple of the patch size -> [B, L/patch, W]."""
        b, length, d = latent.shape
        x = latent.reshape(b, length // self.patch_size, d * self.patch_size)
        # The checkpoint was trained with the projection scaled down by 6.
        x = self.in_proj(x) / 6.0
        rope = rope_tables(self.head_dim, torch.arange(x.shape[1], device=x.device))
        for block in self.blocks:
            x = block(x, None, rope)
        return x


# --------------------------------------------------------------------------- DiT


@dataclass
class ContextKV:
    """Per-layer key/value buffers for R rows: [R, H, K, Dh].

    The key axis seen by attention is ``[text | self | latent prefix | speaker]``;
    ``segments`` maps each name to its slice of that axis. This order makes every row
    kind's keys one contiguous span (see :class:`AttentionPlan`): the conditional row
    sees all of it, a text-dropped row starts at ``self``, a speaker-dropped row stops
    before ``speaker``. Text keys are stored in reverse so that a shorter prompt's valid
    keys (and not its padding) sit next to the self keys; attention does not depend on
    key order.

    With ``self_slots`` (eager), the self slots are rewritten in place with the
    self-attention keys on every step, so nothing is concatenated in the loop. Compiled
    and CUDA-graphed forwards must not mutate their inputs, so they get buffers holding
    only the context (K - S keys) and concatenate the self keys in.
    """

    keys: list[Tensor]
    values: list[Tensor]
    segments: dict[str, slice]
    self_slots: bool = True

    @property
    def rows(self) -> int:
        return self.keys[0].shape[0]

    @property
    def self_span(self) -> slice:
        return self.segments["self"]

    @property
    def seq_len(self) -> int:
        return self.self_span.stop - self.self_span.start

    def head(self, rows: int) -> ContextKV:
        """A view of the first ``rows`` rows (unguided steps use only the conditional rows)."""
        if rows == self.rows:
            return self
        return ContextKV([k[:rows] for k in self.keys], [v[:rows] for v in self.values],
                         self.segments, self.self_slots)

    def buffer_slice(self, name: str) -> slice:
        """Where context segment ``name`` lives in the buffers."""
        span = self.segments[name]
        if self.self_slots or span.start < self.self_span.start:
            return span
        return slice(span.start - self.seq_len, span.stop - self.seq_len)

    def scale_segment(self, name: str, factor: float, max_layers: int | None) -> None:
        """Multiply one segment's keys and values in place, in the first max_layers layers."""
        span = self.buffer_slice(name)
        layers = len(self.keys) if max_layers is None else min(max_layers, len(self.keys))
        for i in range(layers):
            self.keys[i][:, :, span].mul_(factor)
            self.values[i][:, :, span].mul_(factor)


@dataclass(frozen=True)
class AttentionPlan:
    """Which keys each row of a forward attends to; exactly one field is set.

    ``spans``: (row_start, row_stop, key_start, key_stop) groups. Each group's rows attend
    to one contiguous key span with no mask, so scaled_dot_product_attention may use its
    fused flash / cuDNN kernels (which take no mask) and masked-out keys cost nothing.
    ``mask``: a boolean [R, 1, 1, K] over the whole key axis, True where a row may attend;
    any pattern, but SDPA must then use a kernel that accepts a mask and scores every key.
    """

    spans: tuple[tuple[int, int, int, int], ...] = ()
    mask: Tensor | None = None

    def __post_init__(self) -> None:
        if bool(self.spans) == (self.mask is not None):
            raise ValueError("an AttentionPlan takes either spans or a mask")


@dataclass
class Modulation:
    """AdaLN shift/scale/gate per layer for N timesteps: tensors [N, 1, model_size]."""

    attention: list[tuple[Tensor, Tensor, Tensor]]
    mlp: list[tuple[Tensor, Tensor, Tensor]]

    def at(self, index: int) -> Modulation:
        """The modulation of one timestep, kept as a leading dim of 1 for broadcasting."""

        def pick(triples: list[tuple[Tensor, Tensor, Tensor]]) -> list[tuple[Tensor, Tensor, Tensor]]:
            return [(a[index : index + 1], b[index : index + 1], c[index : index + 1])
                    for a, b, c in triples]

        return Modulation(pick(self.attention), pick(self.mlp))


class LowRankAdaLN(nn.Module):
    """AdaLN whose shift/scale/gate are the shared conditioning plus a low-rank update."""

    def __init__(self, size: int, rank: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.shift_down = nn.Linear(size, rank, bias=False)
        self.scale_down = nn.Linear(size, rank, bias=False)
        self.gate_down = nn.Linear(size, rank, bias=False)
        self.shift_up = nn.Linear(rank, size)
        self.scale_up = nn.Linear(rank, size)
        self.gate_up = nn.Linear(rank, size)

    def coefficients(self, cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """cond [N, 3 * size] -> (shift, scale + 1, tanh(gate)), each [N, 1, size]."""
        shift, scale, gate = cond.chunk(3, dim=-1)
        shift = shift + self.shift_up(self.shift_down(F.silu(shift)))
        scale = scale + self.scale_up(self.scale_down(F.silu(scale)))
        gate = gate + self.gate_up(self.gate_down(F.silu(gate)))
        return shift[:, None], (scale + 1)[:, None], torch.tanh(gate)[:, None]

    def normalize(self, x: Tensor, shift: Tensor, scale_plus_one: Tensor) -> Tensor:
        return (rms_normalize(x, self.eps) * scale_plus_one + shift).to(x.dtype)


class JointAttention(nn.Module):
    """Latent queries attend jointly to themselves and to cached context keys.

    RoPE is applied to the first half of the heads of queries, self keys and latent-prefix
    keys; text and speaker keys carry no position.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        size, heads = cfg.model_size, cfg.num_heads
        self.heads, self.head_dim = heads, size // heads
        self.wq = nn.Linear(size, size, bias=False)
        self.wk = nn.Linear(size, size, bias=False)
        self.wv = nn.Linear(size, size, bias=False)
        self.wk_text = nn.Linear(cfg.text_model_size, size, bias=False)
        self.wv_text = nn.Linear(cfg.text_model_size, size, bias=False)
        self.wk_speaker = nn.Linear(cfg.speaker_model_size, size, bias=False)
        self.wv_speaker = nn.Linear(cfg.speaker_model_size, size, bias=False)
        self.wk_latent = nn.Linear(cfg.speaker_model_size, size, bias=False)
        self.wv_latent = nn.Linear(cfg.speaker_model_size, size, bias=False)
        self.q_norm = RMSNorm((heads, self.head_dim), cfg.norm_eps)
        self.k_norm = RMSNorm((heads, self.head_dim), cfg.norm_eps)
        self.gate = nn.Linear(size, size, bias=False)
        self.wo = nn.Linear(size, size, bias=False)

    def rope_half(self, x: Tensor, rope: Tensor) -> Tensor:
        """Rotate the first half of the heads of x [B, S, H, Dh] in place; the other half
        carries no position. (Writing into the slice copies half the tensor; a concat of
        the halves would copy all of it.)"""
        half = self.heads // 2
        x[:, :, :half] = apply_rope(x[:, :, :half], rope)
        return x

    def context_kv(self, state: Tensor, which: str, rope: Tensor | None = None
                   ) -> tuple[Tensor, Tensor]:
        """Keys/values [B, H, L, Dh] of an encoder state [B, L, W] ('text'|'speaker'|'latent')."""
        wk, wv = getattr(self, f"wk_{which}"), getattr(self, f"wv_{which}")
        b, length, _ = state.shape
        k = self.k_norm(wk(state).view(b, length, self.heads, -1))
        if rope is not None:
            k = self.rope_half(k, rope)
        v = wv(state).view(b, length, self.heads, -1)
        return k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x: Tensor, keys: Tensor, values: Tensor, plan: AttentionPlan,
                rope: Tensor, self_span: slice, in_place: bool) -> Tensor:
        b, s, _ = x.shape
        q = self.rope_half(self.q_norm(self.wq(x).view(b, s, self.heads, -1)), rope).transpose(1, 2)
        k = self.rope_half(self.k_norm(self.wk(x).view(b, s, self.heads, -1)), rope).transpose(1, 2)
        v = self.wv(x).view(b, s, self.heads, -1).transpose(1, 2)
        if in_place:
            keys[:, :, self_span].copy_(k)
            values[:, :, self_span].copy_(v)
        else:
            at = self_span.start
            keys = torch.cat([keys[:, :, :at], k, keys[:, :, at:]], dim=2)
            values = torch.cat([values[:, :, :at], v, values[:, :, at:]], dim=2)
        if plan.mask is not None:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=plan.mask)
        else:
            parts = [F.scaled_dot_product_attention(q[r0:r1], keys[r0:r1, :, k0:k1],
                                                    values[r0:r1, :, k0:k1])
                     for r0, r1, k0, k1 in plan.spans]
            out = parts[0] if len(parts) == 1 else torch.cat(parts)
        out = out.transpose(1, 2).reshape(b, s, -1) * torch.sigmoid(self.gate(x))
        return self.wo(out)


class DiTBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention = JointAttention(cfg)
        self.mlp = MLP(cfg.model_size, cfg.intermediate_size)
        self.attention_adaln = LowRankAdaLN(cfg.model_size, cfg.adaln_rank, cfg.norm_eps)
        self.mlp_adaln = LowRankAdaLN(cfg.model_size, cfg.adaln_rank, cfg.norm_eps)

    def forward(self, x: Tensor, attn_mod: tuple[Tensor, Tensor, Tensor],
                mlp_mod: tuple[Tensor, Tensor, Tensor], keys: Tensor, values: Tensor,
                plan: AttentionPlan, rope: Tensor, self_span: slice, in_place: bool) -> Tensor:
        shift, scale, gate = attn_mod
        h = self.attention_adaln.normalize(x, shift, scale)
        x = x + gate * self.attention(h, keys, values, plan, rope, self_span, in_place)
        shift, scale, gate = mlp_mod
        h = self.mlp_adaln.normalize(x, shift, scale)
        return x + gate * self.mlp(h)


# Parameters only blockwise generation (a latent prefix) needs; inference without a
# prefix can drop them at load time.
BLOCKWISE_PREFIXES = ("latent_encoder.", "latent_norm.")
BLOCKWISE_INFIXES = (".wk_latent.", ".wv_latent.")


def is_blockwise_key(key: str) -> bool:
    return key.startswith(BLOCKWISE_PREFIXES) or any(s in key for s in BLOCKWISE_INFIXES)


class EchoDiT(nn.Module):
    """The Echo-TTS diffusion transformer (velocity prediction over PCA'd S1-DAC latents)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        cfg = self.config = config
        self.text_encoder = TextEncoder(cfg)
        self.speaker_encoder = PatchEncoder(cfg)
        self.latent_encoder = PatchEncoder(cfg)
        self.text_norm = RMSNorm(cfg.text_model_size, cfg.norm_eps)
        self.speaker_norm = RMSNorm(cfg.speaker_model_size, cfg.norm_eps)
        self.latent_norm = RMSNorm(cfg.speaker_model_size, cfg.norm_eps)
        self.cond_module = nn.Sequential(
            nn.Linear(cfg.timestep_embed_size, cfg.model_size, bias=False),
            nn.SiLU(),
            nn.Linear(cfg.model_size, cfg.model_size, bias=False),
            nn.SiLU(),
            nn.Linear(cfg.model_size, cfg.model_size * 3, bias=False),
        )
        self.in_proj = nn.Linear(cfg.latent_size, cfg.model_size)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.num_layers))
        self.out_norm = RMSNorm(cfg.model_size, cfg.norm_eps)
        self.out_proj = nn.Linear(cfg.model_size, cfg.latent_size)
        self._rope_cache: dict[tuple[int, int, str], Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self.in_proj.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.in_proj.weight.dtype

    @property
    def layers(self) -> list[DiTBlock]:
        """The DiT blocks, typed (iterating the ModuleList yields plain Modules)."""
        return [cast(DiTBlock, block) for block in self.blocks]

    @property
    def has_blockwise(self) -> bool:
        """False when the blockwise (latent-prefix) modules were dropped at load time."""
        return hasattr(self, "latent_encoder")

    def drop_blockwise(self) -> None:
        """Delete the latent-prefix modules (about 0.4B parameters at the official size)."""
        del self.latent_encoder, self.latent_norm
        for block in self.layers:
            del block.attention.wk_latent, block.attention.wv_latent

    def rope(self, start: int, length: int, stride: int = 1) -> Tensor:
        """Cached rotations [length, Dh/2] for positions start, start+stride, ..."""
        key = (start, length, f"{stride}:{self.device}")
        if key not in self._rope_cache:
            positions = torch.arange(length, device=self.device) * stride + start
            self._rope_cache[key] = rope_tables(self.config.head_dim, positions)
        return self._rope_cache[key]

    # ---- conditioning, computed once per sampler call

    def encode_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Text state [B, T, text_model_size] of byte ids [B, T] with mask [B, T]."""
        return self.text_norm(self.text_encoder(ids, mask))

    def encode_speaker(self, latent: Tensor) -> Tensor:
        """Speaker state [B, L/patch, W] of speaker latents [B, L, 80] (L multiple of patch)."""
        return self.speaker_norm(self.speaker_encoder(latent.to(self.dtype)))

    def encode_prefix(self, latent: Tensor) -> Tensor:
        """Latent-prefix state [B, L/patch, W] for blockwise generation."""
        if not self.has_blockwise:
            raise RuntimeError("this model was loaded without its blockwise modules; "
                               "load it with keep_blockwise=True to continue a latent prefix")
        return self.latent_norm(self.latent_encoder(latent.to(self.dtype)))

    def modulation(self, t: Tensor) -> Modulation:
        """AdaLN coefficients of every layer for timesteps t [N] (in the model's dtype)."""
        cond = self.cond_module(timestep_embedding(t.to(self.dtype), self.config.timestep_embed_size))
        return Modulation(
            attention=[blk.attention_adaln.coefficients(cond) for blk in self.layers],
            mlp=[blk.mlp_adaln.coefficients(cond) for blk in self.layers],
        )

    def context_kv(self, rows: int, seq_len: int, text_state: Tensor, speaker_state: Tensor,
                   prefix_state: Tensor | None = None, self_slots: bool = True) -> ContextKV:
        """Allocate per-layer buffers for ``rows`` rows and fill their context slots.

        The states have batch B and ``rows`` must be a multiple of B: row r uses the
        context of batch item r % B (CFG rows are stacked as [cond; drop_a; drop_b]).
        See :class:`ContextKV` for the key layout and ``self_slots``.
        """
        batch = text_state.shape[0]
        if rows % batch:
            raise ValueError(f"rows {rows} is not a multiple of the batch {batch}")
        prefix_len = 0 if prefix_state is None else prefix_state.shape[1]
        lengths = {"text": text_state.shape[1], "self": seq_len, "latent": prefix_len,
                   "speaker": speaker_state.shape[1]}
        segments, start = {}, 0
        for name, n in lengths.items():
            segments[name] = slice(start, start + n)
            start += n
        parts: list[tuple[str, Tensor, Tensor | None]] = [
            ("text", text_state.flip(1), None), ("speaker", speaker_state, None)]
        if prefix_state is not None:
            prefix_rope = self.rope(0, prefix_len, self.config.speaker_patch_size)
            parts.append(("latent", prefix_state, prefix_rope))
        keys: list[Tensor] = []
        values: list[Tensor] = []
        context = ContextKV(keys, values, segments, self_slots)
        shape = (rows, self.config.num_heads, start if self_slots else start - seq_len,
                 self.config.head_dim)
        for block in self.layers:
            k_buf = torch.empty(shape, device=self.device, dtype=self.dtype)
            v_buf = torch.empty_like(k_buf)
            for name, state, positions in parts:
                k, v = block.attention.context_kv(state, name, positions)
                reps = rows // batch
                k_buf[:, :, context.buffer_slice(name)] = k.repeat(reps, 1, 1, 1)
                v_buf[:, :, context.buffer_slice(name)] = v.repeat(reps, 1, 1, 1)
            keys.append(k_buf)
            values.append(v_buf)
        return context

    # ---- the velocity prediction

    def forward(self, x: Tensor, modulation: Modulation, context: ContextKV,
                plan: AttentionPlan, start_pos: int = 0) -> Tensor:
        """Velocity [R, S, latent_size] (float32) for noisy latents x [R, S, latent_size].

        ``modulation`` holds one timestep (leading dim 1, broadcast over rows) or one per
        row; ``plan`` says which keys of the context's key axis each row attends to;
        ``context`` must have been built for R rows and S = context.seq_len positions.
        """
        rows, s, _ = x.shape
        if rows != context.rows or s != context.seq_len:
            raise ValueError(f"x has {rows} rows x {s} positions but the context was built "
                             f"for {context.rows} x {context.seq_len}")
        rope = self.rope(start_pos, s)
        h = self.in_proj(x.to(self.dtype))
        for i, block in enumerate(self.layers):
            h = block(h, modulation.attention[i], modulation.mlp[i], context.keys[i],
                      context.values[i], plan, rope, context.self_span, context.self_slots)
        return self.out_proj(self.out_norm(h)).float()
