"""On-disk caches of transcripts and metric vectors, keyed by audio content and model identity.

One small JSON file per (audio, ASR) pair, written to a temporary file in the same
folder and moved into place with ``os.replace``. The rename is atomic on POSIX and on
Windows, so two scorers sharing a folder can only ever see a complete entry or none;
when both transcribe the same audio the last writer wins with an identical transcript
(decoding is deterministic), so no lock is needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["TranscriptCache", "VectorCache", "hash_audio_array", "sha256_file"]

_CHUNK = 1 << 20  # bytes read at a time when hashing a file


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file's bytes (for audio: container and samples alike)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_audio_array(audio: np.ndarray) -> str:
    """sha256 hex digest of an array's samples as little-endian float32, with its shape.

    The shape is part of the digest so [N] and [N, 1] arrays do not collide. Hashes of
    arrays and of files live in separate spaces: the same sound hashed both ways gives
    two different keys.
    """
    samples = np.ascontiguousarray(audio, dtype="<f4")
    digest = hashlib.sha256(f"f32{samples.shape}".encode())
    digest.update(samples.tobytes())
    return digest.hexdigest()


class TranscriptCache:
    """Transcripts under ``folder``, one JSON file per (audio hash, ASR name).

    Entries are laid out as ``folder/<k[:2]>/<k>.json`` with
    ``k = sha256(audio_hash + NUL + asr_name)``, so any ASR name (slashes, colons) maps
    to a safe file name and no folder grows past a few thousand files.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def _path(self, audio_hash: str, asr_name: str) -> Path:
        key = hashlib.sha256(f"{audio_hash}\0{asr_name}".encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.json"

    def get(self, audio_hash: str, asr_name: str) -> str | None:
        """The cached transcript, or None when this pair has not been transcribed."""
        try:
            entry = json.loads(self._path(audio_hash, asr_name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        # Guard against a hash collision of the file name, however unlikely.
        if entry.get("audio_hash") != audio_hash or entry.get("asr") != asr_name:
            return None
        text: str = entry["text"]
        return text

    def put(self, audio_hash: str, asr_name: str, text: str) -> None:
        """Store a transcript; safe against concurrent writers and interrupted writes."""
        _write_entry(self._path(audio_hash, asr_name),
                     {"audio_hash": audio_hash, "asr": asr_name, "text": text})

    def __len__(self) -> int:
        """Number of stored entries."""
        return sum(1 for _ in self.folder.glob("??/*.json"))


class VectorCache(TranscriptCache):
    """Metric vectors (speaker embeddings, MOS sub-scores) under ``folder``, one JSON file
    per (audio hash, metric model id), in the same layout and with the same atomic writes
    as transcripts."""

    def get_vector(self, audio_hash: str, model_id: str) -> list[float] | None:
        """The cached vector, or None when this pair has not been computed."""
        try:
            entry = json.loads(self._path(audio_hash, model_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        if entry.get("audio_hash") != audio_hash or entry.get("model") != model_id:
            return None
        vector: list[float] = entry["vector"]
        return vector

    def put_vector(self, audio_hash: str, model_id: str, vector: list[float]) -> None:
        _write_entry(self._path(audio_hash, model_id),
                     {"audio_hash": audio_hash, "model": model_id, "vector": vector})


def _write_entry(path: Path, entry: dict[str, object]) -> None:
    """Write one JSON entry to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entry, f, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
