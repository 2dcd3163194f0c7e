"""Fish S1-DAC, the audio autoencoder behind Echo-TTS, and its PCA latent transform.

Encoding: 44.1 kHz audio -> causal convolutional encoder (one frame per 512 samples) ->
a 4x strided downsampler and a windowed causal transformer (one frame per 2048 samples)
-> a residual vector quantizer (one semantic codebook, then nine residual ones). Echo-TTS
does not model the discrete codes: it models ``z_q``, the sum of the chosen codebook
vectors (1024 dims), projected by a PCA to 80 dims and scaled. Decoding inverts the PCA
and runs a transformer, a 4x upsampler and the convolutional decoder.

Parameter names follow the official checkpoint (``jordand/fish-s1-dac-min``): convolutions
keep torch's weight-norm parametrisation (``...parametrizations.weight.original0/1``), so
its state dict loads with strict key matching. Only the inference path exists: no losses,
dropout or quantizer dropout.

Shapes: B batch, T audio samples, C channels, F encoder frames (512 samples each),
L latents (2048 samples each, F = 4 L), D codec width (1024), P PCA dims (80).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from echo_tts.model import MLP, rms_normalize
from echo_tts.weights import (
    DEFAULT_MODEL_REPO,
    WeightsError,
    check_state_dict,
    config_from_metadata,
    randomize_,
    read_safetensors,
    resolve_source,
)

DEFAULT_CODEC_REPO = "jordand/fish-s1-dac-min"
DEFAULT_PCA_REPO = DEFAULT_MODEL_REPO  # the PCA state ships with the DiT checkpoint
CODEC_FILENAME = "pytorch_model.safetensors"
PCA_FILENAME = "pca_state.safetensors"
CONFIG_METADATA_KEY = "echo_tts_codec_config"
# Non-learned buffers of the original implementation (RoPE table, causal mask). A
# checkpoint may carry them; they are recomputed here, so such keys are skipped on load.
_BUFFER_SUFFIXES = (".freqs_cis", ".causal_mask")


@dataclass(frozen=True)
class CodecConfig:
    """Architecture of the S1-DAC codec; ``preset("s1-dac")`` is the official one."""

    sample_rate: int = 44100
    encoder_dim: int = 64  # width of the first conv; doubles at every encoder block
    encoder_rates: tuple[int, ...] = (2, 4, 8, 8)
    encoder_transformer_layers: tuple[int, ...] = (0, 0, 0, 4)  # after each encoder block
    encoder_window: int = 512  # frames each encoder-transformer query attends back over
    latent_dim: int = 1024  # D
    downsample_factors: tuple[int, ...] = (2, 2)
    quantizer_layers: int = 8  # layers in each of the two quantizer transformers
    quantizer_window: int = 128
    semantic_codebook_size: int = 4096
    n_codebooks: int = 9  # residual codebooks after the semantic one
    codebook_size: int = 1024
    codebook_dim: int = 8
    decoder_dim: int = 1536  # width of the first decoder conv; halves at every block
    decoder_rates: tuple[int, ...] = (8, 8, 4, 2)
    head_dim: int = 64  # every transformer has width // head_dim heads
    mlp_ratio: int = 3  # transformer feed-forward width / model width
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    pca_dim: int = 80  # P: the latent size the DiT sees

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # The official jordand/fish-s1-dac-min architecture (about 391M parameters).
        "s1-dac": {},
        # Same structure and hop (2048 samples per latent, 80 PCA dims) at tiny widths, so
        # a second of audio encodes and decodes in milliseconds on CPU.
        "tiny": dict(
            encoder_dim=4, encoder_transformer_layers=(0, 0, 0, 1), latent_dim=128,
            quantizer_layers=1, semantic_codebook_size=64, n_codebooks=2, codebook_size=32,
            decoder_dim=64, head_dim=16,
        ),
    }

    def __post_init__(self) -> None:
        if len(self.encoder_transformer_layers) != len(self.encoder_rates):
            raise ValueError("encoder_transformer_layers needs one entry per encoder rate")
        if math.prod(self.encoder_rates) != math.prod(self.decoder_rates):
            raise ValueError(f"encoder rates {self.encoder_rates} and decoder rates "
                             f"{self.decoder_rates} must have the same product (the hop)")
        if self.decoder_dim % 2 ** len(self.decoder_rates):
            raise ValueError("decoder_dim must halve cleanly at every decoder block")
        widths = [self.latent_dim] + [self.encoder_dim * 2 ** (i + 1)
                                      for i, n in enumerate(self.encoder_transformer_layers) if n]
        for width in widths:
            if width % self.head_dim or (self.head_dim % 2):
                raise ValueError(f"transformer width {width} is not a multiple of the even "
                                 f"head_dim {self.head_dim}")
        if self.pca_dim > self.latent_dim:
            raise ValueError(f"pca_dim {self.pca_dim} exceeds latent_dim {self.latent_dim}")

    @classmethod
    def preset(cls, name: str) -> CodecConfig:
        """The named preset; an unknown name raises ValueError listing the known ones."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown codec preset {name!r}; choose one of {sorted(cls.PRESETS)}")
        return cls(**cls.PRESETS[name])

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CodecConfig:
        """Inverse of :meth:`to_dict` (JSON turns the tuples into lists)."""
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in values.items()}
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def hop_length(self) -> int:
        """Audio samples per encoder frame (512 for the official codec)."""
        return math.prod(self.encoder_rates)

    @property
    def samples_per_latent(self) -> int:
        """Audio samples per latent (2048 for the official codec)."""
        return self.hop_length * math.prod(self.downsample_factors)


# --------------------------------------------------------------------------- convolutions


class Snake(nn.Module):
    """Periodic activation x + sin^2(alpha x) / alpha with a learned alpha per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        # The 1e-9 guards against alpha = 0; the same expression as the original, so the
        # float rounding matches too.
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class CausalConv1d(nn.Module):
    """Conv1d [B, C_in, T] -> [B, C_out, ceil(T / stride)] that never looks ahead,
    weight-normed by default.

    The input is zero-padded on the left by the receptive field minus the stride, and on
    the right just enough for the stride to tile it, so output frame i depends only on
    input samples up to (i + 1) * stride - 1.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 stride: int = 1, dilation: int = 1, groups: int = 1,
                 normalized: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride,
                              dilation=dilation, groups=groups)
        if normalized:
            weight_norm(self.conv)
        self.stride = stride
        self.left_pad = (kernel_size - 1) * dilation + 1 - stride

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (self.left_pad, -x.shape[-1] % self.stride)))


class CausalConvTranspose1d(nn.Module):
    """ConvTranspose1d [B, C_in, F] -> [B, C_out, F * stride], weight-normed by default.

    The kernel's overhang past the last input frame (kernel_size - stride samples) is cut.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 *, normalized: bool = True) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride)
        if normalized:
            weight_norm(self.conv)
        self.overhang = kernel_size - stride

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return y[..., : y.shape[-1] - self.overhang]


class ResidualUnit(nn.Module):
    """x + conv1(snake(conv7_dilated(snake(x)))); causal convs keep the length."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Snake(channels),
            CausalConv1d(channels, channels, 7, dilation=dilation),
            Snake(channels),
            CausalConv1d(channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def _residual_units(channels: int) -> list[nn.Module]:
    return [ResidualUnit(channels, dilation) for dilation in (1, 3, 9)]


class EncoderBlock(nn.Module):
    """[B, width / 2, T] -> [B, width, T / stride]: residual units, a strided conv and an
    optional windowed transformer."""

    def __init__(self, width: int, stride: int, transformer: nn.Module) -> None:
        super().__init__()
        self.block = nn.Sequential(
            *_residual_units(width // 2),
            Snake(width // 2),
            CausalConv1d(width // 2, width, 2 * stride, stride=stride),
            transformer,
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class Encoder(nn.Module):
    """Audio [B, 1, T] -> frames [B, D, T / hop_length]."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        width = config.encoder_dim
        layers: list[nn.Module] = [CausalConv1d(1, width, 7)]
        for stride, n_layers in zip(config.encoder_rates, config.encoder_transformer_layers,
                                    strict=True):
            width *= 2
            transformer: nn.Module = (
                WindowedTransformer(width, n_layers, config.encoder_window, config)
                if n_layers else nn.Identity()
            )
            layers.append(EncoderBlock(width, stride, transformer))
        layers += [Snake(width), CausalConv1d(width, config.latent_dim, 3)]
        self.block = nn.Sequential(*layers)

    def forward(self, audio: Tensor) -> Tensor:
        return self.block(audio)


class DecoderBlock(nn.Module):
    """[B, C_in, F] -> [B, C_out, F * stride]: upsampling conv then residual units."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Snake(in_channels),
            CausalConvTranspose1d(in_channels, out_channels, 2 * stride, stride),
            *_residual_units(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class Decoder(nn.Module):
    """Frames [B, D, F] -> audio [B, 1, F * hop_length] in [-1, 1].

    (The original also configures decoder transformer layers, but never wires them into
    the network, so they have neither weights nor effect and are absent here.)
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        width = config.decoder_dim
        layers: list[nn.Module] = [CausalConv1d(config.latent_dim, width, 7)]
        for stride in config.decoder_rates:
            layers.append(DecoderBlock(width, width // 2, stride))
            width //= 2
        layers += [Snake(width), CausalConv1d(width, 1, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, frames: Tensor) -> Tensor:
        return self.model(frames)


# --------------------------------------------------------------------------- transformer


@functools.lru_cache(maxsize=16)
def _rope_table(length: int, head_dim: int, base: float, device: torch.device) -> Tensor:
    """cos/sin [length, head_dim / 2, 2] in float32, rounded through bfloat16.

    The original stores this table as a bfloat16 buffer built with torch.polar; the codec
    was trained with those rounded values, so they are reproduced exactly. (Cached tables
    are built outside inference mode so that they can be reused anywhere.)
    """
    with torch.inference_mode(False):
        return _build_rope_table(length, head_dim, base).to(device)


def _build_rope_table(length: int, head_dim: int, base: float) -> Tensor:
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(length), inv_freq)
    rotation = torch.polar(torch.ones_like(angles), angles)
    return torch.stack([rotation.real, rotation.imag], dim=-1).to(torch.bfloat16).float()


@functools.lru_cache(maxsize=16)
def _window_mask(length: int, window: int, device: torch.device) -> Tensor:
    """Bool [length, length]: query i sees keys i - window + 1 .. i."""
    with torch.inference_mode(False):
        query = torch.arange(length, device=device)[:, None]
        key = torch.arange(length, device=device)[None, :]
        return (key <= query) & (key > query - window)


def _apply_rope(x: Tensor, table: Tensor) -> Tensor:
    """Rotate consecutive pairs of x [B, F, H, Dh] by the angles of table [F, Dh / 2, 2]."""
    pairs = x.float().unflatten(-1, (-1, 2))
    cos, sin = table[:, None, :, 0], table[:, None, :, 1]
    real, imag = pairs[..., 0], pairs[..., 1]
    return torch.stack((real * cos - imag * sin, imag * cos + real * sin), -1).flatten(3).type_as(x)


class RMSNorm(nn.Module):
    """RMS normalisation over the last dim in float32, scaled after casting back."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Cast back before the weight (the DiT's RMSNorm scales in float32): the codec's
        # own rounding order, which bit-parity with the reference needs.
        return rms_normalize(x, self.eps).type_as(x) * self.weight


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, dim: int, head_dim: int) -> None:
        super().__init__()
        self.n_heads, self.head_dim = dim // head_dim, head_dim
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, rope: Tensor, mask: Tensor) -> Tensor:
        batch, length, dim = x.shape
        q, k, v = self.wqkv(x).unflatten(-1, (3, self.n_heads, self.head_dim)).unbind(2)
        q, k = _apply_rope(q, rope), _apply_rope(k, rope)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                           v.transpose(1, 2), attn_mask=mask)
        return self.wo(y.transpose(1, 2).reshape(batch, length, dim))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, config: CodecConfig) -> None:
        super().__init__()
        self.attention = Attention(dim, config.head_dim)
        self.feed_forward = MLP(dim, config.mlp_ratio * dim)
        self.attention_norm = RMSNorm(dim, config.norm_eps)
        self.ffn_norm = RMSNorm(dim, config.norm_eps)
        self.attention_layer_scale = LayerScale(dim)
        self.ffn_layer_scale = LayerScale(dim)

    def forward(self, x: Tensor, rope: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attention_layer_scale(self.attention(self.attention_norm(x), rope, mask))
        return x + self.ffn_layer_scale(self.feed_forward(self.ffn_norm(x)))


class WindowedTransformer(nn.Module):
    """Causal pre-norm transformer over channels-first frames [B, C, F] -> [B, C, F].

    Each frame attends to itself and the ``window - 1`` frames before it; positions are
    rotary (RoPE over consecutive pairs of each head).
    """

    def __init__(self, dim: int, n_layers: int, window: int, config: CodecConfig) -> None:
        super().__init__()
        self.window, self.head_dim, self.rope_base = window, config.head_dim, config.rope_base
        self.layers = nn.ModuleList(TransformerBlock(dim, config) for _ in range(n_layers))
        self.norm = RMSNorm(dim, config.norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[-1]
        rope = _rope_table(length, self.head_dim, self.rope_base, x.device)
        mask = _window_mask(length, self.window, x.device)
        h = x.transpose(1, 2)
        for layer in self.layers:
            h = layer(h, rope, mask)
        return self.norm(h).transpose(1, 2)


# --------------------------------------------------------------------------- quantizer


class ConvNeXtBlock(nn.Module):
    """Residual causal depthwise conv (kernel 7) + LayerNorm + GELU MLP, on [B, C, F]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = CausalConv1d(dim, dim, 7, groups=dim, normalized=False)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.dwconv(x).transpose(1, 2))
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.transpose(1, 2)


class Codebook(nn.Module):
    """One factorised VQ codebook: codes live in a small space (codebook_dim) reached by
    1x1 projections; the nearest code is chosen by cosine similarity."""

    def __init__(self, dim: int, size: int, codebook_dim: int) -> None:
        super().__init__()
        self.in_proj = weight_norm(nn.Conv1d(dim, codebook_dim, 1))
        self.out_proj = weight_norm(nn.Conv1d(codebook_dim, dim, 1))
        self.codebook = nn.Embedding(size, codebook_dim)

    def quantize(self, z: Tensor) -> Tensor:
        """Code indices [B, L] (int64) for z [B, D, L]."""
        # The search runs in float32 whatever the weights' dtype: bfloat16 rounding would
        # flip near-tied choices between codes.
        projected = self.in_proj(z).transpose(1, 2).reshape(-1, self.codebook.embedding_dim)
        e = F.normalize(projected.float(), dim=-1)
        c = F.normalize(self.codebook.weight.float(), dim=-1)
        # Squared euclidean distance between unit vectors, written out as the original
        # does so that near ties resolve identically.
        dist = e.pow(2).sum(-1, keepdim=True) - 2 * e @ c.T + c.pow(2).sum(-1)[None]
        return dist.argmin(-1).view(z.shape[0], -1)

    def lookup(self, codes: Tensor) -> Tensor:
        """The quantized vectors [B, D, L] of codes [B, L]."""
        return self.out_proj(self.codebook(codes).transpose(1, 2))


class ResidualCodebooks(nn.Module):
    """Codebooks applied in turn, each quantizing what the previous ones left over."""

    def __init__(self, dim: int, n_codebooks: int, size: int, codebook_dim: int) -> None:
        super().__init__()
        self.quantizers = nn.ModuleList(Codebook(dim, size, codebook_dim)
                                        for _ in range(n_codebooks))

    @property
    def books(self) -> list[Codebook]:
        return [cast(Codebook, book) for book in self.quantizers]

    def encode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Codes [B, n_codebooks, L] for z [B, D, L], and the residual [B, D, L] left over."""
        codes = []
        for book in self.books:
            indices = book.quantize(z)
            z = z - book.lookup(indices)
            codes.append(indices)
        return torch.stack(codes, dim=1), z

    def embed(self, codes: Tensor) -> Tensor:
        """Sum [B, D, L] of the vectors of codes [B, n_codebooks, L]."""
        first, *rest = self.books
        total = first.lookup(codes[:, 0])
        for book, indices in zip(rest, codes[:, 1:].unbind(1), strict=True):
            total = total + book.lookup(indices)
        return total


class Quantizer(nn.Module):
    """Frames [B, D, F] <-> codes [B, 1 + n_codebooks, L] and z_q [B, D, L] (F = 4 L)."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        dim, factors = config.latent_dim, config.downsample_factors
        self.semantic_quantizer = ResidualCodebooks(dim, 1, config.semantic_codebook_size,
                                                    config.codebook_dim)
        self.quantizer = ResidualCodebooks(dim, config.n_codebooks, config.codebook_size,
                                           config.codebook_dim)
        self.downsample = nn.Sequential(*(
            nn.Sequential(CausalConv1d(dim, dim, f, stride=f, normalized=False), ConvNeXtBlock(dim))
            for f in factors
        ))
        self.upsample = nn.Sequential(*(
            nn.Sequential(CausalConvTranspose1d(dim, dim, f, f, normalized=False),
                          ConvNeXtBlock(dim))
            for f in reversed(factors)
        ))
        self.pre_module = WindowedTransformer(dim, config.quantizer_layers,
                                              config.quantizer_window, config)
        self.post_module = WindowedTransformer(dim, config.quantizer_layers,
                                               config.quantizer_window, config)

    def encode(self, frames: Tensor) -> Tensor:
        """Codes [B, 1 + n_codebooks, L]: the semantic code first, then the residual ones."""
        z = self.pre_module(self.downsample(frames))
        semantic, residual = self.semantic_quantizer.encode(z)
        codes, _ = self.quantizer.encode(residual)
        return torch.cat([semantic, codes], dim=1)

    def embed(self, codes: Tensor) -> Tensor:
        """z_q [B, D, L]: the summed vectors of all codes.

        (The original clamps indices to the codebook sizes first; indices chosen by
        :meth:`encode` are always in range, so that is a no-op here.)
        """
        return self.semantic_quantizer.embed(codes[:, :1]) + self.quantizer.embed(codes[:, 1:])

    def decode(self, z_q: Tensor) -> Tensor:
        """Frames [B, D, 4 L] for the decoder."""
        return self.upsample(self.post_module(z_q))


class S1DAC(nn.Module):
    """The codec network; its state dict matches the official checkpoint's keys."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = Quantizer(config)
        self.decoder = Decoder(config)

    def encode_codes(self, audio: Tensor) -> Tensor:
        """Codes [B, 1 + n_codebooks, ceil(T / 2048)] (int64) of audio [B, 1, T].

        The audio is zero-padded on the right to whole latents first.
        """
        audio = F.pad(audio, (0, -audio.shape[-1] % self.config.samples_per_latent))
        return self.quantizer.encode(self.encoder(audio))

    def encode_zq(self, audio: Tensor) -> Tensor:
        """z_q [B, D, ceil(T / 2048)] of audio [B, 1, T]: the summed codebook vectors."""
        return self.quantizer.embed(self.encode_codes(audio))

    def decode_zq(self, z_q: Tensor) -> Tensor:
        """Audio [B, 1, 2048 L] in [-1, 1] from z_q [B, D, L]."""
        return self.decoder(self.quantizer.decode(z_q))


# --------------------------------------------------------------------------- PCA + codec


class PCA(nn.Module):
    """The fixed linear map between z_q (D dims) and the DiT's latents (P dims).

    Buffers: ``components`` [P, D] and ``mean`` [D]; ``latent_scale`` multiplies the
    projected coordinates. Computed in float32 whatever the codec's dtype.
    """

    components: Tensor
    mean: Tensor

    def __init__(self, components: Tensor, mean: Tensor, latent_scale: float) -> None:
        super().__init__()
        self.register_buffer("components", components.float())
        self.register_buffer("mean", mean.float())
        self.latent_scale = float(latent_scale)

    def encode(self, z_q: Tensor) -> Tensor:
        """Latents [B, L, P] of z_q [B, D, L]."""
        return ((z_q.float().transpose(1, 2) - self.mean) @ self.components.T) * self.latent_scale

    def decode(self, latents: Tensor) -> Tensor:
        """z_q [B, D, L] of latents [B, L, P] (the projection onto the PCA subspace)."""
        return ((latents.float() / self.latent_scale) @ self.components + self.mean).transpose(1, 2)


class Codec(nn.Module):
    """Audio at 44.1 kHz <-> Echo-TTS latents (80 dims, one per 2048 samples)."""

    def __init__(self, dac: S1DAC, pca: PCA) -> None:
        super().__init__()
        self.dac = dac
        self.pca = pca
        self.config = dac.config
        self.sample_rate = dac.config.sample_rate
        self.samples_per_latent = dac.config.samples_per_latent

    @property
    def device(self) -> torch.device:
        return next(self.dac.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.dac.parameters()).dtype

    @torch.inference_mode()
    def encode(self, audio: Tensor) -> Tensor:
        """Latents [B, ceil(T / 2048), 80] (float32) of audio [B, 1, T] at 44.1 kHz."""
        if audio.ndim != 3 or audio.shape[1] != 1:
            raise ValueError(f"audio must be [batch, 1, samples], got {tuple(audio.shape)}")
        return self.pca.encode(self.dac.encode_zq(audio.to(self.device, self.dtype)))

    @torch.inference_mode()
    def decode(self, latents: Tensor) -> Tensor:
        """Audio [B, 1, 2048 L] (float32, in [-1, 1]) of latents [B, L, 80]."""
        if latents.ndim != 3 or latents.shape[-1] != self.config.pca_dim:
            raise ValueError(f"latents must be [batch, length, {self.config.pca_dim}], "
                             f"got {tuple(latents.shape)}")
        z_q = self.pca.decode(latents.to(self.device))
        return self.dac.decode_zq(z_q.to(self.dtype)).float()


# --------------------------------------------------------------------------- loading


def save_codec(codec: Codec, folder: str | os.PathLike[str]) -> Path:
    """Write ``pytorch_model.safetensors`` (config in its metadata) and
    ``pca_state.safetensors`` to ``folder``; returns the folder."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in codec.dac.state_dict().items()}
    save_file(state, str(target / CODEC_FILENAME),
              metadata={CONFIG_METADATA_KEY: json.dumps(codec.config.to_dict())})
    pca = codec.pca
    save_file({"pca_components": pca.components.detach().contiguous().cpu(),
               "pca_mean": pca.mean.detach().contiguous().cpu(),
               "latent_scale": torch.tensor(pca.latent_scale, dtype=torch.float32)},
              str(target / PCA_FILENAME))
    return target


def load_codec(
    source: str | os.PathLike[str] = DEFAULT_CODEC_REPO,
    pca_source: str | os.PathLike[str] | None = None,
    *,
    config: CodecConfig | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> Codec:
    """Load the codec from ``source`` and its PCA from ``pca_source``, in eval mode.

    Sources are as in :mod:`echo_tts.weights`: a folder, a file, a Hugging Face repo id
    or ``random:<preset>``. ``pca_source`` defaults to ``random:<preset>`` for a random
    codec and to ``jordand/echo-tts-base`` otherwise. ``config`` defaults to the
    checkpoint's own (metadata) or the official ``s1-dac``. ``dtype`` converts the codec
    weights (None keeps the file's dtype, float32 for random weights); the PCA stays
    float32.
    """
    resolved = resolve_source(source, CODEC_FILENAME)
    if resolved.is_random:
        config = config or _preset(str(resolved.random_preset))
        with torch.device("meta"):
            dac = S1DAC(config)
        # Filled on CPU so that a preset gives the same weights on every device.
        dac.to_empty(device="cpu")
        randomize_(dac)
        dac.to(device=device, dtype=dtype or torch.float32)
    else:
        assert resolved.path is not None
        state, metadata = read_safetensors(resolved.path)
        if config is None:
            config = config_from_metadata(metadata, CONFIG_METADATA_KEY, resolved.path,
                                          CodecConfig.from_dict,
                                          lambda: CodecConfig.preset("s1-dac"), "an S1-DAC codec")
        state = {k: v for k, v in state.items() if not k.endswith(_BUFFER_SUFFIXES)}
        with torch.device("meta"):
            dac = S1DAC(config)
        check_state_dict({k: v.shape for k, v in dac.state_dict().items()}, state, resolved.path)
        dac.load_state_dict({k: v.to(device=device, dtype=dtype or v.dtype)
                             for k, v in state.items()}, strict=True, assign=True)
    if pca_source is None:
        pca_source = f"random:{resolved.random_preset}" if resolved.is_random else DEFAULT_PCA_REPO
    pca = load_pca(pca_source, config).to(device)
    return Codec(dac.eval().requires_grad_(False), pca)


def load_pca(source: str | os.PathLike[str], config: CodecConfig) -> PCA:
    """The PCA transform from ``source`` (``pca_state.safetensors``) sized for ``config``.

    ``random:<preset>`` gives orthonormal random components, a near-zero mean and scale 1.
    """
    expected = {"pca_components": torch.Size([config.pca_dim, config.latent_dim]),
                "pca_mean": torch.Size([config.latent_dim])}
    resolved = resolve_source(source, PCA_FILENAME)
    if resolved.is_random:
        preset = _preset(str(resolved.random_preset))
        if (preset.pca_dim, preset.latent_dim) != (config.pca_dim, config.latent_dim):
            raise WeightsError(f"PCA source {source!r} is {preset.pca_dim}x{preset.latent_dim} "
                               f"but the codec needs {config.pca_dim}x{config.latent_dim}; "
                               "use the codec's own preset")
        gen = torch.Generator().manual_seed(1)
        basis, _ = torch.linalg.qr(torch.randn(config.latent_dim, config.pca_dim, generator=gen))
        return PCA(basis.T, 0.01 * torch.randn(config.latent_dim, generator=gen), 1.0)
    assert resolved.path is not None
    tensors, _ = read_safetensors(resolved.path)
    scale = tensors.get("latent_scale")
    if scale is not None and scale.numel() == 1:
        # Stored as a scalar or a one-element vector; either is fine.
        expected["latent_scale"] = scale.shape
    else:
        expected["latent_scale"] = torch.Size([])
    check_state_dict(expected, tensors, resolved.path)
    return PCA(tensors["pca_components"], tensors["pca_mean"], tensors["latent_scale"].item())


def _preset(name: str) -> CodecConfig:
    try:
        return CodecConfig.preset(name)
    except ValueError as err:
        raise WeightsError(str(err)) from err


# --------------------------------------------------------------------------- cropping


def find_flattening_point(latents: Tensor, window: int = 20, std_threshold: float = 0.05,
                          mean_threshold: float = 0.1) -> int:
    """First latent index where generated speech has flattened into padding.

    That is the first i where the ``window`` latents from i (zero-padded past the end),
    taken as one set of values, have standard deviation < ``std_threshold`` and
    |mean| < ``mean_threshold``; ``len(latents)`` if there is none. latents: [L, P].
    All windows are scored at once, in float64.
    """
    length = latents.shape[0]
    if length == 0:
        return 0
    padded = torch.cat([latents.detach().double(),
                        latents.new_zeros((window, *latents.shape[1:]), dtype=torch.float64)])
    windows = padded.unfold(0, window, 1)[:length].reshape(length, -1)
    std, mean = torch.std_mean(windows, dim=1)
    flat = ((std < std_threshold) & (mean.abs() < mean_threshold)).nonzero()
    return int(flat[0, 0]) if len(flat) else length


def crop_audio_to_flattening_point(audio: Tensor, latents: Tensor,
                                   samples_per_latent: int = 2048) -> Tensor:
    """audio [..., T] cut after the latents [L, P] flatten (see find_flattening_point)."""
    return audio[..., : find_flattening_point(latents) * samples_per_latent]
