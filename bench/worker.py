"""Runs cells on one device: the code every backend (local, Modal) executes.

A worker loads the model and codec once per (dtype, compile) combination and keeps them;
for each cell it warms up, then runs every generation, measuring each with a
device-synchronised timer and a memory tracker. It produces one record per generation
(plus the audio) and never touches the run store: the caller decides where they go.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bench import faults, workload_run
from bench.concurrency import run_concurrently
from bench.devices import DTYPES, resolve_device
from bench.measure import DeviceTimer, MemoryTracker
from bench.prompts import Prompt
from bench.spec import Cell, ModelSpec
from bench.store import record_key, utc_now
from echo_tts.autoencoder import load_codec
from echo_tts.errors import first_line
from echo_tts.pipeline import STAGES, EchoPipeline, SynthesisResult
from echo_tts.weights import WeightsError

# Audio whose peak is below this is treated as silent (about -80 dBFS).
SILENCE_PEAK = 1e-4


@dataclass(frozen=True)
class Generation:
    """One unit of work: a cell's settings on one prompt, seed and repeat."""

    cell: Cell
    prompt: Prompt
    seed: int
    repeat: int

    @property
    def key(self) -> str:
        return record_key(self.cell.id, self.prompt.id, self.seed, self.repeat)


def plan(cells: Iterable[Cell], prompts: list[Prompt], seeds: Iterable[int],
         repeats: int) -> list[Generation]:
    """Every generation of a sweep, cell by cell (prompts x seeds x repeats within a cell)."""
    seeds = list(seeds)
    return [Generation(cell, prompt, seed, repeat)
            for cell in cells for prompt in prompts for seed in seeds for repeat in range(repeats)]


ResultSink = Callable[[dict[str, Any], Tensor | None], None]


def warmup_generations(generations: list[Generation], warmup: int, compiled: bool
                       ) -> list[Generation]:
    """What a cell runs untimed first: the first generation ``warmup`` times, and for a
    compiled cell also the first with another prompt text and the first with another
    speaker. A compiled graph turns dynamic when it meets a second shape and compiles
    again then; that must happen here, not inside a timed generation."""
    if not generations or warmup < 1:
        return []
    out = [generations[0]] * warmup
    if compiled:
        first = generations[0].prompt
        for differs in (lambda p: p.text != first.text,
                        lambda p: p.speaker_wav != first.speaker_wav):
            other = next((g for g in generations if differs(g.prompt)), None)
            if other is not None and other not in out:
                out.append(other)
    return out


class Worker:
    """Holds loaded pipelines and runs generations on one device."""

    def __init__(self, model: ModelSpec, *, long_text: str = "chunk") -> None:
        self.model_spec = model
        self.long_text = long_text
        self.device = resolve_device(model.device)
        self.device_name = _device_name(self.device)
        self._pipelines: dict[tuple[str, str, bool, bool, str], EchoPipeline] = {}
        self.speakers = workload_run.SpeakerClips()
        # Set by the Modal container to spread chunk_workers cells over containers.
        self.chunk_dispatcher: workload_run.ChunkDispatcher | None = None

    @property
    def random_weights(self) -> bool:
        return self.model_spec.model.startswith("random:")

    def pipeline(self, cell: Cell) -> EchoPipeline:
        """The pipeline for a cell's dtype and speed options (loaded on first use, then kept).

        Pipelines with the same dtype share the loaded weights (and codec, when its
        dtype matches too).
        """
        key = (cell.dtype, cell.codec_dtype, cell.compile, cell.cuda_graphs, cell.attention)
        if key not in self._pipelines:
            same_weights = [p for k, p in self._pipelines.items() if k[0] == cell.dtype]
            if same_weights:
                codec = next((p.codec for k, p in self._pipelines.items()
                              if k[1] == cell.codec_dtype), None)
                if codec is None:
                    codec = load_codec(self.model_spec.codec, self.model_spec.pca,
                                       device=self.device, dtype=DTYPES[cell.codec_dtype])
                pipe = EchoPipeline(same_weights[0].model, codec,
                                    compile=cell.compile, cuda_graphs=cell.cuda_graphs,
                                    attention=cell.attention)
            else:
                spec = self.model_spec
                pipe = EchoPipeline.from_pretrained(
                    spec.model, spec.codec, spec.pca, device=self.device,
                    dtype=DTYPES[cell.dtype], codec_dtype=DTYPES[cell.codec_dtype],
                    keep_blockwise=spec.keep_blockwise, compile=cell.compile,
                    cuda_graphs=cell.cuda_graphs, attention=cell.attention)
            self._pipelines[key] = pipe
        return self._pipelines[key]

    def run_cell(self, cell: Cell, generations: list[Generation], warmup: int,
                 sink: ResultSink) -> None:
        """Warm up, then run each generation and hand its record and audio to ``sink``.

        A generation that raises (CUDA out of memory included) yields a failed record with
        the error, and the cell goes on with the next one. Loading errors (missing or
        unreadable weights) propagate: they are bad input, not a cell's failure.
        """
        if not generations:
            return
        try:
            pipe = self.pipeline(cell)
            for gen in warmup_generations(generations, warmup, cell.compile or cell.cuda_graphs):
                self._synthesize(pipe, cell, gen)
        except WeightsError:
            # Weights that cannot be found or read are bad input for the whole sweep
            # (exit 2), not a failure of this cell.
            raise
        except Exception as err:  # the whole cell cannot run (e.g. out of memory loading)
            for gen in generations:
                sink(self.failed_record(gen, err, phase="load/warm-up"), None)
            return
        if cell.concurrency > 1:
            run_concurrently(self, pipe, cell, generations, sink)
            return
        for gen in generations:
            try:
                with MemoryTracker(self.device) as memory, DeviceTimer(self.device) as wall:
                    result = self._synthesize(pipe, cell, gen)
            except Exception as err:
                sink(self.failed_record(gen, err, phase="generation"), None)
                _release_memory(self.device)
                continue
            record = self.ok_record(gen, result, wall.seconds, memory.to_dict())
            sink(record, result.audio)

    def synthesize_one(self, pipe: EchoPipeline, cell: Cell, gen: Generation) -> SynthesisResult:
        """One generation, untimed by the worker (the concurrency runner times it)."""
        return self._synthesize(pipe, cell, gen)

    def release_memory(self) -> None:
        _release_memory(self.device)

    def _synthesize(self, pipe: EchoPipeline, cell: Cell, gen: Generation) -> SynthesisResult:
        faults.generation(cell.label)
        result = self._run_pipeline(pipe, cell, gen)
        if faults.matches("nan_latents", cell.label):
            result.audio = torch.full_like(result.audio, math.nan)
        elif faults.matches("silent_audio", cell.label):
            result.audio = torch.zeros_like(result.audio)
        return result

    def _run_pipeline(self, pipe: EchoPipeline, cell: Cell, gen: Generation) -> SynthesisResult:
        return workload_run.generate(pipe, cell, gen.prompt, gen.seed, self.long_text,
                                     self.speakers, self.chunk_dispatcher)

    # ---- records

    def base_record(self, gen: Generation) -> dict[str, Any]:
        cell = gen.cell
        return {
            "key": gen.key,
            "cell_id": cell.id,
            "cell_label": cell.label,
            "prompt_id": gen.prompt.id,
            "seed": gen.seed,
            "repeat": gen.repeat,
            **cell.sampler.to_dict(),
            **cell.execution(),
            "model": self.model_spec.model,
            "codec": self.model_spec.codec,
            "random_weights": self.random_weights,
            "device": str(self.device),
            "device_name": self.device_name,
            "text": gen.prompt.text,
            "finished_at": utc_now(),
        }

    def ok_record(self, gen: Generation, result: SynthesisResult, wall_seconds: float,
                  memory: dict[str, Any]) -> dict[str, Any]:
        total = result.timings["total"]
        audio = result.audio
        peak = float(audio.abs().max()) if audio.numel() else 0.0
        nan = bool(torch.isnan(audio).any()) or not math.isfinite(peak)
        silent = not nan and peak < SILENCE_PEAK
        record = self.base_record(gen)
        record.update({
            "status": "ok",
            "error": None,
            "error_type": None,
            "normalized_text": result.normalized_text,
            "n_chunks": max(1, len(result.chunks)),
            "nfe": result.nfe,
            **{f"t_{stage}": result.timings[stage] for stage in STAGES},
            "t_sampling_per_nfe": result.timings["sampling"] / result.nfe if result.nfe else None,
            "wall_seconds": wall_seconds,
            "harness_overhead_seconds": max(0.0, wall_seconds - total),
            "audio_seconds": result.audio_seconds,
            "full_seconds": result.full_seconds,
            "rtf": total / result.audio_seconds if result.audio_seconds > 0 else None,
            "rtf_full": total / result.full_seconds,
            "x_realtime": result.audio_seconds / total if total > 0 else None,
            "x_realtime_full": result.full_seconds / total if total > 0 else None,
            "speaker_cached": result.speaker_cached,
            "audio_nan": nan,
            "audio_silent": silent,
            "audio_peak": peak if math.isfinite(peak) else None,
            "audio_path": None,
            **memory,
            **workload_run.workload_fields(gen.cell, gen.prompt, result),
        })
        return record

    def failed_record(self, gen: Generation, err: BaseException, phase: str) -> dict[str, Any]:
        record = self.base_record(gen)
        message = first_line(err, empty="")
        record.update({
            "status": "failed",
            "error": f"{type(err).__name__}: {message}"[:500],
            "error_type": type(err).__name__,
            "error_phase": phase,
            "error_where": _where(err),
        })
        return record


def _where(err: BaseException) -> str:
    """file:line of the innermost frame, so a failure in a report points somewhere."""
    frames = traceback.extract_tb(err.__traceback__)
    return f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def _release_memory(device: torch.device) -> None:
    # After an out-of-memory error the caching allocator still holds the blocks of the
    # failed generation; freeing them gives the next one a fair chance.
    if device.type == "cuda":
        torch.cuda.empty_cache()
