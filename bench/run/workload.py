"""How one generation of a cell runs when its workload axes are not the defaults.

The worker calls :func:`generate` for every generation and :func:`workload_fields` for
every record; with default axes both reduce to what the worker did before (plain
``synthesize_long`` / ``synthesize``, latency = the pipeline's total time).

* ``speaker_seconds``: the reference is trimmed, or tiled end to end, to N seconds and
  written once to a scratch WAV, so the pipeline's speaker cache keys it by path.
* ``block_sizes``: each text chunk is generated blockwise (steps and CFG scales per
  block when given); TTFB is the first chunk's first block (its sampling and decode).
* ``chunk_workers``: the chunks of one text go to N workers. Here (one process, one
  device) the chunks run one after another, each timed alone, and the end-to-end
  latency is that of the slowest worker given chunk i on worker i mod N: what N
  contention-free workers would take, without dispatch, transfer or cold starts, which
  only the Modal backend measures (:mod:`bench.backends.modal_parallel`).
"""

from __future__ import annotations

import math
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import soundfile as sf
import torch

from bench.spec.prompt_files import Prompt
from bench.spec.sweep import Cell
from bench.spec.workload_axes import block_configs
from echo_tts.audio import SAMPLE_RATE, SPEAKER_PATCH_SIZE, load_speaker_audio, write_wav
from echo_tts.pipeline import STAGES, EchoPipeline, SynthesisResult
from echo_tts.text import chunk_bytes_for, split_text

# The official codec's hop (the design map: one latent = 2048 samples at 44.1 kHz).
SAMPLES_PER_LATENT = 2048
MAX_SPEAKER_LATENTS = 6400
# Chunks are joined with this much silence (EchoPipeline.synthesize_long's default).
GAP_SECONDS = 0.1


class ChunkDispatcher(Protocol):
    """Runs the chunks of one text on several workers (the Modal backend's containers)."""

    def run_chunks(self, cell: Cell, prompt: Prompt, seed: int, chunks: list[str]
                   ) -> SynthesisResult: ...


class SpeakerClips:
    """Speaker references fitted to N seconds, written once each to a scratch folder."""

    def __init__(self) -> None:
        self._folder: Path | None = None
        self._paths: dict[tuple[str, float], Path] = {}
        self._lock = threading.Lock()  # concurrent requests may ask for the same clip

    def fitted(self, source: Path, seconds: float) -> Path:
        key = (str(Path(source).resolve()), seconds)
        with self._lock:
            if key not in self._paths:
                if self._folder is None:
                    self._folder = Path(tempfile.mkdtemp(prefix="echo-bench-speaker-seconds-"))
                audio = fit_speaker(load_speaker_audio(source, max_seconds=None), seconds)
                path = self._folder / f"{len(self._paths)}-{seconds:g}s.wav"
                write_wav(path, audio, SAMPLE_RATE, subtype="FLOAT")
                self._paths[key] = path
            return self._paths[key]


def fit_speaker(audio: torch.Tensor, seconds: float) -> torch.Tensor:
    """``audio`` [1, T] (44.1 kHz) cut to ``seconds``, or repeated end to end up to it."""
    target = max(1, round(seconds * SAMPLE_RATE))
    repeats = math.ceil(target / audio.shape[-1])
    return audio.repeat(1, repeats)[:, :target] if repeats > 1 else audio[:, :target]


def speaker_tokens(samples: int) -> int:
    """Speaker-encoder tokens the sampler attends to for a reference of ``samples``
    (44.1 kHz): whole latents, capped at 6400, in patches of 4 (echo_tts.audio)."""
    return min(samples // SAMPLES_PER_LATENT, MAX_SPEAKER_LATENTS) // SPEAKER_PATCH_SIZE


def reference_samples(path: Path | None) -> int | None:
    """Length of a speaker clip in 44.1 kHz samples (header only), None without one."""
    if path is None:
        return None
    info = sf.info(str(path))
    return round(info.frames * SAMPLE_RATE / info.samplerate)


def generate(pipe: EchoPipeline, cell: Cell, prompt: Prompt, seed: int, long_text: str,
             speakers: SpeakerClips, dispatcher: ChunkDispatcher | None = None
             ) -> SynthesisResult:
    """One generation of ``prompt`` under every axis of ``cell`` (see the module docstring)."""
    speaker: Path | None = prompt.speaker_wav
    if cell.speaker_seconds is not None and speaker is not None:
        speaker = speakers.fitted(speaker, cell.speaker_seconds)
    sampler = cell.sampler
    if cell.block_sizes is not None:
        return _blockwise(pipe, cell, prompt.text, speaker, seed, long_text)
    if cell.chunk_workers > 1 and dispatcher is not None:
        pieces = split_text(prompt.text, chunk_bytes_for(sampler.sequence_length))
        return dispatcher.run_chunks(cell, replace(prompt, speaker_wav=speaker), seed, pieces)
    if long_text == "chunk":
        return pipe.synthesize_long(prompt.text, speaker, sampler, seed,
                                    batch_size=cell.batch_size)
    # "truncate" speaks what fits; "error" lets TextTooLongError fail the generation.
    return pipe.synthesize(prompt.text, speaker, sampler, seed, truncate=long_text == "truncate")


def _blockwise(pipe: EchoPipeline, cell: Cell, text: str, speaker: Path | None, seed: int,
               long_text: str) -> SynthesisResult:
    assert cell.block_sizes is not None
    samplers = block_configs(cell) if cell.block_steps or cell.block_cfg else None
    pieces = ([text] if long_text != "chunk"
              else split_text(text, chunk_bytes_for(cell.sampler.sequence_length)))
    # Chunk i uses seed + i, as synthesize_long does.
    chunks = [pipe.synthesize_blockwise(piece, cell.block_sizes, speaker, cell.sampler,
                                        seed + i, block_samplers=samplers)
              for i, piece in enumerate(pieces)]
    return chunks[0] if len(chunks) == 1 else join_chunks(chunks)


def join_chunks(chunks: Sequence[SynthesisResult]) -> SynthesisResult:
    """Chunks generated one call each, joined as synthesize_long joins them."""
    gap = torch.zeros(1, round(GAP_SECONDS * chunks[0].sample_rate))
    parts: list[torch.Tensor] = []
    for i, chunk in enumerate(chunks):
        parts.extend([gap, chunk.audio] if i else [chunk.audio])
    return SynthesisResult(
        audio=torch.cat(parts, dim=1),
        sample_rate=chunks[0].sample_rate,
        latents=torch.cat([c.latents for c in chunks]),
        normalized_text=" ".join(c.normalized_text for c in chunks),
        audio_seconds=sum(c.audio_seconds for c in chunks) + GAP_SECONDS * (len(chunks) - 1),
        full_seconds=sum(c.full_seconds for c in chunks),
        timings={stage: sum(c.timings[stage] for c in chunks) for stage in STAGES},
        nfe=sum(c.nfe for c in chunks),
        speaker_cached=all(c.speaker_cached for c in chunks),
        chunks=list(chunks),
        first_block_seconds=chunks[0].first_block_seconds,
        block_seconds=chunks[0].block_seconds,
    )


def parallel_latency(chunk_seconds: Sequence[float], workers: int) -> float:
    """End-to-end seconds of chunks spread over ``workers`` (chunk i on worker i mod N,
    each worker running its chunks in order): the slowest worker's sum."""
    per_worker = [0.0] * max(1, min(workers, len(chunk_seconds)))
    for index, seconds in enumerate(chunk_seconds):
        per_worker[index % len(per_worker)] += seconds
    return max(per_worker)


def workload_fields(cell: Cell, prompt: Prompt, result: SynthesisResult) -> dict[str, Any]:
    """The per-generation figures the workload axes add to a record.

    ``latency_seconds`` is the request's end-to-end time (the pipeline's total; for
    chunk-parallel cells the slowest worker's); ``ttfb_seconds`` the time to the first
    decodable audio (first block, else first chunk); ``compute_seconds`` what the
    workers are busy (every chunk counted). The concurrency runner overwrites latency
    with the time the request actually waited.
    """
    chunks = result.chunks or [result]
    chunk_totals = [c.timings["total"] for c in chunks]
    first = chunks[0]
    ttfb = first.first_block_seconds if first.first_block_seconds is not None else chunk_totals[0]
    latency = result.timings["total"]
    mode = None
    if cell.chunk_workers > 1:
        # A dispatcher (bench.backends.modal_parallel) times the real fan-out itself.
        remote = result.timings.get("parallel_wall")
        latency = remote if remote is not None else parallel_latency(chunk_totals,
                                                                     cell.chunk_workers)
        mode = "containers" if remote is not None else "simulated-one-device"
    samples = (None if prompt.speaker_wav is None
               else round(cell.speaker_seconds * SAMPLE_RATE) if cell.speaker_seconds is not None
               else reference_samples(prompt.speaker_wav))
    return {
        "latency_seconds": latency,
        "ttfb_seconds": ttfb,
        "compute_seconds": sum(chunk_totals) if result.chunks else result.timings["total"],
        "chunk_seconds": chunk_totals,
        "chunk_parallel_mode": mode,
        "block_seconds": list(first.block_seconds) or None,
        "speaker_reference_seconds": None if samples is None else samples / SAMPLE_RATE,
        "speaker_tokens": None if samples is None else speaker_tokens(samples),
    }
