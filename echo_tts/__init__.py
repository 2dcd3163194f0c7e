"""Echo-TTS inference, weight-compatible with the official checkpoints.

The public API is what this module exports; everything else is an implementation detail.
"""

from echo_tts.config import ModelConfig
from echo_tts.model import EchoDiT
from echo_tts.production import ProductionConfig, ProductionConfigError
from echo_tts.sampling import CFG_MODES, SamplerConfig, sample_latents
from echo_tts.text import TextTooLongError, encode_text, normalize_prompt
from echo_tts.weights import WeightsError, load_model, save_model

__all__ = [
    "CFG_MODES",
    "EchoDiT",
    "ModelConfig",
    "ProductionConfig",
    "ProductionConfigError",
    "SamplerConfig",
    "TextTooLongError",
    "WeightsError",
    "encode_text",
    "load_model",
    "normalize_prompt",
    "sample_latents",
    "save_model",
]
