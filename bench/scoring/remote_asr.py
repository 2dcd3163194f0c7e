"""An ASR whose model runs elsewhere (the Modal ``Transcriber`` on a GPU), behind the
same :class:`~bench.scoring.asr.ASR` interface the scorer uses locally.

The CI gate's runner has no GPU: loading Whisper large-v3 there costs a 3 GB download
and CPU-hours for 276 clips. With this adapter the runner still scores (same cache,
same score lines, same decision code) but each batch of 16 kHz waveforms is sent to
the remote model as raw float32 bytes, a third of the 44.1 kHz WAV's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class RemoteTranscriber(Protocol):
    """The remote side: ``Transcriber(asr=...)`` of the Modal app, or a stand-in."""

    def describe(self) -> tuple[str, bool]: ...

    def transcribe(self, audios: list[bytes]) -> list[str]: ...


def encode_audio(audio: np.ndarray) -> bytes:
    return np.ascontiguousarray(audio, dtype=np.float32).tobytes()


def decode_audio(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float32).copy()


class RemoteASR:
    """:class:`~bench.scoring.asr.ASR` over a :class:`RemoteTranscriber`; the model's
    name (the cache identity) and ``is_random`` are asked of the remote side once."""

    def __init__(self, remote: RemoteTranscriber, call: Any = None) -> None:
        self.remote = remote
        # How a remote method is invoked: ``method.remote(...)`` on Modal, a direct call
        # on a stand-in.
        self._call = call if call is not None else (lambda method, *args: method.remote(*args))
        self.name, self.is_random = self._call(remote.describe)

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        texts = self._call(self.remote.transcribe, [encode_audio(a) for a in audios])
        if len(texts) != len(audios):
            raise RuntimeError(f"remote ASR returned {len(texts)} transcripts for "
                               f"{len(audios)} clips")
        return list(texts)
