"""The S1-DAC codec's layers: Snake activations, causal (transposed) convolutions,
residual units, the encoder and decoder stacks, and the windowed causal transformer
(RoPE, RMSNorm, layer scale) and ConvNeXt blocks of its bottleneck.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from echo_tts.config import CodecConfig
from echo_tts.model import MLP, rms_normalize


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
