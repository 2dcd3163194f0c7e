"""Random weights at the official S1-DAC size, written the way the official files are.

Shared by the codec and pipeline parity tests; ``LOAD_REFERENCE_CODEC`` is the snippet a
reference subprocess runs to load the same files into the reference ``DAC``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from echo_tts.autoencoder import CODEC_FILENAME, PCA_FILENAME, S1DAC
from echo_tts.config import CodecConfig
from echo_tts.weights import randomize_

LOAD_REFERENCE_CODEC = """
import torch
from safetensors.torch import load_file, save_file
from echo_tts.autoencoder import WindowLimitedTransformer, build_ae, precompute_freqs_cis
from echo_tts.inference import PCAState


def load_reference_codec(folder):
    with torch.device("meta"):
        ae = build_ae()
    state = load_file(str(folder / "pytorch_model.safetensors"))
    # The rotary table and causal mask are buffers, not weights: give the reference its own.
    for name, module in ae.named_modules():
        if isinstance(module, WindowLimitedTransformer):
            size = module.config.block_size
            state[f"{name}.freqs_cis"] = precompute_freqs_cis(
                size, module.config.head_dim, module.config.rope_base)
            state[f"{name}.causal_mask"] = torch.tril(torch.ones(size, size, dtype=torch.bool))
    ae.load_state_dict(state, strict=True, assign=True)
    pca = load_file(str(folder / "pca_state.safetensors"))
    return ae.eval(), PCAState(pca["pca_components"], pca["pca_mean"], float(pca["latent_scale"]))
"""


def write_random_codec(folder: Path, seed: int = 1234) -> Path:
    """Write pytorch_model.safetensors (no config metadata, like the official file, so the
    loader falls back to the official preset) and pca_state.safetensors into ``folder``."""
    config = CodecConfig.preset("s1-dac")
    with torch.device("meta"):
        dac = S1DAC(config)
    dac.to_empty(device="cpu")
    randomize_(dac, seed=seed)
    # Random weights drive the decoder's last conv to std ~26, where tanh saturates at
    # +-1 and would hide any difference; scale its gain so the output stays in range.
    with torch.no_grad():
        dac.get_parameter("decoder.model.6.conv.parametrizations.weight.original0").mul_(0.03)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in dac.state_dict().items()}, str(folder / CODEC_FILENAME))
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(config.latent_dim, config.pca_dim, generator=gen))
    save_file({"pca_components": basis.T.contiguous(),
               "pca_mean": 0.1 * torch.randn(config.latent_dim, generator=gen),
               "latent_scale": torch.tensor(0.5)}, str(folder / PCA_FILENAME))
    return folder


def speech_like(seconds: float, seed: int = 0) -> torch.Tensor:
    """[1, 1, T] at 44.1 kHz: a few harmonics under a slow envelope, plus a little noise."""
    n = int(seconds * 44100)
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 44100
    tone = sum(torch.sin(2 * torch.pi * f * t) / (i + 1)
               for i, f in enumerate((140.0, 280.0, 420.0, 910.0)))
    audio = 0.3 * tone * torch.sin(torch.pi * 3 * t).abs() + 0.01 * torch.randn(n, generator=gen)
    return audio.view(1, 1, -1).float().contiguous()
