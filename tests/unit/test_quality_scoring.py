"""The quality-scoring runner with a counting stand-in metric: cache hits by audio content,
"too short", unreadable files, references, resumption and rescoring."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from bench.scoring.cache import VectorCache
from bench.scoring.metric import Metric, cosine
from bench.scoring.quality import score_quality
from bench.store.layout import record_key
from bench.store.run_store import RunStore


class Loudness:
    """Vector = [RMS, seconds]; SIM-like columns against a "speaker" reference."""

    name = "loud"
    model_id = "loud:v1"
    min_seconds = 1.0
    references = ("speaker",)

    def __init__(self) -> None:
        self.computed = 0

    def compute(self, audios: Sequence[np.ndarray]) -> list[list[float]]:
        self.computed += len(audios)
        return [[float(np.sqrt(np.mean(a**2))), len(a) / 16_000] for a in audios]

    def columns(self, vector: list[float], references: Mapping[str, list[float] | None]
                ) -> dict[str, Any]:
        ref = references.get("speaker")
        return {"loud_model": self.model_id, "loud": vector[0],
                "loud_vs_ref": None if ref is None else cosine(vector, ref)}


def _tone(path: Path, seconds: float, amplitude: float) -> Path:
    t = np.arange(int(seconds * 44_100)) / 44_100
    sf.write(str(path), amplitude * np.sin(2 * np.pi * 200 * t), 44_100)
    return path


def test_runner_caches_by_content_records_reasons_and_resumes(tmp_path: Path) -> None:
    metric = Loudness()
    assert isinstance(metric, Metric)
    cache = VectorCache(tmp_path / "cache")
    ref = _tone(tmp_path / "ref.wav", 2.0, 0.1)
    with RunStore.create(tmp_path / "runs", spec={}, spec_name="t", spec_hash="h",
                         environment={}) as store:
        audio = store.path / "audio"
        audio.mkdir(exist_ok=True)
        _tone(audio / "a.wav", 2.0, 0.5)
        _tone(audio / "b.wav", 2.0, 0.5)  # same bytes as a.wav: computed once
        _tone(audio / "c.wav", 0.5, 0.5)  # too short
        (audio / "d.wav").write_bytes(b"not audio")
        rows = {"a": str(ref), "b": None, "c": str(ref), "d": str(ref), "e": str(ref)}
        for cell, speaker in rows.items():
            fields = {"audio_path": f"audio/{cell}.wav"} if cell != "e" else {"audio_silent": True}
            store.append({"key": record_key(cell, "p", 0, 0), "cell_id": cell, "status": "ok",
                          "prompt_id": "p", "speaker_wav": speaker, **fields})
        store.append({"key": record_key("f", "p", 0, 0), "cell_id": "f", "status": "failed"})

        outcome = score_quality(store, [metric], cache=cache)
        got = {r["cell_id"]: r for r in store.records()}
        assert got["a"]["loud"] > 0.3 and got["a"]["loud_vs_ref"] is not None
        assert got["b"]["loud_skipped"] == "no speaker reference"  # not even computed
        assert got["c"]["loud_skipped"] == "too short" and "loud" not in got["c"]
        assert got["d"]["loud_skipped"].startswith("failed: ")
        assert got["e"]["loud_skipped"] == "silent audio"
        assert "loud_model" not in got["f"]
        assert metric.computed == 2  # a.wav and the reference; b.wav was never needed
        assert outcome.scored == {"loud": 1}

        metric.computed = 0
        again = score_quality(store, [metric], cache=cache)
        assert again.already == {"loud": 5} and metric.computed == 0

        # Rescoring reads the cache instead of the model; the other columns stay.
        store.append_score(record_key("a", "p", 0, 0), {**store.score_of(record_key("a", "p", 0, 0)),
                                                        "wer": 0.5})
        score_quality(store, [metric], cache=cache, rescore=True)
        assert metric.computed == 0
        assert {r["cell_id"]: r for r in store.records()}["a"]["wer"] == 0.5
