"""Our S1-DAC codec against the reference (echo-tts==0.1.4) on the official architecture.

Both load the same random weights (every parameter randomised) in float32 and process
about one second of audio (22 latents): decoding must agree to a relative error < 1e-4,
encoding must choose exactly the same codebook indices and give the same latents.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from echo_tts.autoencoder import load_codec
from tests.parity.codec_weights import LOAD_REFERENCE_CODEC, speech_like
from tests.parity.reference import run_reference

TOLERANCE = 1e-4
N_LATENTS = 22

REFERENCE_SCRIPT = LOAD_REFERENCE_CODEC + """
from echo_tts.inference import ae_decode, ae_encode

ae, pca = load_reference_codec(WORK / "codec")
inputs = load_file(str(WORK / "inputs.safetensors"))
with torch.inference_mode():
    codes, _ = ae.encode(inputs["audio"])
    save_file({
        "codes": codes.contiguous(),
        "latents": ae_encode(ae, pca, inputs["audio"]).contiguous(),
        "decoded": ae_decode(ae, pca, inputs["latents"]).contiguous(),
    }, str(WORK / "outputs.safetensors"))
"""


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).norm() / ref.norm())


@pytest.fixture(scope="module")
def outputs(reference: Path, random_codec: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(ours, reference) outputs on shared random weights and inputs."""
    work = tmp_path_factory.mktemp("codec_parity")
    (work / "codec").symlink_to(random_codec)
    gen = torch.Generator().manual_seed(0)
    inputs = {"audio": speech_like(1.0),
              "latents": torch.randn(1, N_LATENTS, 80, generator=gen)}
    save_file(inputs, str(work / "inputs.safetensors"))

    run_reference(REFERENCE_SCRIPT, work, timeout=600)
    reference_outputs = load_file(str(work / "outputs.safetensors"))

    codec = load_codec(work / "codec", work / "codec")
    with torch.inference_mode():
        ours = {
            "codes": codec.dac.encode_codes(inputs["audio"]),
            "latents": codec.encode(inputs["audio"]),
            "decoded": codec.decode(inputs["latents"]),
        }
    return ours, reference_outputs


def test_decode_matches_reference(outputs: tuple[dict[str, torch.Tensor], ...]) -> None:
    ours, ref = outputs
    assert ours["decoded"].shape == ref["decoded"].shape == (1, 1, N_LATENTS * 2048)
    # The comparison means something only if tanh is not pinned at +-1.
    assert (ref["decoded"].abs() < 0.99).float().mean() > 0.9
    assert _rel_err(ours["decoded"], ref["decoded"]) < TOLERANCE


def test_encode_matches_reference(outputs: tuple[dict[str, torch.Tensor], ...]) -> None:
    ours, ref = outputs
    assert ours["codes"].shape == ref["codes"].shape == (1, 10, N_LATENTS)
    assert torch.equal(ours["codes"], ref["codes"])
    assert ours["latents"].shape == ref["latents"].shape == (1, N_LATENTS, 80)
    assert _rel_err(ours["latents"], ref["latents"]) < TOLERANCE
