"""Each workload axis changes what it claims, on the tiny random model on CPU."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.run.concurrency import overlap_seconds
from bench.run.worker import Generation, Worker
from bench.run.workload import parallel_latency
from bench.spec import speakers
from bench.spec.prompt_files import Prompt
from bench.spec.sweep import Cell, ModelSpec
from echo_tts import SamplerConfig
from echo_tts.pipeline import SynthesisResult
from tests.cost_clock import CostClock


@pytest.fixture(scope="module")
def speaker_clip() -> Path:
    """A ~8 s espeak-ng reference clip (the built-in speaker set's passage)."""
    if not speakers.espeak_available():
        pytest.skip("espeak-ng is not installed")
    return speakers.builtin_speakers()[0].wav
MODEL = ModelSpec(model="random:tiny", codec="random:tiny", pca="random:tiny", dtype="float32",
                  device="cpu", keep_blockwise=True)
SAMPLER = SamplerConfig(num_steps=3, sequence_length=32)
# Two chunks at 32 latents (chunk_bytes_for(32) is about 24 bytes).
TWO_CHUNKS = "The cat sat on the mat. A dog ran in the park."


@pytest.fixture(scope="module")
def worker() -> Worker:
    return Worker(MODEL)


def _run(worker: Worker, cell: Cell, prompts: list[Prompt], seeds: tuple[int, ...] = (0,)
         ) -> list[tuple[dict[str, Any], torch.Tensor | None]]:
    out: list[tuple[dict[str, Any], torch.Tensor | None]] = []
    gens = [Generation(cell, p, s, 0) for p in prompts for s in seeds]
    worker.run_cell(cell, gens, 1, lambda record, audio: out.append((record, audio)))
    return out


def test_blockwise_ttfb_is_the_first_block_and_below_the_total(worker: Worker) -> None:
    cell = Cell(id="b", sampler=SAMPLER, dtype="float32", block_sizes=(8, 24),
                block_steps=(2, 3))
    pipe = worker.pipeline(cell)
    samplers = [SamplerConfig(num_steps=2, sequence_length=8),
                SamplerConfig(num_steps=3, sequence_length=24)]
    result = pipe.synthesize_blockwise("Hello there.", (8, 24), None, SAMPLER, 0,
                                       block_samplers=samplers)
    assert result.first_block_seconds is not None and len(result.block_seconds) == 2
    assert result.nfe == sum(s.nfe() for s in samplers)
    assert result.first_block_seconds < result.timings["total"]
    ((record, _),) = _run(worker, cell, [Prompt("p", "Hello there.")])
    assert record["status"] == "ok", record.get("error")
    assert record["ttfb_seconds"] < record["latency_seconds"]
    assert record["block_seconds"] and len(record["block_seconds"]) == 2
    assert record["nfe"] == sum(s.nfe() for s in samplers)


def test_blockwise_ttfb_equals_first_block_sampling_plus_decode(
        worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    cell = Cell(id="b2", sampler=SAMPLER, dtype="float32")
    pipe = worker.pipeline(cell)
    # Time the stages the pipeline reports; TTFB must be exactly their sum. On the cost
    # clock (tests/cost_clock.py) every figure is exact, however busy the machine.
    CostClock().install(monkeypatch)
    from echo_tts import pipeline as pipeline_module

    seen: dict[str, float] = {}
    original = pipeline_module.StageTimer

    class Spy(original):  # type: ignore[misc, valid-type]
        def __init__(self, device: Any) -> None:
            super().__init__(device)
            seen.clear()
            self._spy = seen

        @property
        def seconds(self) -> dict[str, float]:
            values = super().seconds
            seen.update(values)
            return values

    monkeypatch.setattr(pipeline_module, "StageTimer", Spy)
    result = pipe.synthesize_blockwise("Hello.", (8, 24), None, SAMPLER, 0)
    assert result.first_block_seconds == seen["first_block_sampling"] + seen["first_block_decode"]
    # Block 0's sampling is the first block's: the two stages time the same forwards.
    assert result.block_seconds[0] == seen["first_block_sampling"] > 0


def test_bfloat16_codec_audio_is_within_tolerance_of_float32(worker: Worker) -> None:
    prompt = Prompt("p", "Hello there.")
    f32 = _run(worker, Cell(id="f", sampler=SAMPLER, dtype="float32"), [prompt])
    bf16 = _run(worker, Cell(id="h", sampler=SAMPLER, dtype="float32",
                             codec_dtype="bfloat16"), [prompt])
    a, b = f32[0][1], bf16[0][1]
    assert a is not None and b is not None
    n = min(a.shape[-1], b.shape[-1])
    # Same latents (the DiT is float32 in both); only decoding differs. Stated tolerance:
    # RMS error within 20 % of the signal's RMS. bfloat16 keeps 8 mantissa bits (about
    # 0.4 % per value) and the error grows through the codec's decoder layers; the tiny
    # random codec measured about 12 % here, and the error is never zero (a different
    # dtype really ran).
    error = (a[..., :n] - b[..., :n]).pow(2).mean().sqrt()
    scale = a[..., :n].pow(2).mean().sqrt()
    assert 0 < error <= 0.20 * scale
    assert worker.pipeline(Cell(id="h", sampler=SAMPLER, dtype="float32",
                                codec_dtype="bfloat16")).codec is not worker.pipeline(
        Cell(id="f", sampler=SAMPLER, dtype="float32")).codec


def test_concurrency_two_overlaps_the_requests_and_reports_each_latency(
        worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    cell = Cell(id="c", sampler=SAMPLER, dtype="float32", concurrency=2)
    # Each request holds until the other is in flight too (a barrier, not a sleep): two
    # requests that ran one after the other would break it, however loaded the machine.
    # (Warm-up runs through the worker's own untimed path, not synthesize_one.)
    both_in_flight = threading.Barrier(2, timeout=120)
    synthesize_one = worker.synthesize_one

    def held(*args: Any) -> SynthesisResult:
        both_in_flight.wait()
        return synthesize_one(*args)

    monkeypatch.setattr(worker, "synthesize_one", held)
    out = _run(worker, cell, [Prompt("a", "Hello there."), Prompt("b", "Good morning.")])
    records = [r for r, _ in out]
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert {r["concurrency_round"] for r in records} == {0}
    spans = [(r["request_start_seconds"], r["request_end_seconds"]) for r in records]
    assert overlap_seconds(spans[0], spans[1]) > 0  # both were in flight at once
    for r in records:
        assert r["latency_seconds"] == r["request_end_seconds"] > 0
        assert r["throughput"] == pytest.approx(r["round_audio_seconds"] / r["round_wall_seconds"])
    # Concurrent requests give the audio a request alone would (same seed, same model).
    alone = _run(worker, Cell(id="s", sampler=SAMPLER, dtype="float32"),
                 [Prompt("a", "Hello there.")])
    assert out[0][1] is not None and alone[0][1] is not None
    assert torch.allclose(out[0][1], alone[0][1], atol=1e-5)


def test_speaker_seconds_changes_the_speaker_token_count(worker: Worker,
                                                         speaker_clip: Path) -> None:
    prompt = Prompt("p", "Hello there.", speaker_wav=speaker_clip)
    tokens = {}
    for seconds in (2.0, 20.0):  # the ~8 s clip trimmed, and repeated
        cell = Cell(id=f"s{seconds}", sampler=SAMPLER, dtype="float32", speaker_seconds=seconds)
        ((record, _),) = _run(worker, cell, [prompt])
        assert record["status"] == "ok", record.get("error")
        tokens[seconds] = record["speaker_tokens"]
        assert record["speaker_reference_seconds"] == pytest.approx(seconds, abs=1e-4)
    assert tokens[2.0] == 2.0 * 44100 // 2048 // 4
    assert tokens[20.0] == 20.0 * 44100 // 2048 // 4


def test_chunk_parallel_latency_is_the_slowest_chunk_not_the_sum(worker: Worker) -> None:
    cell = Cell(id="p", sampler=SAMPLER, dtype="float32", chunk_workers=2)
    ((record, _),) = _run(worker, cell, [Prompt("p", TWO_CHUNKS)])
    assert record["status"] == "ok", record.get("error")
    chunks = record["chunk_seconds"]
    assert len(chunks) == 2 and record["n_chunks"] == 2
    assert record["latency_seconds"] == pytest.approx(max(chunks))
    assert record["compute_seconds"] == pytest.approx(sum(chunks))
    assert record["chunk_parallel_mode"] == "simulated-one-device"
    assert parallel_latency([3.0, 1.0, 2.0], 2) == 5.0  # chunks 0 and 2 share worker 0


def test_modal_chunk_dispatcher_spreads_chunks_and_times_the_wall(
        worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Modal path with the container call replaced by run_chunk in this process."""
    from bench.backends import modal_parallel
    from bench.backends.modal_parallel import ModalChunkDispatcher, run_chunk

    # The two calls must be in flight at once (a barrier, not a sleep: calls made one
    # after the other break it on any machine). The dispatcher's clock is the test's:
    # each fan-out takes exactly FAN_OUT on it, so the figures are exact (issue 22).
    both_in_flight = threading.Barrier(2, timeout=120)
    clock = CostClock().read_by(monkeypatch, modal_parallel)
    fan_out = 7.5

    class Call:
        def __init__(self, request: str) -> None:
            self.request = request

        def get(self) -> dict[str, Any]:
            both_in_flight.wait()
            reply = run_chunk(worker, self.request, Path("/tmp"))
            if both_in_flight.wait() == 0:  # once per fan-out, after both chunks ran
                clock.now += fan_out
            return reply

    dispatcher = ModalChunkDispatcher("{}", lambda gpu, params, request, region: Call(request), "L4")
    cell = Cell(id="m", sampler=SAMPLER, dtype="float32", chunk_workers=2)
    result: SynthesisResult = dispatcher.run_chunks(cell, Prompt("p", TWO_CHUNKS), 0,
                                                     ["The cat sat on the mat.",
                                                      "A dog ran in the park."])
    assert len(result.chunks) == 2
    # The fan-out's own wall, not a sum (or max) of the chunks' times.
    assert result.timings["parallel_wall"] == fan_out
    # The same audio as the local pipeline's synthesize_long of the same chunks and seeds.
    local = worker.pipeline(cell).synthesize_long(TWO_CHUNKS, None, SAMPLER, 0)
    assert torch.allclose(result.audio, local.audio, atol=1e-5)
    # Through the worker (as in a Modal container): the record's latency is the fan-out's.
    worker.chunk_dispatcher = dispatcher
    try:
        ((record, _),) = _run(worker, cell, [Prompt("p", TWO_CHUNKS)])
    finally:
        worker.chunk_dispatcher = None
    assert record["status"] == "ok", record.get("error")
    assert record["chunk_parallel_mode"] == "containers"
    assert record["latency_seconds"] == fan_out
    assert len(record["chunk_seconds"]) == 2
