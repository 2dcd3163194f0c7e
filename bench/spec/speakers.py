"""The built-in speaker set: speaker reference clips synthesised with espeak-ng.

Echo is a voice-cloning model, so a realistic sweep carries a speaker reference with
every prompt. Offline runs and CI have no recordings to hand, so the harness makes its own:
six espeak-ng voices (different accents, genders and variants) each read the same short
passage; the clips are resampled to 44.1 kHz (Echo's codec rate) with torchaudio and
written as 16-bit WAV with soundfile into a cache folder, never into the repository.

The clips are formant synthesis, not human speech: they exercise the speaker-conditioned
code path and its cost (speaker encoding, the speaker attention rows) and give SIM
different voices to tell apart, but they say nothing about how well Echo clones a human.

The same voices also speak any prompt's own text (:func:`speak_text`), which gives the
"ground truth" control row of a built-in run: each prompt read by its reference voice.

Cache folder: ``$ECHO_BENCH_SPEAKER_CACHE``, else ``~/.cache/echo-bench/speakers``. Each
version of the set (voices, passage, espeak-ng version) lives in its own sub-folder, so
an upgrade never mixes clips.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

__all__ = [
    "PASSAGE",
    "SAMPLE_RATE",
    "VOICES",
    "EspeakMissing",
    "Speaker",
    "builtin_speakers",
    "espeak_available",
    "speak_text",
    "speaker_cache_dir",
]

SAMPLE_RATE = 44_100
# Six voices that sound clearly apart: two accents, male and female variants.
VOICES: tuple[str, ...] = ("en-us", "en-gb", "en-us+f3", "en-gb-x-rp+m3", "en-us+f4",
                           "en-gb-scotland+m7")
# About eight seconds at espeak-ng's default rate: long enough for a speaker encoder,
# short enough to keep the smoke sweep's speaker encoding cheap on a CPU.
PASSAGE = ("The morning train was late again, so we walked along the river and talked about "
           "the weather, the garden, and the long summer ahead of us.")


class EspeakMissing(RuntimeError):
    """espeak-ng is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Speaker:
    """One built-in speaker: ``id`` (e.g. "espeak-en-gb"), the espeak-ng ``voice``, its
    reference clip ``wav`` (44.1 kHz mono) and the clip's transcript ``text``."""

    id: str
    voice: str
    wav: Path
    text: str


def speaker_cache_dir() -> Path:
    """``$ECHO_BENCH_SPEAKER_CACHE``, else ``~/.cache/echo-bench/speakers``."""
    env = os.environ.get("ECHO_BENCH_SPEAKER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "echo-bench" / "speakers"


def _espeak() -> str | None:
    return shutil.which("espeak-ng")


def espeak_available() -> bool:
    """Whether espeak-ng is on PATH."""
    return _espeak() is not None


def _require_espeak() -> str:
    exe = _espeak()
    if exe is None:
        raise EspeakMissing("espeak-ng is not installed (the built-in speaker set is made with "
                            "it); install it (apt-get install espeak-ng, brew install espeak-ng)"
                            " or drop [prompts].speakers from the spec")
    return exe


def _version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _synthesise(exe: str, voice: str, text: str, target: Path) -> None:
    """espeak-ng's 22.05 kHz output, resampled to 44.1 kHz and written atomically."""
    with tempfile.TemporaryDirectory(prefix="echo-bench-espeak-") as tmp:
        raw = Path(tmp) / "raw.wav"
        # "--" ends the options: a text starting with "-" must not be read as one.
        subprocess.run([exe, "-v", voice, "-w", str(raw), "--", text], check=True,
                       capture_output=True)
        audio, rate = sf.read(str(raw), dtype="float32", always_2d=True)
    wav = torch.from_numpy(np.ascontiguousarray(audio.mean(axis=1)))
    if rate != SAMPLE_RATE:
        wav = AF.resample(wav, rate, SAMPLE_RATE)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".wav", dir=target.parent)
    os.close(fd)
    try:
        sf.write(tmp_name, wav.clamp(-1.0, 1.0).numpy(), SAMPLE_RATE, subtype="PCM_16")
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _set_dir(exe: str, cache: Path | None) -> Path:
    recipe = "\n".join([_version(exe), str(SAMPLE_RATE), PASSAGE, *VOICES])
    digest = hashlib.sha256(recipe.encode("utf-8")).hexdigest()[:12]
    return (cache or speaker_cache_dir()) / f"espeak-{digest}"


def builtin_speakers(cache: Path | None = None) -> list[Speaker]:
    """The built-in speakers, synthesising any clip not yet in the cache.

    Raises:
        EspeakMissing: espeak-ng is not installed.
    """
    exe = _require_espeak()
    folder = _set_dir(exe, cache)
    speakers = []
    for voice in VOICES:
        wav = folder / f"{voice.replace('+', '_')}.wav"
        if not wav.is_file():
            _synthesise(exe, voice, PASSAGE, wav)
        speakers.append(Speaker(id=f"espeak-{voice}", voice=voice, wav=wav, text=PASSAGE))
    return speakers


def speak_text(voice: str, text: str, cache: Path | None = None) -> Path:
    """``text`` read by espeak-ng ``voice`` (cached by voice and text), 44.1 kHz WAV."""
    exe = _require_espeak()
    digest = hashlib.sha256(f"{voice}\0{text}".encode()).hexdigest()[:16]
    wav = _set_dir(exe, cache) / "texts" / f"{digest}.wav"
    if not wav.is_file():
        _synthesise(exe, voice, text, wav)
    return wav
