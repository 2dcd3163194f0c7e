from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from echo_tts.autoencoder import (
    CODEC_FILENAME,
    CONFIG_METADATA_KEY,
    PCA_FILENAME,
    S1DAC,
    Codec,
    crop_audio_to_flattening_point,
    find_flattening_point,
    load_codec,
    save_codec,
)
from echo_tts.config import CodecConfig
from echo_tts.weights import WeightsError


@pytest.fixture(scope="module")
def codec() -> Codec:
    return load_codec("random:tiny")


def _audio(samples: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, 1, samples, generator=gen)


# --------------------------------------------------------------------------- config


def test_presets_keep_the_hop_and_latent_size() -> None:
    official, tiny = CodecConfig.preset("s1-dac"), CodecConfig.preset("tiny")
    assert official.hop_length == 512
    assert official.samples_per_latent == tiny.samples_per_latent == 2048
    assert official.pca_dim == tiny.pca_dim == 80
    assert CodecConfig.from_dict(json.loads(json.dumps(tiny.to_dict()))) == tiny


def test_bad_configs_are_rejected() -> None:
    with pytest.raises(ValueError, match="s1-dac"):
        CodecConfig.preset("huge")
    with pytest.raises(ValueError, match="same product"):
        CodecConfig(decoder_rates=(8, 8, 4))
    with pytest.raises(ValueError, match="head_dim"):
        CodecConfig(head_dim=48)


def test_official_architecture_has_the_checkpoint_keys() -> None:
    with torch.device("meta"):
        dac = S1DAC(CodecConfig.preset("s1-dac"))
    state = dac.state_dict()
    assert sum(p.numel() for p in dac.parameters()) == 391_430_530
    assert state["decoder.model.1.block.1.conv.parametrizations.weight.original0"].shape == (
        1536, 1, 1)
    assert state["quantizer.semantic_quantizer.quantizers.0.codebook.weight"].shape == (4096, 8)
    assert state["encoder.block.4.block.5.layers.3.attention.wqkv.weight"].shape == (3072, 1024)
    assert state["quantizer.downsample.1.1.dwconv.conv.weight"].shape == (1024, 1, 7)
    assert not any(k.endswith(("freqs_cis", "causal_mask")) for k in state)


# --------------------------------------------------------------------------- encode/decode


def test_encode_decode_shapes(codec: Codec) -> None:
    latents = codec.encode(_audio(3 * 2048 + 5, batch=2))
    assert latents.shape == (2, 4, 80) and latents.dtype == torch.float32
    assert torch.isfinite(latents).all()
    audio = codec.decode(latents)
    assert audio.shape == (2, 1, 4 * 2048) and audio.dtype == torch.float32
    assert audio.abs().max() <= 1
    with pytest.raises(ValueError, match=r"\[batch, 1, samples\]"):
        codec.encode(torch.zeros(1, 2048))
    with pytest.raises(ValueError, match="80"):
        codec.decode(torch.zeros(1, 4, 64))


def test_encoding_is_causal(codec: Codec) -> None:
    """Latent i depends only on audio before (i + 1) * 2048: a prefix encodes the same."""
    audio = _audio(8 * 2048)
    full, prefix = codec.encode(audio), codec.encode(audio[..., : 3 * 2048])
    torch.testing.assert_close(prefix, full[:, :3], rtol=1e-5, atol=1e-5)


def test_rows_are_independent(codec: Codec) -> None:
    audio = _audio(4 * 2048, batch=2)
    torch.testing.assert_close(codec.encode(audio)[1:], codec.encode(audio[1:]),
                               rtol=1e-5, atol=1e-5)


def test_bfloat16_codec_returns_float32() -> None:
    codec = load_codec("random:tiny", dtype=torch.bfloat16)
    assert codec.dtype == torch.bfloat16 and codec.pca.components.dtype == torch.float32
    latents = codec.encode(_audio(2 * 2048))
    audio = codec.decode(latents)
    assert latents.dtype == audio.dtype == torch.float32
    assert torch.isfinite(audio).all()


def test_pca_inverts_on_its_subspace(codec: Codec) -> None:
    latents = torch.randn(1, 5, 80)
    torch.testing.assert_close(codec.pca.encode(codec.pca.decode(latents)), latents,
                               rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- loading


def test_random_preset_is_deterministic(codec: Codec) -> None:
    other = load_codec("random:tiny")
    assert all(torch.equal(a, b) for a, b in zip(codec.state_dict().values(),
                                                  other.state_dict().values(), strict=True))


def test_save_load_round_trip(codec: Codec, tmp_path: Path) -> None:
    save_codec(codec, tmp_path)
    with safe_open(str(tmp_path / CODEC_FILENAME), framework="pt") as f:
        assert json.loads(f.metadata()[CONFIG_METADATA_KEY])["latent_dim"] == 128
    loaded = load_codec(tmp_path, tmp_path)
    assert loaded.config == codec.config
    assert loaded.pca.latent_scale == codec.pca.latent_scale
    audio = _audio(3 * 2048)
    assert torch.equal(loaded.encode(audio), codec.encode(audio))
    latents = torch.randn(1, 3, 80)
    assert torch.equal(loaded.decode(latents), codec.decode(latents))


def test_rope_and_mask_buffers_in_a_checkpoint_are_skipped(codec: Codec, tmp_path: Path) -> None:
    save_codec(codec, tmp_path)
    state = load_file(str(tmp_path / CODEC_FILENAME))
    state["quantizer.pre_module.freqs_cis"] = torch.zeros(4096, 8, 2)
    state["quantizer.pre_module.causal_mask"] = torch.ones(4, 4, dtype=torch.bool)
    # No metadata, as in the official checkpoint, so the config must be given.
    save_file(state, str(tmp_path / CODEC_FILENAME))
    load_codec(tmp_path, tmp_path, config=CodecConfig.preset("tiny"))


@pytest.mark.parametrize("config", ['{"latent_dim": 128, "nope": 1}', "{broken", "[1, 2]"])
def test_a_bad_config_in_the_metadata_is_a_weights_error(codec: Codec, tmp_path: Path,
                                                          config: str) -> None:
    save_codec(codec, tmp_path)
    state = load_file(str(tmp_path / CODEC_FILENAME))
    save_file(state, str(tmp_path / CODEC_FILENAME), metadata={CONFIG_METADATA_KEY: config})
    with pytest.raises(WeightsError, match="does not describe an S1-DAC codec"):
        load_codec(tmp_path, tmp_path)


def test_missing_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"pytorch_model\.safetensors"):
        load_codec(tmp_path, "random:tiny")
    with pytest.raises(WeightsError, match="neither a folder"):
        load_codec(tmp_path / "nope" / "deeper", "random:tiny")
    with pytest.raises(WeightsError, match=r"pca_state\.safetensors"):
        load_codec("random:tiny", tmp_path)


def test_truncated_and_pickled_files(codec: Codec, tmp_path: Path) -> None:
    save_codec(codec, tmp_path)
    path = tmp_path / CODEC_FILENAME
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_codec(tmp_path, tmp_path)
    torch.save(codec.dac.state_dict(), path)
    with pytest.raises(WeightsError, match="pickle checkpoint"):
        load_codec(tmp_path, tmp_path)


def test_wrong_shapes_and_keys(codec: Codec, tmp_path: Path) -> None:
    save_codec(codec, tmp_path)
    with pytest.raises(WeightsError, match=r"325 shape mismatches: encoder\.block\.0\.conv\.bias \(4,\) != \(64,\)"):
        load_codec(tmp_path, tmp_path, config=CodecConfig.preset("s1-dac"))
    pca = load_file(str(tmp_path / PCA_FILENAME))
    pca["pca_components"] = pca["pca_components"][:40]
    del pca["latent_scale"]
    save_file(pca, str(tmp_path / PCA_FILENAME))
    with pytest.raises(WeightsError, match=r"pca_components \(40, 128\) != \(80, 128\).*"
                                           r"missing keys: latent_scale"):
        load_codec(tmp_path, tmp_path)


def test_random_pca_must_fit_the_codec(codec: Codec, tmp_path: Path) -> None:
    save_codec(codec, tmp_path)
    with pytest.raises(WeightsError, match="use the codec's own preset"):
        load_codec(tmp_path, "random:s1-dac")
    with pytest.raises(WeightsError, match="unknown codec preset"):
        load_codec("random:huge")


# --------------------------------------------------------------------------- cropping


def _flattening_point_loop(data: torch.Tensor) -> int:
    """The reference's definition, one window at a time."""
    padded = torch.cat([data, torch.zeros(20, *data.shape[1:])])
    for i in range(len(padded) - 20):
        window = padded[i : i + 20]
        if window.std() < 0.05 and abs(window.mean()) < 0.1:
            return i
    return len(data)


@pytest.mark.parametrize("seed", range(6))
def test_flattening_point_matches_the_windowed_definition(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    speech = torch.randn(int(torch.randint(0, 60, (1,), generator=gen)), 80, generator=gen)
    tail = 0.02 * torch.randn(int(torch.randint(0, 40, (1,), generator=gen)), 80, generator=gen)
    latents = torch.cat([speech, tail + (0.2 if seed == 5 else 0.0)])
    assert find_flattening_point(latents) == _flattening_point_loop(latents)


def test_crop_audio() -> None:
    latents = torch.cat([torch.randn(10, 80), torch.zeros(30, 80)])
    audio = torch.randn(1, 40 * 2048)
    assert find_flattening_point(latents) == 10
    assert crop_audio_to_flattening_point(audio, latents).shape == (1, 10 * 2048)
    assert find_flattening_point(torch.randn(25, 80)) == 25
    assert find_flattening_point(torch.zeros(0, 80)) == 0
