"""The S1-DAC codec's residual vector quantizer: codebooks, and the down/up-sampling
transformer bottleneck around them.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from echo_tts.codec_layers import (
    CausalConv1d,
    CausalConvTranspose1d,
    ConvNeXtBlock,
    WindowedTransformer,
)
from echo_tts.config import CodecConfig


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
