"""Model sizes: one frozen dataclass with named presets.

Field names are the keyword arguments of the reference ``EchoDiT`` constructor, so a
config can be handed to either implementation unchanged.
"""

from __future__ import annotations

import dataclasses
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
