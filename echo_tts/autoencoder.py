"""Fish S1-DAC, the audio autoencoder behind Echo-TTS, and its PCA latent transform.

Encoding: 44.1 kHz audio -> causal convolutional encoder (one frame per 512 samples) ->
a 4x strided downsampler and a windowed causal transformer (one frame per 2048 samples)
-> a residual vector quantizer (one semantic codebook, then nine residual ones). Echo-TTS
does not model the discrete codes: it models ``z_q``, the sum of the chosen codebook
vectors (1024 dims), projected by a PCA to 80 dims and scaled. Decoding inverts the PCA
and runs a transformer, a 4x upsampler and the convolutional decoder.

Parameter names follow the official checkpoint (``jordand/fish-s1-dac-min``): convolutions
keep torch's weight-norm parametrisation (``...parametrizations.weight.original0/1``), so
its state dict loads with strict key matching. Only the inference path exists: no losses,
dropout or quantizer dropout.

Shapes: B batch, T audio samples, C channels, F encoder frames (512 samples each),
L latents (2048 samples each, F = 4 L), D codec width (1024), P PCA dims (80).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from echo_tts.codec_layers import Decoder, Encoder
from echo_tts.codec_quantizer import Quantizer
from echo_tts.config import CodecConfig
from echo_tts.weights import (
    DEFAULT_MODEL_REPO,
    WeightsError,
    check_state_dict,
    config_from_metadata,
    randomize_,
    read_safetensors,
    resolve_source,
)

DEFAULT_CODEC_REPO = "jordand/fish-s1-dac-min"
DEFAULT_PCA_REPO = DEFAULT_MODEL_REPO  # the PCA state ships with the DiT checkpoint
CODEC_FILENAME = "pytorch_model.safetensors"
PCA_FILENAME = "pca_state.safetensors"
CONFIG_METADATA_KEY = "echo_tts_codec_config"
# Non-learned buffers of the original implementation (RoPE table, causal mask). A
# checkpoint may carry them; they are recomputed here, so such keys are skipped on load.
_BUFFER_SUFFIXES = (".freqs_cis", ".causal_mask")


# --------------------------------------------------------------------------- the S1-DAC codec


class S1DAC(nn.Module):
    """The codec network; its state dict matches the official checkpoint's keys."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = Quantizer(config)
        self.decoder = Decoder(config)

    def encode_codes(self, audio: Tensor) -> Tensor:
        """Codes [B, 1 + n_codebooks, ceil(T / 2048)] (int64) of audio [B, 1, T].

        The audio is zero-padded on the right to whole latents first.
        """
        audio = F.pad(audio, (0, -audio.shape[-1] % self.config.samples_per_latent))
        return self.quantizer.encode(self.encoder(audio))

    def encode_zq(self, audio: Tensor) -> Tensor:
        """z_q [B, D, ceil(T / 2048)] of audio [B, 1, T]: the summed codebook vectors."""
        return self.quantizer.embed(self.encode_codes(audio))

    def decode_zq(self, z_q: Tensor) -> Tensor:
        """Audio [B, 1, 2048 L] in [-1, 1] from z_q [B, D, L]."""
        return self.decoder(self.quantizer.decode(z_q))


# --------------------------------------------------------------------------- PCA + codec


class PCA(nn.Module):
    """The fixed linear map between z_q (D dims) and the DiT's latents (P dims).

    Buffers: ``components`` [P, D] and ``mean`` [D]; ``latent_scale`` multiplies the
    projected coordinates. Computed in float32 whatever the codec's dtype.
    """

    components: Tensor
    mean: Tensor

    def __init__(self, components: Tensor, mean: Tensor, latent_scale: float) -> None:
        super().__init__()
        self.register_buffer("components", components.float())
        self.register_buffer("mean", mean.float())
        self.latent_scale = float(latent_scale)

    def encode(self, z_q: Tensor) -> Tensor:
        """Latents [B, L, P] of z_q [B, D, L]."""
        return ((z_q.float().transpose(1, 2) - self.mean) @ self.components.T) * self.latent_scale

    def decode(self, latents: Tensor) -> Tensor:
        """z_q [B, D, L] of latents [B, L, P] (the projection onto the PCA subspace)."""
        return ((latents.float() / self.latent_scale) @ self.components + self.mean).transpose(1, 2)


class Codec(nn.Module):
    """Audio at 44.1 kHz <-> Echo-TTS latents (80 dims, one per 2048 samples)."""

    def __init__(self, dac: S1DAC, pca: PCA) -> None:
        super().__init__()
        self.dac = dac
        self.pca = pca
        self.config = dac.config
        self.sample_rate = dac.config.sample_rate
        self.samples_per_latent = dac.config.samples_per_latent

    @property
    def device(self) -> torch.device:
        return next(self.dac.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.dac.parameters()).dtype

    @torch.inference_mode()
    def encode(self, audio: Tensor) -> Tensor:
        """Latents [B, ceil(T / 2048), 80] (float32) of audio [B, 1, T] at 44.1 kHz."""
        if audio.ndim != 3 or audio.shape[1] != 1:
            raise ValueError(f"audio must be [batch, 1, samples], got {tuple(audio.shape)}")
        return self.pca.encode(self.dac.encode_zq(audio.to(self.device, self.dtype)))

    @torch.inference_mode()
    def decode(self, latents: Tensor) -> Tensor:
        """Audio [B, 1, 2048 L] (float32, in [-1, 1]) of latents [B, L, 80]."""
        if latents.ndim != 3 or latents.shape[-1] != self.config.pca_dim:
            raise ValueError(f"latents must be [batch, length, {self.config.pca_dim}], "
                             f"got {tuple(latents.shape)}")
        z_q = self.pca.decode(latents.to(self.device))
        return self.dac.decode_zq(z_q.to(self.dtype)).float()


# --------------------------------------------------------------------------- loading


def save_codec(codec: Codec, folder: str | os.PathLike[str]) -> Path:
    """Write ``pytorch_model.safetensors`` (config in its metadata) and
    ``pca_state.safetensors`` to ``folder``; returns the folder."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in codec.dac.state_dict().items()}
    save_file(state, str(target / CODEC_FILENAME),
              metadata={CONFIG_METADATA_KEY: json.dumps(codec.config.to_dict())})
    pca = codec.pca
    save_file({"pca_components": pca.components.detach().contiguous().cpu(),
               "pca_mean": pca.mean.detach().contiguous().cpu(),
               "latent_scale": torch.tensor(pca.latent_scale, dtype=torch.float32)},
              str(target / PCA_FILENAME))
    return target


def load_codec(
    source: str | os.PathLike[str] = DEFAULT_CODEC_REPO,
    pca_source: str | os.PathLike[str] | None = None,
    *,
    config: CodecConfig | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> Codec:
    """Load the codec from ``source`` and its PCA from ``pca_source``, in eval mode.

    Sources are as in :mod:`echo_tts.weights`: a folder, a file, a Hugging Face repo id
    or ``random:<preset>``. ``pca_source`` defaults to ``random:<preset>`` for a random
    codec and to ``jordand/echo-tts-base`` otherwise. ``config`` defaults to the
    checkpoint's own (metadata) or the official ``s1-dac``. ``dtype`` converts the codec
    weights (None keeps the file's dtype, float32 for random weights); the PCA stays
    float32.
    """
    resolved = resolve_source(source, CODEC_FILENAME)
    if resolved.is_random:
        config = config or _preset(str(resolved.random_preset))
        with torch.device("meta"):
            dac = S1DAC(config)
        # Filled on CPU so that a preset gives the same weights on every device.
        dac.to_empty(device="cpu")
        randomize_(dac)
        dac.to(device=device, dtype=dtype or torch.float32)
    else:
        assert resolved.path is not None
        state, metadata = read_safetensors(resolved.path)
        if config is None:
            config = config_from_metadata(metadata, CONFIG_METADATA_KEY, resolved.path,
                                          CodecConfig.from_dict,
                                          lambda: CodecConfig.preset("s1-dac"), "an S1-DAC codec")
        state = {k: v for k, v in state.items() if not k.endswith(_BUFFER_SUFFIXES)}
        with torch.device("meta"):
            dac = S1DAC(config)
        check_state_dict({k: v.shape for k, v in dac.state_dict().items()}, state, resolved.path)
        dac.load_state_dict({k: v.to(device=device, dtype=dtype or v.dtype)
                             for k, v in state.items()}, strict=True, assign=True)
    if pca_source is None:
        pca_source = f"random:{resolved.random_preset}" if resolved.is_random else DEFAULT_PCA_REPO
    pca = load_pca(pca_source, config).to(device)
    return Codec(dac.eval().requires_grad_(False), pca)


def load_pca(source: str | os.PathLike[str], config: CodecConfig) -> PCA:
    """The PCA transform from ``source`` (``pca_state.safetensors``) sized for ``config``.

    ``random:<preset>`` gives orthonormal random components, a near-zero mean and scale 1.
    """
    expected = {"pca_components": torch.Size([config.pca_dim, config.latent_dim]),
                "pca_mean": torch.Size([config.latent_dim])}
    resolved = resolve_source(source, PCA_FILENAME)
    if resolved.is_random:
        preset = _preset(str(resolved.random_preset))
        if (preset.pca_dim, preset.latent_dim) != (config.pca_dim, config.latent_dim):
            raise WeightsError(f"PCA source {source!r} is {preset.pca_dim}x{preset.latent_dim} "
                               f"but the codec needs {config.pca_dim}x{config.latent_dim}; "
                               "use the codec's own preset")
        gen = torch.Generator().manual_seed(1)
        basis, _ = torch.linalg.qr(torch.randn(config.latent_dim, config.pca_dim, generator=gen))
        return PCA(basis.T, 0.01 * torch.randn(config.latent_dim, generator=gen), 1.0)
    assert resolved.path is not None
    tensors, _ = read_safetensors(resolved.path)
    scale = tensors.get("latent_scale")
    if scale is not None and scale.numel() == 1:
        # Stored as a scalar or a one-element vector; either is fine.
        expected["latent_scale"] = scale.shape
    else:
        expected["latent_scale"] = torch.Size([])
    check_state_dict(expected, tensors, resolved.path)
    return PCA(tensors["pca_components"], tensors["pca_mean"], tensors["latent_scale"].item())


def _preset(name: str) -> CodecConfig:
    try:
        return CodecConfig.preset(name)
    except ValueError as err:
        raise WeightsError(str(err)) from err


# --------------------------------------------------------------------------- cropping


def find_flattening_point(latents: Tensor, window: int = 20, std_threshold: float = 0.05,
                          mean_threshold: float = 0.1) -> int:
    """First latent index where generated speech has flattened into padding.

    That is the first i where the ``window`` latents from i (zero-padded past the end),
    taken as one set of values, have standard deviation < ``std_threshold`` and
    |mean| < ``mean_threshold``; ``len(latents)`` if there is none. latents: [L, P].
    All windows are scored at once, in float64.
    """
    length = latents.shape[0]
    if length == 0:
        return 0
    padded = torch.cat([latents.detach().double(),
                        latents.new_zeros((window, *latents.shape[1:]), dtype=torch.float64)])
    windows = padded.unfold(0, window, 1)[:length].reshape(length, -1)
    std, mean = torch.std_mean(windows, dim=1)
    flat = ((std < std_threshold) & (mean.abs() < mean_threshold)).nonzero()
    return int(flat[0, 0]) if len(flat) else length


def crop_audio_to_flattening_point(audio: Tensor, latents: Tensor,
                                   samples_per_latent: int = 2048) -> Tensor:
    """audio [..., T] cut after the latents [L, P] flatten (see find_flattening_point)."""
    return audio[..., : find_flattening_point(latents) * samples_per_latent]
