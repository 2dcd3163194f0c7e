"""Seed-TTS-eval's speaker model: ECAPA-TDNN over WavLM-large hidden states.

Our implementation of UniSpeech's ``ECAPA_TDNN_SMALL(feat_dim=1024, feat_type="wavlm_large")``
(downstreams/speaker_verification), the model Seed-TTS-eval computes SIM with from the
published ``wavlm_large_finetune.pth``. Architecture facts, as published:

* the 25 WavLM hidden states (input of each of the 24 layers plus the output) are mixed
  with softmax weights (``feature_weight``), a small constant is added and the result is
  instance-normalised over time (no affine parameters, so no keys);
* ``layer1``: Conv1d(k=5) -> ReLU -> BatchNorm; ``layer2..4``: SE-Res2 blocks (1x1 conv,
  a Res2Net conv of scale 8 with dilation 2/3/4, 1x1 conv, squeeze-excitation with a
  128-d bottleneck, residual);
* the three block outputs are concatenated, a 1x1 conv to 1536 channels with ReLU,
  attentive statistics pooling (mean and std), BatchNorm, a linear layer to 256 dims.

The checkpoint's ``model`` dict holds ``feature_extract.model.<WavLM keys>``, the head's
keys and ``loss_calculator.projection.weight`` (the training classifier, not needed for
embeddings). `bench.scoring.models.load_state` checks every other key and shape exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.scoring.ssl_encoder import WAVLM_LARGE, SSLConfig, SSLEncoder

__all__ = ["CLASSIFIER_KEY", "EcapaConfig", "WavLMEcapa"]

CLASSIFIER_KEY = "loss_calculator.projection.weight"


@dataclass(frozen=True)
class EcapaConfig:
    ssl: SSLConfig = field(default_factory=lambda: WAVLM_LARGE)
    channels: int = 512
    pooled_channels: int = 1536
    embed_dim: int = 256
    scale: int = 8
    se_dim: int = 128
    attention_dim: int = 128


class ConvReluBn(nn.Module):
    def __init__(self, n_in: int, n_out: int, kernel: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv1d(n_in, n_out, kernel, padding=padding)
        self.bn = nn.BatchNorm1d(n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(F.relu(self.conv(x)))


class Res2Conv(nn.Module):
    """Res2Net conv: the channels split into ``scale`` parts; each part but the last goes
    through its own conv after adding the previous part's output; the last passes as is."""

    def __init__(self, channels: int, kernel: int, dilation: int, scale: int) -> None:
        super().__init__()
        self.width = channels // scale
        n = scale - 1
        self.convs = nn.ModuleList(
            nn.Conv1d(self.width, self.width, kernel, padding=dilation, dilation=dilation)
            for _ in range(n))
        self.bns = nn.ModuleList(nn.BatchNorm1d(self.width) for _ in range(n))

    def forward(self, x: Tensor) -> Tensor:
        parts = torch.split(x, self.width, dim=1)
        outs: list[Tensor] = []
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            y = parts[i] if i == 0 else outs[-1] + parts[i]
            outs.append(bn(F.relu(conv(y))))
        outs.append(parts[len(self.convs)])
        return torch.cat(outs, dim=1)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(channels, bottleneck)
        self.linear2 = nn.Linear(bottleneck, channels)

    def forward(self, x: Tensor) -> Tensor:
        weights = torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(dim=2)))))
        return x * weights.unsqueeze(2)


class SERes2Block(nn.Module):
    # Attribute names are the checkpoint's (Conv1dReluBn1, Res2Conv1dReluBn, ...).
    def __init__(self, channels: int, dilation: int, cfg: EcapaConfig) -> None:
        super().__init__()
        self.Conv1dReluBn1 = ConvReluBn(channels, channels)
        self.Res2Conv1dReluBn = Res2Conv(channels, 3, dilation, cfg.scale)
        self.Conv1dReluBn2 = ConvReluBn(channels, channels)
        self.SE_Connect = SqueezeExcite(channels, cfg.se_dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.Conv1dReluBn2(self.Res2Conv1dReluBn(self.Conv1dReluBn1(x)))
        return x + self.SE_Connect(y)


class AttentiveStatsPool(nn.Module):
    def __init__(self, channels: int, attention_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Conv1d(channels, attention_dim, kernel_size=1)
        self.linear2 = nn.Conv1d(attention_dim, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        alpha = torch.softmax(self.linear2(torch.tanh(self.linear1(x))), dim=2)
        mean = (alpha * x).sum(dim=2)
        var = (alpha * x * x).sum(dim=2) - mean * mean
        return torch.cat([mean, var.clamp(min=1e-9).sqrt()], dim=1)


class _FeatureExtract(nn.Module):
    """Holds the WavLM under ``.model``, as s3prl's upstream wrapper does (key prefix)."""

    def __init__(self, cfg: SSLConfig) -> None:
        super().__init__()
        self.model = SSLEncoder(cfg)


class WavLMEcapa(nn.Module):
    """Waveform [1, samples] at 16 kHz -> speaker embedding [1, embed_dim] (not normalised;
    SIM is a cosine, so the scale does not matter)."""

    def __init__(self, cfg: EcapaConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or EcapaConfig()
        self.cfg = cfg
        self.feature_extract = _FeatureExtract(cfg.ssl)
        self.feature_weight = nn.Parameter(torch.zeros(cfg.ssl.layers + 1))
        self.instance_norm = nn.InstanceNorm1d(cfg.ssl.embed_dim)
        c = cfg.channels
        self.layer1 = ConvReluBn(cfg.ssl.embed_dim, c, kernel=5, padding=2)
        self.layer2 = SERes2Block(c, 2, cfg)
        self.layer3 = SERes2Block(c, 3, cfg)
        self.layer4 = SERes2Block(c, 4, cfg)
        self.conv = nn.Conv1d(3 * c, cfg.pooled_channels, kernel_size=1)
        self.pooling = AttentiveStatsPool(cfg.pooled_channels, cfg.attention_dim)
        self.bn = nn.BatchNorm1d(2 * cfg.pooled_channels)
        self.linear = nn.Linear(2 * cfg.pooled_channels, cfg.embed_dim)

    def forward(self, wav: Tensor) -> Tensor:
        states = torch.stack(self.feature_extract.model(wav))  # [L+1, B, T, C]
        weights = torch.softmax(self.feature_weight, dim=0).view(-1, 1, 1, 1)
        x = self.instance_norm((weights * states).sum(dim=0).transpose(1, 2) + 1e-6)
        out2 = self.layer2(self.layer1(x))
        out3 = self.layer3(out2)
        out4 = self.layer4(out3)
        pooled = self.pooling(F.relu(self.conv(torch.cat([out2, out3, out4], dim=1))))
        embedding: Tensor = self.linear(self.bn(pooled))
        return embedding
