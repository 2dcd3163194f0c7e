"""The harness's own cost per generation: everything around the pipeline call.

Per generation the runner builds a record, writes the WAV, appends the record with
flush + fsync and updates the progress bar. Measured here on a realistic record and 3 s
of audio (a tiny-model smoke generation), next to the tiny model's own generation time.

    python -m pytest tests/benchmarks/test_harness.py --benchmark-enable -o norecursedirs=
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from bench.run.runner import write_audio
from bench.store.run_store import RunStore
from echo_tts import SamplerConfig
from echo_tts.pipeline import EchoPipeline


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore.create(tmp_path, spec={}, spec_name="bench", spec_hash="0", environment={})


def test_record_and_audio_write(benchmark, store: RunStore) -> None:  # type: ignore[no-untyped-def]
    audio = 0.1 * torch.randn(1, 3 * 44_100)
    record = {f"field_{i}": float(i) for i in range(60)}
    counter = itertools.count()

    def one() -> None:
        key = f"cell/prompt/{next(counter)}/0"
        path = store.claim_audio_path(key)
        assert path is not None
        write_audio(path, audio)
        store.append({**record, "key": key, "status": "ok", "audio_path": store.relative(path)})

    benchmark(one)


def test_tiny_generation_for_scale(benchmark) -> None:  # type: ignore[no-untyped-def]
    pipe = EchoPipeline.from_pretrained("random:tiny", "random:tiny")
    sampler = SamplerConfig(num_steps=8, sequence_length=64)
    benchmark(lambda: pipe.synthesize("Thank you for calling.", sampler=sampler))
