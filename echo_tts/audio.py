"""Audio files and speaker-reference latents.

Files are read and written with soundfile (WAV, FLAC and the other libsndfile formats);
torchaudio only resamples. Waveforms are float32 tensors [channels, samples] in [-1, 1].
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

from echo_tts.autoencoder import Codec
from echo_tts.errors import first_line

SAMPLE_RATE = 44100
SPEAKER_PATCH_SIZE = 4  # the DiT's speaker encoder reads latents in patches of 4


class AudioError(ValueError):
    """An audio file or waveform cannot be used; the message names it and the fix."""


def read_wav(path: str | os.PathLike[str]) -> tuple[Tensor, int]:
    """(audio [channels, samples] float32, sample rate in Hz) of any soundfile format."""
    return _read(Path(path), max_seconds=None)


def write_wav(path: str | os.PathLike[str], audio: Tensor, sample_rate: int,
              subtype: str = "PCM_16") -> Path:
    """Write mono audio [1, T] or [T] (float, [-1, 1]) to ``path``; the format follows the
    suffix (.wav, .flac). 16-bit PCM by default; pass ``subtype="FLOAT"`` for exact values.
    """
    if audio.ndim == 2 and audio.shape[0] == 1:
        audio = audio[0]
    if audio.ndim != 1:
        raise AudioError(f"{path}: write_wav takes mono audio [1, T] or [T], got "
                         f"{tuple(audio.shape)}; mix or select a channel first")
    target = Path(path)
    try:
        sf.write(str(target), audio.detach().float().cpu().numpy(), sample_rate, subtype=subtype)
    except (sf.LibsndfileError, OSError) as err:
        reason = first_line(err)
        raise AudioError(f"{target}: cannot write audio ({reason}); check that the folder "
                         "exists and is writable and that the suffix is .wav or .flac") from err
    return target


def wav_bytes(audio: Tensor, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Mono float audio (any shape holding one channel) as the bytes of a 16-bit PCM WAV
    file: the format sweeps store, whether written here or sent back by a remote worker."""
    buffer = io.BytesIO()
    sf.write(buffer, audio.detach().reshape(-1).float().cpu().numpy(), sample_rate,
             subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def load_speaker_audio(path: str | os.PathLike[str], max_seconds: float | None = 300.0) -> Tensor:
    """A speaker reference as mono audio [1, T] at 44.1 kHz, peak at most 1.

    Channels are averaged; only the first ``max_seconds`` are read (None: all), counted at
    the file's own rate before resampling; audio louder than full scale is scaled down to
    a peak of 1 (quieter audio is left as is). Raises AudioError for an unreadable, empty
    or all-zero file.
    """
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive or None, got {max_seconds}")
    source = Path(path)
    audio, sample_rate = _read(source, max_seconds)
    mono = audio.mean(dim=0, keepdim=True)
    if mono.shape[-1] == 0:
        raise AudioError(f"{source}: the file holds no audio; pass a recording of the speaker")
    if not mono.any():
        raise AudioError(f"{source}: the audio is silent (all zeros); pass a recording of "
                         "the speaker")
    if sample_rate != SAMPLE_RATE:
        mono = AF.resample(mono, sample_rate, SAMPLE_RATE)
    return mono / mono.abs().max().clamp(min=1.0)


@torch.inference_mode()
def speaker_latents(codec: Codec, audio: Tensor, max_latents: int = 6400,
                    chunk_latents: int = 640) -> tuple[Tensor, Tensor]:
    """Speaker-reference latents [1, L, 80] (float32) and their mask [1, L] (bool).

    audio: [1, T] at 44.1 kHz. The first ``max_latents`` latents' worth of audio is
    encoded in fixed chunks of ``chunk_latents`` latents (the last one zero-padded), so
    every chunk has the same shape; the result is cut to the whole latents in the audio
    (T // 2048), then down to a multiple of the speaker patch size (4). Every kept latent
    holds real audio, so the mask is all True.
    """
    if audio.ndim != 2 or audio.shape[0] != 1:
        raise AudioError(f"speaker audio must be [1, samples], got {tuple(audio.shape)}; "
                         "load it with load_speaker_audio")
    hop = codec.samples_per_latent
    audio = audio[:, : max_latents * hop]
    length = audio.shape[1] // hop // SPEAKER_PATCH_SIZE * SPEAKER_PATCH_SIZE
    if length == 0:
        raise AudioError(f"the speaker reference is {audio.shape[1] / SAMPLE_RATE:.2f} s long; "
                         f"at least {SPEAKER_PATCH_SIZE * hop / SAMPLE_RATE:.2f} s is needed")
    chunk = chunk_latents * hop
    chunks = []
    for start in range(0, length * hop, chunk):
        piece = audio[:, start : start + chunk]
        piece = torch.nn.functional.pad(piece, (0, chunk - piece.shape[1]))
        chunks.append(codec.encode(piece[None]))
    latents = torch.cat(chunks, dim=1)[:, :length]
    return latents, torch.ones(1, length, dtype=torch.bool, device=latents.device)


def _read(path: Path, max_seconds: float | None) -> tuple[Tensor, int]:
    """(audio [channels, samples] float32, rate): the first max_seconds (None: all)."""
    try:
        with sf.SoundFile(str(path)) as f:
            frames = -1 if max_seconds is None else int(f.samplerate * max_seconds)
            data = f.read(frames, dtype="float32", always_2d=True)
            sample_rate = int(f.samplerate)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise _unreadable(path, err) from err
    return torch.from_numpy(data.T.copy()), sample_rate


def _unreadable(path: Path, err: Exception) -> AudioError:
    reason = first_line(err)
    return AudioError(f"{path}: cannot read audio ({reason}); pass a WAV or FLAC file")
