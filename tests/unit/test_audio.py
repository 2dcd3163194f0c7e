from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from echo_tts.audio import (
    AudioError,
    load_speaker_audio,
    read_wav,
    speaker_latents,
    wav_bytes,
    write_wav,
)
from echo_tts.autoencoder import Codec, load_codec


@pytest.fixture(scope="module")
def codec() -> Codec:
    return load_codec("random:tiny")


def _tone(seconds: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_write_read_round_trip(tmp_path: Path) -> None:
    audio = torch.from_numpy(_tone(0.1, 44100))
    path = write_wav(tmp_path / "a.wav", audio[None], 44100, subtype="FLOAT")
    back, rate = read_wav(path)
    assert rate == 44100 and back.shape == (1, len(audio))
    assert torch.equal(back[0], audio)
    write_wav(tmp_path / "b.flac", audio, 44100)
    assert torch.allclose(read_wav(tmp_path / "b.flac")[0][0], audio, atol=1e-4)
    with pytest.raises(AudioError, match="mono"):
        write_wav(tmp_path / "c.wav", torch.zeros(2, 10), 44100)
    # The in-memory encoder sweeps use: 16-bit PCM WAV, so within one quantisation step.
    (tmp_path / "d.wav").write_bytes(wav_bytes(audio[None]))
    back, rate = read_wav(tmp_path / "d.wav")
    assert rate == 44100 and sf.info(tmp_path / "d.wav").subtype == "PCM_16"
    assert float((back[0] - audio).abs().max()) <= 1 / 32768


def test_stereo_is_mixed_to_mono(tmp_path: Path) -> None:
    left = _tone(0.2, 44100)
    sf.write(tmp_path / "s.wav", np.stack([left, np.zeros_like(left)], axis=1), 44100,
             subtype="FLOAT")
    audio = load_speaker_audio(tmp_path / "s.wav")
    assert audio.shape == (1, len(left))
    torch.testing.assert_close(audio[0], torch.from_numpy(left) / 2)


def test_resampled_to_44k(tmp_path: Path) -> None:
    sf.write(tmp_path / "r.flac", _tone(0.5, 16000), 16000)
    audio = load_speaker_audio(tmp_path / "r.flac")
    assert audio.shape == (1, math.ceil(8000 * 44100 / 16000))
    assert 0.45 < float(audio.abs().max()) < 0.55


def test_capped_before_resampling(tmp_path: Path) -> None:
    sf.write(tmp_path / "long.wav", _tone(3.0, 22050), 22050)
    assert load_speaker_audio(tmp_path / "long.wav", max_seconds=1.0).shape == (1, 44100)
    assert load_speaker_audio(tmp_path / "long.wav", max_seconds=None).shape == (1, 3 * 44100)
    with pytest.raises(ValueError, match="max_seconds"):
        load_speaker_audio(tmp_path / "long.wav", max_seconds=0)


def test_only_loud_audio_is_normalised(tmp_path: Path) -> None:
    sf.write(tmp_path / "loud.wav", _tone(0.1, 44100, amplitude=2.0), 44100, subtype="FLOAT")
    sf.write(tmp_path / "quiet.wav", _tone(0.1, 44100, amplitude=0.25), 44100, subtype="FLOAT")
    assert float(load_speaker_audio(tmp_path / "loud.wav").abs().max()) == pytest.approx(1.0)
    assert float(load_speaker_audio(tmp_path / "quiet.wav").abs().max()) == pytest.approx(
        0.25, rel=1e-3)


def test_unusable_files_raise_audio_error(tmp_path: Path) -> None:
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 44100)
    sf.write(tmp_path / "silent.wav", np.zeros(4410, dtype=np.float32), 44100)
    for name, message in (("missing.wav", "cannot read audio"), ("junk.wav", "cannot read audio"),
                          ("empty.wav", "no audio"), ("silent.wav", "silent")):
        with pytest.raises(AudioError, match=message) as info:
            load_speaker_audio(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)
    assert issubclass(AudioError, ValueError)


def test_speaker_latents_shapes_and_mask(codec: Codec) -> None:
    audio = 0.3 * torch.randn(1, 10 * 2048 + 100)
    latents, mask = speaker_latents(codec, audio)
    assert latents.shape == (1, 8, 80) and latents.dtype == torch.float32
    assert mask.shape == (1, 8) and mask.dtype == torch.bool and mask.all()


def test_speaker_latents_chunking_and_cap(codec: Codec) -> None:
    audio = 0.3 * torch.randn(1, 13 * 2048)
    whole, _ = speaker_latents(codec, audio)
    chunked, _ = speaker_latents(codec, audio, chunk_latents=5)
    assert whole.shape == chunked.shape == (1, 12, 80)
    # Chunks of 5 latents restart the causal context every 5 latents: the first chunk
    # sees the same audio either way, later ones differ.
    torch.testing.assert_close(chunked[:, :5], whole[:, :5], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked[:, 5:10], codec.encode(audio[None, :, 5 * 2048 : 10 * 2048]),
                               rtol=1e-5, atol=1e-5)
    capped, mask = speaker_latents(codec, audio, max_latents=6)
    assert capped.shape == (1, 4, 80) and mask.shape == (1, 4)


def test_speaker_latents_rejects_short_or_misshaped_audio(codec: Codec) -> None:
    with pytest.raises(AudioError, match="at least"):
        speaker_latents(codec, torch.randn(1, 3 * 2048))
    with pytest.raises(AudioError, match=r"\[1, samples\]"):
        speaker_latents(codec, torch.randn(2, 8 * 2048))
