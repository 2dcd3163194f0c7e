"""N requests in flight at once on one worker: the ``concurrency`` axis.

A Modal container with N concurrent inputs runs a synchronous function on N threads of
one process, sharing the loaded model. This runs a cell's generations the same way: in
rounds of N (consecutive generations: different prompts and seeds), the N threads of a
round released together by a barrier, each calling the one shared pipeline.

What is safe: the eager model call keeps no state between calls (every call builds its
own noise generator, conditioning and attention plan), inference mode is per thread,
and the pipeline's speaker cache is a dict whose racing writers store equal values. A
compiled model or CUDA graphs replay shared buffers, so the spec refuses concurrency > 1
with either. On CUDA every thread uses the default stream, as Modal's threads would:
kernels of the N requests interleave on the device rather than run side by side.

Per request: ``latency_seconds`` from the round's release to that request's end (its
wait for the device included), its own stage timings and TTFB. Per round:
``round_wall_seconds``, ``round_audio_seconds`` and ``throughput`` (audio seconds per
second of the worker's time), and the round's memory peak on every record of the round.
A request that fails (out of memory included) is a failed record; the others stand.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from bench.run.measure import MemoryTracker
from bench.run.schedule import Generation, ResultSink
from bench.spec.sweep import Cell
from echo_tts.pipeline import EchoPipeline, SynthesisResult
from echo_tts.timing import synchronize


class RequestRunner(Protocol):
    """What a round needs of the worker (``bench.run.worker.Worker`` is one); a protocol,
    so this module and the worker that calls it do not import each other."""

    def synthesize_one(self, pipe: EchoPipeline, cell: Cell, gen: Generation
                       ) -> SynthesisResult: ...

    def ok_record(self, gen: Generation, result: SynthesisResult, wall_seconds: float,
                  memory: dict[str, Any]) -> dict[str, Any]: ...

    def failed_record(self, gen: Generation, err: BaseException, phase: str
                      ) -> dict[str, Any]: ...

    def release_memory(self) -> None: ...


@dataclass
class _Outcome:
    gen: Generation
    start: float = 0.0
    end: float = 0.0
    result: SynthesisResult | None = None
    error: BaseException | None = None


def run_concurrently(worker: RequestRunner, pipe: EchoPipeline, cell: Cell,
                     generations: list[Generation], sink: ResultSink) -> None:
    """Run ``generations`` in rounds of ``cell.concurrency`` threads (module docstring)."""
    n = cell.concurrency
    for index, first in enumerate(range(0, len(generations), n)):
        batch = generations[first : first + n]
        outcomes, wall, memory = run_round(worker, pipe, cell, batch)
        audio = sum(o.result.audio_seconds for o in outcomes if o.result is not None)
        shared = {
            "concurrency_round": index,
            "round_requests": len(batch),
            "round_wall_seconds": wall,
            "round_audio_seconds": audio,
            "throughput": audio / wall if wall > 0 else None,
            **memory,
        }
        for o in outcomes:
            if o.result is None:
                assert o.error is not None
                record = worker.failed_record(o.gen, o.error, phase="generation")
                record.update(shared)
                sink(record, None)
                continue
            record = worker.ok_record(o.gen, o.result, o.end, memory)
            record.update(shared, request_start_seconds=o.start, request_end_seconds=o.end,
                          latency_seconds=o.end)
            sink(record, o.result.audio)


def run_round(worker: RequestRunner, pipe: EchoPipeline, cell: Cell, batch: list[Generation]
              ) -> tuple[list[_Outcome], float, dict[str, Any]]:
    """One round: every generation of ``batch`` on its own thread, released together.

    Returns the outcomes (start and end in seconds after the release), the round's wall
    time and its memory peak.
    """
    outcomes = [_Outcome(gen) for gen in batch]
    barrier = threading.Barrier(len(batch) + 1)
    released = [0.0]

    def request(outcome: _Outcome) -> None:
        barrier.wait()
        outcome.start = time.perf_counter() - released[0]
        try:
            outcome.result = worker.synthesize_one(pipe, cell, outcome.gen)
            synchronize(pipe.device)
        except Exception as err:  # OOM included: this request fails, the round goes on
            outcome.error = err
        outcome.end = time.perf_counter() - released[0]

    threads = [threading.Thread(target=request, args=(o,), name=f"request-{i}", daemon=True)
               for i, o in enumerate(outcomes)]
    with MemoryTracker(pipe.device) as memory:
        for thread in threads:
            thread.start()
        synchronize(pipe.device)
        released[0] = time.perf_counter()
        barrier.wait()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - released[0]
    if any(o.error is not None for o in outcomes):
        worker.release_memory()
    return outcomes, wall, memory.to_dict()


def overlap_seconds(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Seconds two [start, end] intervals share (0 when they do not intersect)."""
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
