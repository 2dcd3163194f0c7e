"""The FLOP model of bench (over :mod:`echo_tts.flops`): what one recorded generation's
sampling should cost, and the speed-up a change should give on a text's critical path,
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

import numpy as np
import pandas as pd

from bench.scoring.outcomes import aligned_numbers, column, is_number
from echo_tts import flops
from echo_tts.config import ModelConfig
from echo_tts.flops import forward_row_flops, modulation_flops
from echo_tts.sampling import SamplerConfig

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


def flop_speedup(base_ok: pd.DataFrame, cand_ok: pd.DataFrame, measure: str) -> float | None:
    """What echo_tts.flops predicts: baseline FLOPs / proposal FLOPs on the critical path
    (per text for latency, to the first block or chunk for ttfb). None where FLOPs do not
    decide (throughput, memory) or the records lack the settings."""
    if measure not in ("latency", "ttfb") or not len(base_ok) or not len(cand_ok):
        return None
    b, c = _path_flops(base_ok, measure), _path_flops(cand_ok, measure)
    return b / c if b and c else None


def _path_flops(ok: pd.DataFrame, measure: str) -> float | None:
    first = ok.iloc[0]
    cfg = model_config(str(first.get("model") or ""))
    try:
        sampler = SamplerConfig(**{k: plain_value(first[k]) for k in SamplerConfig.field_names()})
    except (KeyError, TypeError, ValueError):
        return None
    chunks = float(np.nanmedian(aligned_numbers(ok, "n_chunks", math.nan)))
    text = float(np.nanmedian([len(str(t).encode()) for t in column(ok, "normalized_text")]))
    text_len = min(768, int(text / max(chunks, 1)) + 1)
    tokens = aligned_numbers(ok, "speaker_tokens", math.nan)
    speaker = int(np.nanmedian(tokens)) if np.isfinite(tokens).any() else 1
    blocks = plain_value(first.get("block_sizes"))
    if blocks:
        per_chunk = _blockwise_flops(cfg, sampler, list(blocks), plain_value(first.get("block_steps")),
                                     text_len, speaker, first_only=measure == "ttfb")
    else:
        per_chunk = float(flops.sampling_flops(cfg, sampler, text_len, speaker).total)
    if measure == "ttfb":
        return per_chunk
    workers = int(plain_value(first.get("chunk_workers")) or 1)
    # Chunk i on worker i mod N: the busiest worker runs ceil(chunks / N) of them.
    return per_chunk * math.ceil(chunks / max(1, workers))


def _blockwise_flops(cfg: ModelConfig, sampler: SamplerConfig, blocks: list[int],
                     steps: Any, text_len: int, speaker: int, first_only: bool) -> float:
    total, start = 0.0, 0
    for index, size in enumerate(blocks):
        block = SamplerConfig(**{**sampler.to_dict(), "sequence_length": size,
                                 **({} if not steps else {"num_steps": int(steps[index])})})
        prefix_tokens = -(-start // cfg.speaker_patch_size)
        context = text_len + speaker + prefix_tokens
        total += block.nfe() * forward_row_flops(cfg, size, context)
        start += size
        if first_only:
            break
    return total


def plain_value(value: Any) -> Any:
    """numpy scalars and arrays from parquet back to Python values."""
    if isinstance(value, np.ndarray):
        return [plain_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
