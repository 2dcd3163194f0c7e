"""Speaker similarity (SIM): cosine of speaker embeddings of a generation and its references.

Two encoders behind one metric:

* ``wavlm-ecapa``: Seed-TTS-eval's model (`bench.scoring.ecapa`), from
  ``wavlm_large_finetune.pth`` in the models folder; the figure published tables report.
* ``resemblyzer``: Resemblyzer's 256-d LSTM d-vector encoder, whose weights ship inside
  its PyPI package, so it runs offline anywhere (CI, quick local runs). Its figures are
  not comparable with Seed-TTS-eval's: the record names the encoder (``sim_model``).

SIM is computed against the prompt's speaker reference (``sim``) and, where the prompt set
provides one, the ground-truth recording of the same text (``sim_gt``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from bench.scoring.cache import sha256_file
from bench.scoring.ecapa import CLASSIFIER_KEY, EcapaConfig, WavLMEcapa
from bench.scoring.metric import SAMPLE_RATE, cosine
from bench.scoring.models import ModelMissingError, load_state, require

__all__ = ["SPEAKER_ENCODERS", "ResemblyzerEncoder", "SpeakerEncoder", "SpeakerSimilarity",
           "WavLMEcapaEncoder", "load_speaker_encoder"]

SPEAKER_ENCODERS = ("resemblyzer", "wavlm-ecapa")


class SpeakerEncoder(Protocol):
    name: str  # identity of the weights (cache key, ``sim_model``)
    min_seconds: float

    def embed(self, audios: Sequence[np.ndarray]) -> list[list[float]]:
        """One embedding per clip (mono float32 at 16 kHz); [] for a clip with no voiced audio."""
        ...


class SpeakerSimilarity:
    """The SIM metric over any `SpeakerEncoder`."""

    name = "sim"
    references = ("speaker", "gt")

    def __init__(self, encoder: SpeakerEncoder) -> None:
        self.encoder = encoder
        self.model_id = encoder.name
        self.min_seconds = encoder.min_seconds

    def compute(self, audios: Sequence[np.ndarray]) -> list[list[float]]:
        return self.encoder.embed(audios)

    def columns(self, vector: list[float], references: Mapping[str, list[float] | None]
                ) -> dict[str, Any]:
        out: dict[str, Any] = {"sim_model": self.model_id, "sim": None, "sim_gt": None}
        if not vector:
            out["sim_skipped"] = "no voiced audio"
            return out
        speaker, gt = references.get("speaker"), references.get("gt")
        if speaker is None:
            out["sim_skipped"] = "no speaker reference"
        elif not speaker:
            out["sim_skipped"] = "speaker reference has no voiced audio"
        else:
            out["sim"] = cosine(vector, speaker)
        if gt:
            out["sim_gt"] = cosine(vector, gt)
        return out


class _DVectorNet(nn.Module):
    """Resemblyzer's network: 3-layer LSTM over 40-band mels, last hidden state -> linear ->
    ReLU -> L2 norm (parameter names as in its ``pretrained.pt``)."""

    def __init__(self, n_mels: int = 40, hidden: int = 256, layers: int = 3, dim: int = 256) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_mels, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, dim)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        raw = torch.relu(self.linear(hidden[-1]))
        return raw / raw.norm(dim=1, keepdim=True).clamp(min=1e-12)


class ResemblyzerEncoder:
    """Resemblyzer's d-vector of an utterance: the clip is volume-normalised and trimmed
    of silence (its webrtcvad preprocessing), cut into 1.6 s partials at 1.3 per second
    (the last kept when it covers 75%), and the partial embeddings averaged and
    re-normalised, as its ``embed_utterance`` does. The weights are read with
    ``weights_only=True`` and checked key by key (its own loader is lenient)."""

    min_seconds = 1.0
    _RATE = 1.3
    _MIN_COVERAGE = 0.75

    def __init__(self, device: str | torch.device = "cpu") -> None:
        try:
            import resemblyzer
            from resemblyzer import audio as rz_audio
            from resemblyzer import hparams
        except ImportError as err:
            raise ModelMissingError(
                f"the Resemblyzer speaker encoder needs the resemblyzer package ({err}); "
                "install the project's lock with `uv sync --locked`") from err
        self._audio = rz_audio
        self._partial_frames = hparams.partials_n_frames
        self._hop = int(SAMPLE_RATE * hparams.mel_window_step / 1000)
        weights = Path(resemblyzer.__file__).parent / "pretrained.pt"
        state = torch.load(weights, map_location="cpu", weights_only=True)["model_state"]
        self.net = _DVectorNet(hparams.mel_n_channels, hparams.model_hidden_size,
                               hparams.model_num_layers, hparams.model_embedding_size)
        load_state(self.net, state, ignore=frozenset({"similarity_weight", "similarity_bias"}),
                   source=str(weights))
        self.device = torch.device(device)
        self.net.to(self.device).eval()
        self.name = f"resemblyzer:{sha256_file(weights)[:12]}"

    def _slices(self, n_samples: int) -> list[tuple[int, int]]:
        """Mel-frame ranges of the partial utterances."""
        n_frames = int(np.ceil((n_samples + 1) / self._hop))
        step = max(1, round(SAMPLE_RATE / self._RATE / self._hop))
        starts = list(range(0, max(1, n_frames - self._partial_frames + step + 1), step))
        ranges = [(s, s + self._partial_frames) for s in starts]
        last_start = ranges[-1][0] * self._hop
        coverage = (n_samples - last_start) / (self._partial_frames * self._hop)
        if coverage < self._MIN_COVERAGE and len(ranges) > 1:
            ranges.pop()
        return ranges

    @torch.inference_mode()
    def embed(self, audios: Sequence[np.ndarray]) -> list[list[float]]:
        out: list[list[float]] = []
        for audio in audios:
            wav = self._audio.preprocess_wav(np.asarray(audio, dtype=np.float32), SAMPLE_RATE)
            if wav.size < self._hop * 2:  # nothing voiced survived the VAD
                out.append([])
                continue
            ranges = self._slices(wav.size)
            needed = ranges[-1][1] * self._hop
            if needed > wav.size:
                wav = np.pad(wav, (0, needed - wav.size))
            mel = self._audio.wav_to_mel_spectrogram(wav)
            mels = torch.from_numpy(np.stack([mel[a:b] for a, b in ranges])).to(self.device)
            partial = self.net(mels).mean(dim=0)
            out.append((partial / partial.norm()).cpu().tolist())
        return out


class WavLMEcapaEncoder:
    """Seed-TTS-eval's speaker encoder from ``wavlm_large_finetune.pth`` in the models folder.

    The file is read with ``weights_only=True`` (no pickled code runs) and must match the
    architecture key for key and shape for shape (the training classifier aside). Clips
    are embedded one at a time, as Seed-TTS-eval does (no padding masks needed).
    """

    min_seconds = 0.5

    def __init__(self, root: Path, device: str | torch.device = "cpu",
                 config: EcapaConfig | None = None) -> None:
        path = require("wavlm-ecapa", root)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = checkpoint.get("model") if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f"{path} holds no 'model' state dict; fetch it again")
        self.model = WavLMEcapa(config)
        load_state(self.model, state, ignore=frozenset({CLASSIFIER_KEY}), source=str(path))
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.name = f"wavlm-ecapa:{sha256_file(path)[:12]}"

    @torch.inference_mode()
    def embed(self, audios: Sequence[np.ndarray]) -> list[list[float]]:
        return [self.model(torch.from_numpy(np.asarray(a, dtype=np.float32))[None].to(self.device))[0]
                .float().cpu().tolist() for a in audios]


def load_speaker_encoder(name: str, root: Path, device: str | torch.device = "cpu") -> SpeakerEncoder:
    """The encoder called ``name`` (one of SPEAKER_ENCODERS)."""
    if name == "resemblyzer":
        return ResemblyzerEncoder(device)
    if name == "wavlm-ecapa":
        return WavLMEcapaEncoder(root, device)
    raise ValueError(f"unknown speaker encoder {name!r}; choose one of {', '.join(SPEAKER_ENCODERS)}")
