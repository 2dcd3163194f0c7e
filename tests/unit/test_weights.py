from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from echo_tts import ModelConfig, WeightsError, load_model, save_model


def test_random_preset_is_deterministic() -> None:
    a, b = load_model("random:tiny"), load_model("random:tiny")
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_unknown_preset_lists_known() -> None:
    with pytest.raises(WeightsError, match="echo-tts-base"):  # exit 2 from the CLI
        load_model("random:huge")


def test_missing_folder_and_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"pytorch_model\.safetensors"):
        load_model(tmp_path)
    with pytest.raises(WeightsError, match="neither a folder"):
        load_model(tmp_path / "nope" / "deeper")


def test_shape_mismatch_lists_keys(tmp_path: Path) -> None:
    path = save_model(load_model("random:tiny"), tmp_path)
    small = ModelConfig.preset("tiny")
    wrong = ModelConfig(**{**small.to_dict(), "intermediate_size": 96})
    with pytest.raises(WeightsError, match=r"shape mismatches: blocks\.0\.mlp"):
        load_model(path, config=wrong)


def test_missing_and_extra_keys(tmp_path: Path) -> None:
    state = {k: v.contiguous() for k, v in load_model("random:tiny").state_dict().items()}
    state.pop("out_proj.bias")
    state["surprise.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "pytorch_model.safetensors"))
    with pytest.raises(WeightsError, match=r"missing keys: out_proj\.bias.*unexpected keys: surprise"):
        load_model(tmp_path, config=ModelConfig.preset("tiny"))


def test_pickle_is_refused(tmp_path: Path) -> None:
    torch.save({"x": torch.zeros(1)}, tmp_path / "pytorch_model.safetensors")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_model(tmp_path)


def test_truncated_file(tmp_path: Path) -> None:
    path = save_model(load_model("random:tiny"), tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="safetensors"):
        load_model(tmp_path)


def test_blockwise_modules_can_be_dropped(tmp_path: Path) -> None:
    path = save_model(load_model("random:tiny"), tmp_path)
    model = load_model(path, keep_blockwise=False)
    assert not model.has_blockwise
    assert not any("latent_encoder" in k or "wk_latent" in k for k in model.state_dict())


def test_offline_hub_miss_is_clear(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match=r"jordand/echo-tts-base/pytorch_model\.safetensors is not in"):
        load_model("jordand/echo-tts-base")


def test_unresolvable_hub_fails_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import socket

    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    def no_dns(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(-2, "Name or service not known")

    real_download = huggingface_hub.hf_hub_download
    calls: list[bool] = []

    def cache_only(*args: object, local_files_only: bool = False, **kwargs: object) -> str:
        calls.append(local_files_only)
        assert local_files_only, "must not try the network when the host does not resolve"
        return real_download(*args, local_files_only=True, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cache_only)
    with pytest.raises(WeightsError, match="host name does not resolve"):
        load_model("jordand/echo-tts-base")
    assert calls == [True]


def test_dtype_conversion(tmp_path: Path) -> None:
    path = save_model(load_model("random:tiny"), tmp_path)
    assert load_model(path, dtype=torch.bfloat16).dtype == torch.bfloat16
