"""Whisper loading and transcription, offline, on tiny random checkpoints; transcript cache."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import whisper
from whisper.model import ModelDimensions

from bench.scoring import ASRError, TranscriptCache, WhisperASR, to_16k, transcribe_files
from bench.scoring.asr import ASR, RANDOM_DIMS, read_audio_16k, write_random_checkpoint
from bench.scoring.cache import hash_audio_array, sha256_file

# Smallest Whisper the real code path accepts: 80 mels and a 1500-frame audio context are
# fixed by the 30 s log-mel front end, the vocabulary by the tokenizer.
MINI = ModelDimensions(
    n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
    n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=1,
)  # fmt: skip


def _tone(seconds: float, freq: float, seed: int, rate: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.shape[0])
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * noise).astype(np.float32)


@pytest.fixture(scope="module")
def mini_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(
        tmp_path_factory.mktemp("whisper") / "mini.pt", MINI, label="mini"
    )


@pytest.fixture(scope="module")
def asr(mini_path: Path) -> WhisperASR:
    # batch_size 2 over 3 inputs: one full batch and one partial batch.
    return WhisperASR(str(mini_path), device="cpu", batch_size=2)


@pytest.fixture(scope="module")
def signals() -> list[np.ndarray]:
    return [_tone(1.0, 220, 0), _tone(2.5, 440, 1), _tone(1.7, 330, 2)]


def test_checkpoint_loads_by_path_and_describes_itself(asr: WhisperASR) -> None:
    assert isinstance(asr, ASR)
    assert asr.name == "whisper:random:mini:seed0"
    assert asr.is_random
    assert asr.model.dims == MINI
    assert not asr.fp16  # CPU


def test_random_checkpoint_is_seeded(tmp_path: Path) -> None:
    a = torch.load(write_random_checkpoint(tmp_path / "a.pt", MINI), weights_only=True)
    b = torch.load(write_random_checkpoint(tmp_path / "b.pt", MINI), weights_only=True)
    c = torch.load(write_random_checkpoint(tmp_path / "c.pt", MINI, seed=1), weights_only=True)
    sd_a, sd_b, sd_c = (x["model_state_dict"] for x in (a, b, c))
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert not all(torch.equal(sd_a[k], sd_c[k]) for k in sd_a)
    # Whisper's own loader reads the same file (extra keys are ignored).
    assert whisper.load_model(str(tmp_path / "a.pt"), device="cpu").dims == MINI


def test_plain_user_checkpoint_is_named_by_hash(tmp_path: Path, mini_path: Path) -> None:
    ckpt = torch.load(mini_path, weights_only=True)
    path = tmp_path / "user.pt"
    torch.save({"dims": ckpt["dims"], "model_state_dict": ckpt["model_state_dict"]}, path)
    user = WhisperASR(str(path), device="cpu")
    assert user.name.startswith("whisper:file:")
    assert not user.is_random


class _Payload:
    """Anything that is not a tensor or plain container: unpickling it runs code."""


def test_checkpoint_with_pickled_objects_is_refused(tmp_path: Path, mini_path: Path) -> None:
    ckpt = torch.load(mini_path, weights_only=True)
    ckpt["extra"] = _Payload()
    path = tmp_path / "evil.pt"
    torch.save(ckpt, path)
    with pytest.raises(ASRError, match="not a loadable Whisper checkpoint"):
        WhisperASR(str(path), device="cpu")


def test_transcribe_is_deterministic_and_batching_does_not_change_text(
    asr: WhisperASR, mini_path: Path, signals: list[np.ndarray]
) -> None:
    first = asr.transcribe(signals)
    assert len(first) == len(signals)
    assert all(isinstance(t, str) for t in first)
    assert any(first)  # random weights give garbage, but text, not special tokens
    assert all("<|" not in t for t in first)
    assert asr.transcribe(signals) == first
    sequential = WhisperASR(str(mini_path), device="cpu", batched=False)
    assert sequential.transcribe(signals) == first
    # Order of inputs is preserved whatever order batches are formed in.
    assert asr.transcribe(signals[::-1]) == first[::-1]
    assert asr.transcribe([]) == []


def test_long_audio_is_transcribed_whole_not_truncated(
    asr: WhisperASR, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real = whisper.transcribe

    def spy(model: whisper.Whisper, audio: np.ndarray, **kwargs: object) -> dict[str, object]:
        seen.append(audio.shape[0])
        assert kwargs["condition_on_previous_text"] is False
        assert kwargs["temperature"] == 0.0
        return real(model, audio, **kwargs)

    monkeypatch.setattr(whisper, "transcribe", spy)
    long = _tone(31.0, 200, 3)
    out = asr.transcribe([_tone(1.0, 220, 0), long])
    assert seen == [long.shape[0]]
    assert all(isinstance(t, str) for t in out)


def test_rejects_non_mono_audio(asr: WhisperASR) -> None:
    with pytest.raises(ValueError, match="samples"):
        asr.transcribe([np.zeros((2, 16_000), np.float32)])


def test_missing_official_model_fails_fast_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to download")

    monkeypatch.setattr(whisper, "_download", no_network)
    with pytest.raises(ASRError) as info:
        WhisperASR("tiny", download_root=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path) in message
    assert "tiny.pt" in message
    assert "whisper.load_model('tiny'" in message


def test_corrupt_official_file_and_unknown_names(tmp_path: Path) -> None:
    (tmp_path / "tiny.pt").write_bytes(b"not a model")
    with pytest.raises(ASRError, match="sha256"):
        WhisperASR("tiny", download_root=tmp_path)
    with pytest.raises(ASRError, match="neither an official name"):
        WhisperASR("no-such-model", download_root=tmp_path)
    with pytest.raises(ASRError, match="unknown random Whisper size"):
        WhisperASR("random:huge", download_root=tmp_path)


def test_random_official_size_is_written_once(tmp_path: Path) -> None:
    first = WhisperASR("random:tiny", download_root=tmp_path, device="cpu")
    assert first.model.dims == RANDOM_DIMS["tiny"]
    assert first.name == "whisper:random:tiny:seed0" and first.is_random
    stamp = first.checkpoint.stat().st_mtime_ns
    second = WhisperASR("random:tiny", download_root=tmp_path, device="cpu")
    assert second.checkpoint == first.checkpoint
    assert second.checkpoint.stat().st_mtime_ns == stamp


def test_to_16k() -> None:
    x = _tone(1.0, 440, 0, rate=44_100)
    y = to_16k(x, 44_100)
    assert y.dtype == np.float32 and y.shape == (16_000,)
    assert np.array_equal(to_16k(y, 16_000), y)
    assert to_16k(torch.from_numpy(x).double(), 44_100).shape == (16_000,)
    with pytest.raises(ValueError, match="mono"):
        to_16k(np.zeros((16_000, 2)), 16_000)


# --- cache and transcribe_files ---------------------------------------------------------


class _CountingASR:
    """An ASR that returns the length of each input and records every call."""

    name = "fake:len"
    is_random = False

    def __init__(self) -> None:
        self.calls: list[int] = []

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        self.calls.append(len(audios))
        return [f"n{a.shape[0]}" for a in audios]


def test_cache_round_trip_and_keys(tmp_path: Path) -> None:
    cache = TranscriptCache(tmp_path / "cache")
    assert cache.get("abc", "whisper:tiny") is None
    cache.put("abc", "whisper:tiny", "héllo wörld")
    assert cache.get("abc", "whisper:tiny") == "héllo wörld"
    assert cache.get("abc", "whisper:large-v3") is None
    cache.put("abc", "whisper:tiny", "")  # empty transcripts are cached too
    assert cache.get("abc", "whisper:tiny") == ""
    assert len(cache) == 1
    x = np.zeros(4, np.float32)
    assert hash_audio_array(x) == hash_audio_array(x.astype(np.float64))
    assert hash_audio_array(x) != hash_audio_array(x.reshape(4, 1))


def test_cache_is_safe_with_concurrent_writers(tmp_path: Path) -> None:
    cache = TranscriptCache(tmp_path)
    text = "word " * 2000
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(30):
                cache.put("h", "asr", text)
                assert cache.get("h", "asr") == text
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert not list(tmp_path.glob("*/.tmp-*"))


def test_transcribe_files_uses_cache_and_dedupes(tmp_path: Path) -> None:
    paths = []
    for i, seconds in enumerate([0.5, 1.0, 0.5]):
        path = tmp_path / f"{i}.wav"
        # 0 and 2 hold identical bytes; stereo at 44.1 kHz exercises mixing and resampling.
        seed = 0 if i != 1 else 1
        stereo = np.stack([_tone(seconds, 440, seed, 44_100)] * 2, axis=1)
        sf.write(path, stereo, 44_100)
        paths.append(path)
    assert sha256_file(paths[0]) == sha256_file(paths[2])
    cache = TranscriptCache(tmp_path / "cache")
    fake = _CountingASR()
    out = transcribe_files(fake, paths, cache, progress=False, chunk_size=1)
    assert out == ["n8000", "n16000", "n8000"]
    assert fake.calls == [1, 1]  # two distinct files, one per chunk
    assert transcribe_files(fake, paths, cache, progress=False) == out
    assert fake.calls == [1, 1]  # all hits


def test_transcribe_files_matches_direct_transcription(tmp_path: Path, asr: WhisperASR) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, _tone(1.2, 300, 5, 24_000), 24_000)
    cache = TranscriptCache(tmp_path / "cache")
    (text,) = transcribe_files(asr, [path], cache, progress=False)
    assert text == asr.transcribe([read_audio_16k(path)])[0]
    assert cache.get(sha256_file(path), asr.name) == text


def test_make_asr_refuses_a_bad_device_in_one_line(tmp_path: Path) -> None:
    from bench.core.errors import UserError
    from bench.scoring.run_scoring import make_asr

    with pytest.raises(UserError, match="unknown device 'gpu'"):
        make_asr("random:tiny", "gpu", download_root=str(tmp_path))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU is visible"):
            make_asr("random:tiny", "cuda", download_root=str(tmp_path))
