"""Model sizes: one frozen dataclass with named presets.

Field names are the keyword arguments of the reference ``EchoDiT`` constructor, so a
config can be handed to either implementation unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class ModelConfig:
    latent_size: int = 80
    model_size: int = 2048
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 5888
    norm_eps: float = 1e-5
    text_vocab_size: int = 256
    text_model_size: int = 1280
    text_num_layers: int = 14
    text_num_heads: int = 10
    text_intermediate_size: int = 3328
    speaker_patch_size: int = 4
    speaker_model_size: int = 1280
    speaker_num_layers: int = 14
    speaker_num_heads: int = 10
    speaker_intermediate_size: int = 3328
    timestep_embed_size: int = 512
    adaln_rank: int = 256

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # The official jordand/echo-tts-base architecture.
        "echo-tts-base": {},
        # A few layers at small widths: fast on CPU, exercises every code path.
        "tiny": dict(
            model_size=64, num_layers=2, num_heads=4, intermediate_size=128,
            text_model_size=48, text_num_layers=2, text_num_heads=2, text_intermediate_size=96,
            speaker_model_size=48, speaker_num_layers=2, speaker_num_heads=2,
            speaker_intermediate_size=96, timestep_embed_size=32, adaln_rank=16,
        ),
        # Big enough that matmuls dominate on CPU (the "4 layers at width 512").
        "small": dict(
            model_size=512, num_layers=4, num_heads=8, intermediate_size=1408,
            text_model_size=256, text_num_layers=2, text_num_heads=4, text_intermediate_size=640,
            speaker_model_size=256, speaker_num_layers=2, speaker_num_heads=4,
            speaker_intermediate_size=640, timestep_embed_size=128, adaln_rank=64,
        ),
    }

    def __post_init__(self) -> None:
        for width, heads, name in (
            (self.model_size, self.num_heads, "model"),
            (self.text_model_size, self.text_num_heads, "text"),
            (self.speaker_model_size, self.speaker_num_heads, "speaker"),
        ):
            if heads <= 0 or width % heads:
                raise ValueError(f"{name} width {width} is not divisible by its {heads} heads")
            if (width // heads) % 2:
                raise ValueError(f"{name} head size {width // heads} must be even for RoPE")
        if self.num_heads % 2:
            raise ValueError("num_heads must be even: RoPE is applied to half of the DiT heads")
        if self.timestep_embed_size % 2:
            raise ValueError("timestep_embed_size must be even")

    @classmethod
    def preset(cls, name: str) -> ModelConfig:
        """The named preset; an unknown name raises ValueError listing the known ones."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(cls.PRESETS)}")
        return cls(**cls.PRESETS[name])

    @property
    def head_dim(self) -> int:
        return self.model_size // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
