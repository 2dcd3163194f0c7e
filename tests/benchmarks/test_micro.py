"""Microbenchmarks (pytest-benchmark): one DiT forward, one sampler step per CFG mode, one
codec decode and one ASR decode, on random weights at the tiny and small presets (CPU
unless CUDA is available).

Not collected by the normal test run (pyproject's norecursedirs excludes this folder);
``nox -s bench`` runs them, saves the results under .benchmarks/ and fails when a median
is more than 15 % slower than the previous saved run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from echo_tts.pipeline import EchoPipeline
from echo_tts.sampling import (
    CFG_MODES,
    GUIDANCE_ROWS,
    Conditioning,
    SamplerConfig,
    attention_plan,
    encode_speaker_condition,
    encode_text_condition,
    euler_loop,
    initial_noise,
)
from echo_tts.text import encode_text

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SEQ = 64  # latents per benchmark call: ~3 s of audio


@pytest.fixture(scope="module", params=["tiny", "small"])
def pipe(request: pytest.FixtureRequest) -> Iterator[EchoPipeline]:
    yield EchoPipeline.from_pretrained(f"random:{request.param}", "random:tiny", "random:tiny",
                                       device=DEVICE, dtype=torch.float32)


@pytest.fixture(scope="module")
def cond(pipe: EchoPipeline) -> Conditioning:
    ids, mask = encode_text(["The quick brown fox jumps over the lazy dog."])
    text_state, text_mask = encode_text_condition(pipe.model, ids, mask)
    speaker_state, speaker_tokens = encode_speaker_condition(pipe.model, None, None, 1)
    return Conditioning(text_state, text_mask, speaker_state, speaker_tokens)


def _sync(value: torch.Tensor) -> torch.Tensor:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return value


@torch.inference_mode()
def test_dit_forward(benchmark: BenchmarkFixture, pipe: EchoPipeline, cond: Conditioning) -> None:
    """One conditional forward row over SEQ latents (the unit the NFE counts)."""
    model = pipe.model
    x = initial_noise(1, SEQ, model.config.latent_size, 0, DEVICE)
    schedule = SamplerConfig(num_steps=1).schedule().to(DEVICE)
    context = model.context_kv(1, SEQ, cond.text_state, cond.speaker_state, None)
    modulation = model.modulation(schedule[:-1])
    plan = attention_plan(("cond",), context.segments, cond, None, sliced=True)
    benchmark(lambda: _sync(model(x, modulation.at(0), context.head(1), plan, 0)))


@pytest.mark.parametrize("layout", ["sliced", "masked"])
@torch.inference_mode()
def test_guided_forward_attention_layout(benchmark: BenchmarkFixture, pipe: EchoPipeline,
                                         layout: str) -> None:
    """The three rows of an independent-CFG step with a 160-token speaker reference:
    key spans without a mask against every key under a mask."""
    model = pipe.model
    ids, mask = encode_text(["The quick brown fox jumps over the lazy dog."])
    text_state, text_mask = encode_text_condition(model, ids, mask)
    speaker = torch.randn(1, 640, model.config.latent_size, device=DEVICE)
    speaker_state, speaker_tokens = encode_speaker_condition(
        model, speaker, torch.ones(1, 640, dtype=torch.bool, device=DEVICE), 1)
    cond = Conditioning(text_state, text_mask, speaker_state, speaker_tokens)
    kinds = GUIDANCE_ROWS["independent"]
    x = initial_noise(3, SEQ, model.config.latent_size, 0, DEVICE)
    context = model.context_kv(3, SEQ, cond.text_state, cond.speaker_state, None)
    modulation = model.modulation(SamplerConfig(num_steps=1).schedule().to(DEVICE)[:-1])
    plan = attention_plan(kinds, context.segments, cond, None, sliced=layout == "sliced")
    benchmark(lambda: _sync(model(x, modulation.at(0), context, plan, 0)))


@pytest.mark.parametrize("mode", CFG_MODES)
@torch.inference_mode()
def test_sampler_step(benchmark: BenchmarkFixture, pipe: EchoPipeline, cond: Conditioning,
                      mode: str) -> None:
    """One guided Euler step (all of its CFG rows, plus the context set-up)."""
    config = SamplerConfig(num_steps=1, cfg_mode=mode, cfg_min_t=0.0,  # type: ignore[arg-type]
                           sequence_length=SEQ)
    x = initial_noise(1, SEQ, pipe.model.config.latent_size, 0, DEVICE)
    benchmark(lambda: _sync(euler_loop(pipe.model, x, config, cond)))


@torch.inference_mode()
def test_codec_decode(benchmark: BenchmarkFixture, pipe: EchoPipeline) -> None:
    """Latents [1, SEQ, 80] to audio (the random tiny codec)."""
    latents = torch.randn(1, SEQ, 80, device=DEVICE, generator=None)
    benchmark(lambda: _sync(pipe.codec.decode(latents)))


def test_asr_decode(benchmark: BenchmarkFixture, tmp_path_factory: pytest.TempPathFactory
                    ) -> None:
    """One 3 s utterance through random-weight Whisper tiny (the full 224-token budget,
    since random weights never emit end-of-text: a worst case)."""
    from bench.scoring import WhisperASR

    root: Path = tmp_path_factory.mktemp("whisper")
    asr = WhisperASR("random:tiny", device=DEVICE, download_root=root)
    t = np.arange(3 * 16_000) / 16_000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    benchmark.pedantic(asr.transcribe, args=([audio],), rounds=3, warmup_rounds=1)
