"""DNSMOS P.835 (signal, background, overall quality) from the ONNX models in the speechmos
package, run with onnxruntime: offline, no download.

DNSMOS rates 9.01 s windows (hop 1 s) and averages them. Like Microsoft's reference script,
speechmos fills a shorter clip by repeating it until it spans one window; we accept that
for clips of at least ``min_seconds`` (2 s: at most about four and a half repeats) and
record anything shorter as "too short" rather than rate a loop of a fragment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.scoring.cache import sha256_file
from bench.scoring.metric import SAMPLE_RATE
from bench.scoring.models import ModelMissingError

__all__ = ["DNSMOS"]


class DNSMOS:
    """The DNSMOS P.835 metric (non-personalised), columns ``dnsmos_sig``, ``dnsmos_bak``,
    ``dnsmos_ovrl`` (and the P.808 figure the same models give, ``dnsmos_p808``)."""

    name = "dnsmos"
    min_seconds = 2.0
    references: tuple[str, ...] = ()

    def __init__(self) -> None:
        try:
            import speechmos.dnsmos as sm
        except ImportError as err:
            raise ModelMissingError(
                f"DNSMOS needs the speechmos and onnxruntime packages ({err}); install the "
                "project's lock with `uv sync --locked`") from err
        folder = Path(sm.__file__).parent / "dnsmos_models"
        primary, p808 = folder / "sig_bak_ovr.onnx", folder / "model_v8.onnx"
        for path in (primary, p808):
            if not path.is_file():
                raise ModelMissingError(f"DNSMOS model {path.name} is not in {folder}; reinstall "
                                        "speechmos (`uv sync --locked --reinstall-package speechmos`)")
        self._model = sm.DNSMOS(str(primary), str(p808))
        self.model_id = f"dnsmos-p835:{sha256_file(primary)[:12]}"

    def compute(self, audios: Sequence[np.ndarray]) -> list[list[float]]:
        out = []
        for audio in audios:
            # speechmos refuses samples outside [-1, 1]; a clipped sample is what a player plays.
            wav = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
            scores = self._model(wav, SAMPLE_RATE, False)
            out.append([float(scores[k]) for k in ("sig_mos", "bak_mos", "ovrl_mos", "p808_mos")])
        return out

    def columns(self, vector: list[float], references: Mapping[str, list[float] | None]
                ) -> dict[str, Any]:
        sig, bak, ovrl, p808 = vector
        return {"dnsmos_model": self.model_id, "dnsmos_sig": sig, "dnsmos_bak": bak,
                "dnsmos_ovrl": ovrl, "dnsmos_p808": p808}
