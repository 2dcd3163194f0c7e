"""What a generation's sampling should cost, from the analytic FLOP model (echo_tts.flops),
so a predicted speed-up sees every setting that changes compute, not only NFE.

NFE alone misses the sequence length: a cell at 320 latents runs the same number of
forward rows as one at 640, each row half the tokens (and a quarter of the self-attention).
The model here counts, for one recorded generation, the forward rows it ran (its NFE,
over all its chunks) times the FLOPs of one row at the cell's sequence length and the
prompt's context (text bytes per chunk + BOS, plus the speaker tokens when the record
carries them), plus the per-step timestep conditioning. Text and speaker encoders are
timed as their own stages and are not part of sampling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from bench.scoring.outcomes import is_number
from echo_tts.config import ModelConfig
from echo_tts.flops import forward_row_flops, modulation_flops

#: The size the official checkpoints (and checkpoints without a saved config) have.
OFFICIAL_PRESET = "echo-tts-base"


@lru_cache(maxsize=16)
def model_config(source: str | None) -> ModelConfig:
    """The model size a record's ``model`` source names: ``random:<preset>`` is that
    preset; anything else (a Hugging Face repo, a folder) the official size, which is what
    the shipped weights are."""
    if isinstance(source, str) and source.startswith("random:"):
        name = source.split(":", 1)[1]
        if name in ModelConfig.PRESETS:
            return ModelConfig.preset(name)
    return ModelConfig.preset(OFFICIAL_PRESET)


def sampling_flops(record: Mapping[Any, Any]) -> float:
    """FLOPs of one recorded generation's sampling stage; NaN when the record lacks what
    the model needs (NFE, steps, sequence length)."""
    needed: list[Any] = [record.get(k) for k in ("nfe", "num_steps", "sequence_length")]
    if not all(_count(v) for v in needed):
        return math.nan
    nfe, steps, length = (float(v) for v in needed)
    chunks = int(record["n_chunks"]) if _count(record.get("n_chunks")) else 1
    text = record.get("normalized_text")
    text_bytes = len(text.encode("utf-8")) if isinstance(text, str) else 0
    speaker: Any = record.get("speaker_tokens")
    context = math.ceil(text_bytes / chunks) + 1 + (int(speaker) if _count(speaker) else 0)
    cfg = model_config(record.get("model") if isinstance(record.get("model"), str) else None)
    forward = nfe * forward_row_flops(cfg, int(length), context)
    return forward + chunks * steps * float(modulation_flops(cfg))


def _count(value: Any) -> bool:
    return is_number(value) and float(value) > 0
