"""The one small interface every audio quality metric implements (SIM, UTMOS, DNSMOS, ...).

A metric turns each clip into a vector (a speaker embedding, or a metric's sub-scores),
cached by the clip's content hash and the metric's ``model_id``; then ``columns`` turns the
vector of a generation, plus the vectors of its references when the metric uses them,
into the record's score columns. A next metric is one module with one class like this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["SAMPLE_RATE", "Metric", "cosine"]

SAMPLE_RATE = 16_000  # every metric here takes mono float32 audio at 16 kHz


@runtime_checkable
class Metric(Protocol):
    """A quality metric as the scorer sees it.

    Attributes:
        name: the metric's column prefix ("sim", "utmos", "dnsmos"); skips are recorded
            as ``<name>_skipped``.
        model_id: identity of the model weights and settings; part of the cache key and
            recorded as ``<name>_model``, so two models never share cached values.
        min_seconds: shorter clips are recorded "too short" instead of scored.
        references: which references the metric compares against ("speaker", "gt");
            empty for metrics of the clip alone.
    """

    name: str
    model_id: str
    min_seconds: float
    references: tuple[str, ...]

    def compute(self, audios: Sequence[np.ndarray]) -> list[list[float]]:
        """One vector per clip (mono float32 at 16 kHz, shape [samples]), in order."""
        ...

    def columns(self, vector: list[float], references: Mapping[str, list[float] | None]
                ) -> dict[str, Any]:
        """Score columns of a generation from its vector and its references' vectors
        (None where the prompt has no such reference)."""
        ...


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0.0 when either is all zeros)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    denom = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / denom) if denom > 0 else 0.0
