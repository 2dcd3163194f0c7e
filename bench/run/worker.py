"""Runs cells on one device: the code every backend (local, Modal) executes.

A worker loads the model and codec once per (dtype, compile) combination and keeps them
while the cells it runs need them. It runs a group of cells (:mod:`bench.run.schedule`):
first it warms every cell up on every shape the cell will time, then it runs the
generations in interleaved rounds, measuring each with a device-synchronised timer and a
memory tracker, beside a snapshot of the machine's state (:mod:`bench.run.machine`). It
produces one record per generation (plus the audio) and never touches the run store:
the caller decides where they go.
"""

from __future__ import annotations

import gc
import math
import traceback
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import Tensor

from bench.core import faults
from bench.core.devices import DTYPES, resolve_device
from bench.run import workload as workload_run
from bench.run.concurrency import run_concurrently
from bench.run.machine import machine_state
from bench.run.measure import DeviceTimer, MemoryTracker
from bench.run.schedule import Generation, Group, ResultSink, Step, plan, schedule
from bench.spec.sweep import Cell, ModelSpec
from bench.store.layout import utc_now
from echo_tts.autoencoder import load_codec
from echo_tts.errors import first_line
from echo_tts.pipeline import STAGES, EchoPipeline, SynthesisResult
from echo_tts.weights import WeightsError

__all__ = ["SILENCE_PEAK", "Generation", "Worker", "order_fields", "plan",
           "warmup_generations"]

# Audio whose peak is below this is treated as silent (about -80 dBFS).
SILENCE_PEAK = 1e-4



def warmup_generations(generations: list[Generation], warmup: int, compiled: bool,
                       shape: Callable[[Generation], Hashable] | None = None
                       ) -> list[Generation]:
    """What a cell runs untimed first: the first generation ``warmup`` times, then the
    first generation of every other shape (``shape(gen)``: what sets the tensor sizes of
    a generation, such as its chunk count and speaker length), and for a compiled cell
    also the first with another prompt text and the first with another speaker.

    Eager kernels pick and cache their plans per shape (oneDNN primitives, cuBLAS
    heuristics, allocator pools), and a compiled graph turns dynamic when it meets a
    second shape and compiles again then: all of that must happen here, not inside a
    timed generation."""
    if not generations or warmup < 1:
        return []
    out = [generations[0]] * warmup
    if shape is not None:
        seen = {shape(generations[0])}
        for gen in generations:
            if shape(gen) not in seen:
                seen.add(shape(gen))
                out.append(gen)
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

    @staticmethod
    def _key(cell: Cell) -> tuple[str, str, bool, bool, str]:
        return (cell.dtype, cell.codec_dtype, cell.compile, cell.cuda_graphs, cell.attention)

    def pipeline(self, cell: Cell) -> EchoPipeline:
        """The pipeline for a cell's dtype and speed options (loaded on first use, then kept).

        Pipelines with the same dtype share the loaded weights (and codec, when its
        dtype matches too).
        """
        key = self._key(cell)
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
        """One cell on its own: :meth:`run_group` of a group holding only ``cell``."""
        for group in schedule({cell: generations}):
            self.run_group(group, warmup, sink)

    def run_group(self, group: Group, warmup: int, sink: ResultSink,
                  on_cell_done: Callable[[Cell], None] | None = None) -> None:
        """Free what other groups left, warm every cell of ``group`` up, then run its
        steps in order (interleaved rounds), handing each record and its audio to ``sink``.

        ``on_cell_done(cell)`` is called once the cell's last generation is handed over,
        and not before the group's last timed generation: what it does (in-sweep scoring
        loads ASR, SIM and MOS models whose thread pools spin on after each call) would
        otherwise run between the timed generations of the last round, and slow the cells
        still to come in it (a smoke run's last round measured 1.4x the others' pace).
        A generation that raises (CUDA out of memory included) yields a failed record with
        the error, and the group goes on. A cell that cannot load or warm up yields failed
        records for all its generations. Loading errors of the weights themselves
        (missing or unreadable files) propagate: they are bad input, not a cell's failure.
        """
        self.release(keep=group.cells)
        generations: dict[Cell, list[Generation]] = {}
        for step in group.steps:
            generations.setdefault(step.gen.cell, []).append(step.gen)
        ready: dict[Cell, EchoPipeline] = {}
        for cell in group.cells:
            if cell not in generations:  # all its steps ran in an earlier attempt (Modal)
                continue
            try:
                ready[cell] = self.prepare(cell, generations[cell], warmup)
            except WeightsError:
                raise
            except Exception as err:  # the whole cell cannot run (e.g. out of memory loading)
                for step in group.steps:
                    if step.gen.cell == cell:
                        sink(self.failed_record(step.gen, err, phase="load/warm-up")
                             | order_fields(step, group), None)
                if on_cell_done is not None:
                    on_cell_done(cell)
        if len(group.cells) == 1 and group.cells[0].concurrency > 1:
            self._run_concurrent(group, ready, sink, on_cell_done)
            return
        last = group.last_steps()
        finished: list[Cell] = []
        for index, step in enumerate(group.steps):
            cell = step.gen.cell
            if cell not in ready:
                continue
            self._timed(ready[cell], step, group, sink)
            if last[cell] == index:
                finished.append(cell)
        if on_cell_done is not None:
            for cell in finished:
                on_cell_done(cell)

    def _run_concurrent(self, group: Group, ready: dict[Cell, EchoPipeline], sink: ResultSink,
                        on_cell_done: Callable[[Cell], None] | None) -> None:
        """A concurrency cell's generations, N in flight at once (bench.run.concurrency)."""
        cell = group.cells[0]
        if cell in ready:
            steps = {step.gen.key: step for step in group.steps}

            def ordered(record: dict[str, Any], audio: Tensor | None) -> None:
                sink(record | order_fields(steps[record["key"]], group), audio)

            run_concurrently(self, ready[cell], cell, [s.gen for s in group.steps], ordered)
            if on_cell_done is not None:  # (a cell that failed to load was done already)
                on_cell_done(cell)

    def prepare(self, cell: Cell, generations: list[Generation], warmup: int) -> EchoPipeline:
        """Load the cell's pipeline, encode every speaker its prompts use into the cache,
        and run the warm-up generations (one per shape the cell will time).

        Speakers are cached for every cell alike, so no cell pays encodes another one
        skips; ``t_speaker_encode`` is then the speaker encoder alone, in every cell.
        """
        pipe = self.pipeline(cell)
        lengths = {g.prompt.speaker_wav: pipe.prepare_speaker(g.prompt.speaker_wav)
                   for g in generations}

        def shape(gen: Generation) -> Hashable:
            chunks = (len(pipe.chunk_texts(gen.prompt.text, cell.sampler))
                      if self.long_text == "chunk" else 1)
            return chunks, lengths[gen.prompt.speaker_wav]

        for gen in warmup_generations(generations, warmup, cell.compile or cell.cuda_graphs,
                                      shape):
            self._synthesize(pipe, cell, gen)
        return pipe

    def release(self, keep: tuple[Cell, ...] = ()) -> None:
        """Unload the pipelines none of ``keep`` uses and hand cached blocks back, so the
        next cells' memory figures hold only what they load themselves."""
        wanted = {self._key(c) for c in keep}
        for key in [k for k in self._pipelines if k not in wanted]:
            del self._pipelines[key]
        gc.collect()
        _release_memory(self.device)

    def _timed(self, pipe: EchoPipeline, step: Step, group: Group, sink: ResultSink) -> None:
        gen = step.gen
        context = order_fields(step, group) | machine_state(self.device)
        try:
            with MemoryTracker(self.device) as memory, DeviceTimer(self.device) as wall:
                result = self._synthesize(pipe, gen.cell, gen)
        except Exception as err:
            sink(self.failed_record(gen, err, phase="generation") | context, None)
            _release_memory(self.device)
            return
        record = self.ok_record(gen, result, wall.seconds, memory.to_dict())
        sink(record | context, result.audio)

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


def order_fields(step: Step, group: Group) -> dict[str, Any]:
    """Where a generation ran in the order: its group (cells sharing a loaded pipeline),
    round (one prompt/seed/repeat), place in the round, and whether the group interleaved
    several cells. The runner adds ``order_seq``, the place in the whole run."""
    return {"order_group": group.index, "order_round": step.round,
            "order_position": step.position, "order_interleaved": group.interleaved}


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
