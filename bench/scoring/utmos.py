"""UTMOS22 strong: the naturalness MOS predictor F5-TTS's evaluation reports as UTMOS.

Our implementation of the "UTMOS strong learner" inference model, from the published
architecture (Saeki et al. 2022; sarulab-speech/UTMOS22; the inference-only state dict
of tarepan/SpeechMOS): wav2vec 2.0 base features [B, T, 768], concatenated per frame with
a 128-d data-domain embedding and a 128-d judge embedding (the fixed "main domain" and
"mean listener" rows the checkpoint stores), a BLSTM of 512 units per direction, a
projection 1024 -> 2048 -> ReLU -> 1, averaged over frames: MOS = 3 + 2 * mean.

Weights: ``utmos22_strong_step7459_v1.pt`` in the models folder (`echo-bench models fetch
utmos22-strong`), read with ``weights_only=True`` and checked key for key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bench.scoring.cache import sha256_file
from bench.scoring.models import load_state, require
from bench.scoring.ssl_encoder import WAV2VEC2_BASE, SSLConfig, SSLEncoder

__all__ = ["UTMOS", "UTMOSConfig", "UTMOSStrong"]


@dataclass(frozen=True)
class UTMOSConfig:
    ssl: SSLConfig = field(default_factory=lambda: WAV2VEC2_BASE)
    domain_dim: int = 128
    judge_dim: int = 128
    lstm_dim: int = 512
    proj_dim: int = 2048


class UTMOSStrong(nn.Module):
    """Waveform [B, samples] at 16 kHz -> predicted MOS [B] (same-length items)."""

    def __init__(self, cfg: UTMOSConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or UTMOSConfig()
        self.wav2vec2 = SSLEncoder(cfg.ssl)
        self.domain_emb = nn.Parameter(torch.zeros(1, cfg.domain_dim))
        self.judge_emb = nn.Parameter(torch.zeros(1, cfg.judge_dim))
        width = cfg.ssl.embed_dim + cfg.domain_dim + cfg.judge_dim
        self.blstm = nn.LSTM(width, cfg.lstm_dim, batch_first=True, bidirectional=True)
        self.projection = nn.Sequential(nn.Linear(2 * cfg.lstm_dim, cfg.proj_dim), nn.ReLU(),
                                        nn.Linear(cfg.proj_dim, 1))

    def forward(self, wav: Tensor) -> Tensor:
        frames = self.wav2vec2(wav)[-1]  # [B, T, C]: the encoder's output
        b, t, _ = frames.shape
        x = torch.cat([frames, self.domain_emb.expand(b, t, -1), self.judge_emb.expand(b, t, -1)],
                      dim=2)
        per_frame = self.projection(self.blstm(x)[0])  # [B, T, 1]
        mos: Tensor = per_frame.mean(dim=(1, 2)) * 2 + 3
        return mos


class UTMOS:
    """The UTMOS metric: column ``utmos``. Clips are scored one at a time (no padding)."""

    name = "utmos"
    min_seconds = 0.5
    references: tuple[str, ...] = ()

    def __init__(self, root: Path, device: str | torch.device = "cpu",
                 config: UTMOSConfig | None = None) -> None:
        path = require("utmos22-strong", root)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{path} is not a state dict; fetch it again")
        self.model = UTMOSStrong(config)
        load_state(self.model, state, source=str(path))
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.model_id = f"utmos22-strong:{sha256_file(path)[:12]}"

    @torch.inference_mode()
    def compute(self, audios: Sequence[np.ndarray]) -> list[list[float]]:
        return [[float(self.model(torch.from_numpy(np.asarray(a, dtype=np.float32))[None]
                                  .to(self.device))[0])] for a in audios]

    def columns(self, vector: list[float], references: Mapping[str, list[float] | None]
                ) -> dict[str, Any]:
        return {"utmos_model": self.model_id, "utmos": vector[0]}
