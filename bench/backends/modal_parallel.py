"""Chunk-parallel generation on Modal: the chunks of one text on several containers.

A ``chunk_workers = N`` cell runs in its GPU type's ``BenchWorker`` container as usual,
but each chunk of a text is sent to a ``ChunkWorker`` container (a pool of up to
:data:`MAX_CHUNK_CONTAINERS` per GPU type, registered on the app by
:mod:`bench.backends.modal_app`) through :class:`ModalChunkDispatcher`, N chunks in
flight at once. The record's latency is the wall-clock from sending the first chunk to
receiving the last (``timings["parallel_wall"]``); every chunk's own timings and its
container's cold start come back with it, so the GPU seconds paid and the extra cold
starts are on the record too.

The ``concurrency`` axis needs nothing here: the worker runs the N requests on N
threads of one container (bench.run.concurrency), which is how Modal runs the concurrent
inputs of a synchronous function.

This module does not import :mod:`bench.backends.modal_app` (that module imports this
one to register the class), and has no ``from __future__ import annotations``: Modal
reads ``modal.parameter()`` types at class-definition time.
"""

import base64
import concurrent.futures as cf
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

import modal
import numpy as np
import torch

from bench.run.workload import join_chunks
from bench.spec.gpus import modal_gpu
from bench.spec.prompt_files import Prompt
from bench.spec.sweep import Cell, ModelSpec
from echo_tts.pipeline import SynthesisResult
from echo_tts.sampling import SamplerConfig

# Containers one GPU type may start for chunks at once (a cell asks for chunk_workers).
MAX_CHUNK_CONTAINERS = 8
_IMPORTED_AT = time.time()


class ChunkCall(Protocol):
    def get(self) -> dict[str, Any]: ...


class ChunkSpawner(Protocol):
    """Sends one chunk request (JSON) to a container of ``gpu`` (Modal's name for it) in
    ``region`` (None: anywhere); the call's handle back."""

    def __call__(self, gpu: str, params: str, request: str, region: str | None) -> ChunkCall: ...


def chunk_request(cell: Cell, prompt: Prompt, seed: int, text: str) -> str:
    """One chunk's work as JSON (the speaker clip inlined, as the worker payload does)."""
    speaker = None
    if prompt.speaker_wav is not None:
        data = Path(prompt.speaker_wav).read_bytes()
        speaker = {"suffix": Path(prompt.speaker_wav).suffix,
                   "b64": base64.b64encode(data).decode("ascii")}
    return json.dumps({"cell": {"dtype": cell.dtype, "codec_dtype": cell.codec_dtype,
                                "attention": cell.attention},
                       "sampler": cell.sampler.to_dict(), "text": text, "seed": seed,
                       "speaker": speaker})


def run_chunk(worker: Any, request: str, scratch: Path) -> dict[str, Any]:
    """What a chunk container does: generate one chunk and return its audio and timings."""
    data = json.loads(request)
    speaker = None
    if data["speaker"] is not None:
        raw = base64.b64decode(data["speaker"]["b64"])
        speaker = scratch / (hashlib.sha256(raw).hexdigest()[:16] + data["speaker"]["suffix"])
        if not speaker.exists():
            speaker.write_bytes(raw)
    sampler = SamplerConfig(**data["sampler"])
    cell = Cell(id="chunk", sampler=sampler, **data["cell"])
    pipe = worker.pipeline(cell)
    started = time.time()
    result = pipe.synthesize(data["text"], speaker, sampler, data["seed"])
    return {
        "audio_f32_b64": base64.b64encode(result.audio.numpy().astype(np.float32).tobytes()
                                          ).decode("ascii"),
        "latents_shape": list(result.latents.shape),
        "latents_f32_b64": base64.b64encode(result.latents.numpy().astype(np.float32).tobytes()
                                            ).decode("ascii"),
        "sample_rate": result.sample_rate,
        "normalized_text": result.normalized_text,
        "audio_seconds": result.audio_seconds,
        "full_seconds": result.full_seconds,
        "timings": result.timings,
        "nfe": result.nfe,
        "speaker_cached": result.speaker_cached,
        "started_at": started,
        "container_id": os.environ.get("MODAL_TASK_ID", "local"),
    }


def chunk_result(reply: dict[str, Any]) -> SynthesisResult:
    """A chunk container's reply as the SynthesisResult the pipeline would have made."""
    audio = np.frombuffer(base64.b64decode(reply["audio_f32_b64"]), dtype=np.float32)
    latents = np.frombuffer(base64.b64decode(reply["latents_f32_b64"]), dtype=np.float32)
    return SynthesisResult(
        audio=torch.from_numpy(audio.copy()).reshape(1, -1),
        sample_rate=reply["sample_rate"],
        latents=torch.from_numpy(latents.copy()).reshape(reply["latents_shape"]),
        normalized_text=reply["normalized_text"], audio_seconds=reply["audio_seconds"],
        full_seconds=reply["full_seconds"], timings=dict(reply["timings"]), nfe=reply["nfe"],
        speaker_cached=reply["speaker_cached"])


class ModalChunkDispatcher:
    """Runs a text's chunks on ``chunk_workers`` containers at once (module docstring).

    Chunk containers run on the cell's card under Modal's name for it and in the region
    the worker is pinned to (``region``, set from each call's payload): the record's
    latency is compared with the worker's own timings, so both must come from the same
    card and place.
    """

    def __init__(self, params: str, spawn: ChunkSpawner, default_gpu: str,
                 region: str | None = None) -> None:
        self.params = params
        self.spawn = spawn
        self.default_gpu = default_gpu
        self.region = region

    def run_chunks(self, cell: Cell, prompt: Prompt, seed: int, chunks: list[str]
                   ) -> SynthesisResult:
        gpu = modal_gpu(cell.gpu or self.default_gpu)
        requests = [chunk_request(cell, prompt, seed + i, text) for i, text in enumerate(chunks)]
        start = time.perf_counter()
        # At most chunk_workers chunks in flight: chunk i waits for a free worker.
        with cf.ThreadPoolExecutor(max_workers=cell.chunk_workers) as pool:
            replies = list(pool.map(
                lambda r: self.spawn(gpu, self.params, r, self.region).get(), requests))
        wall = time.perf_counter() - start
        joined = join_chunks([chunk_result(r) for r in replies]) if len(replies) > 1 \
            else chunk_result(replies[0])
        joined.timings["parallel_wall"] = wall
        joined.timings["containers"] = float(len({r["container_id"] for r in replies}))
        return joined


class ChunkWorker:
    """A chunk container: loads the model once, then generates one chunk per call.

    Registered on the app (GPU, image, volumes, max_containers) by modal_app."""

    params: str = modal.parameter()

    @modal.enter()
    def load(self) -> None:
        from bench.run.worker import Worker

        data = json.loads(self.params)
        model = ModelSpec(**data["model"])
        self.worker = Worker(model, long_text=data["long_text"])
        self.worker.pipeline(Cell(id="preload", sampler=SamplerConfig(), dtype=model.dtype,
                                  codec_dtype=model.codec_dtype))
        self.cold_start_seconds = time.time() - _IMPORTED_AT
        self.scratch = Path(os.environ.get("TMPDIR", "/tmp")) / "echo-bench-chunk-speakers"
        self.scratch.mkdir(parents=True, exist_ok=True)

    @modal.method()
    def run_chunk(self, request: str) -> dict[str, Any]:
        reply = run_chunk(self.worker, request, self.scratch)
        reply["cold_start_seconds"] = self.cold_start_seconds
        return reply


def modal_spawner(worker_cls: Any) -> ChunkSpawner:
    """Spawns chunk calls on the registered ChunkWorker class, one GPU type (and region)
    each."""

    def spawn(gpu: str, params: str, request: str, region: str | None) -> ChunkCall:
        options = {"gpu": gpu} if region is None else {"gpu": gpu, "region": region}
        handle = worker_cls.with_options(**options)(params=params)
        call: ChunkCall = handle.run_chunk.spawn(request)
        return call

    return spawn


def extra_cold_start_cost(work: dict[Cell, Any], prices: Any, long_text: str,
                          cold_start_seconds: float, default_gpu: str
                          ) -> tuple[int, float] | None:
    """(container starts, price) the chunk_workers cells add beyond one per GPU type:
    each such cell may start chunk_workers chunk containers, each paying a cold start of
    ``cold_start_seconds`` (a guess)."""
    starts, usd = 0, 0.0
    for cell, generations in work.items():
        if cell.chunk_workers > 1 and generations and long_text == "chunk":
            starts += cell.chunk_workers
            usd += cell.chunk_workers * cold_start_seconds * prices.price(cell.gpu or default_gpu)
    return (starts, usd) if starts else None
