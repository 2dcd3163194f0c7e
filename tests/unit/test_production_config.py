"""The production config format: parsing, validation, and the shipped example."""

from __future__ import annotations

from pathlib import Path

import pytest

from echo_tts.production import ProductionConfig, ProductionConfigError
from echo_tts.sampling import SamplerConfig

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_example_is_production() -> None:
    config = ProductionConfig.from_file(ROOT / "results" / "baselines" / "production.toml")
    assert config.sampler == SamplerConfig(num_steps=40, cfg_mode="independent",
                                           cfg_scale_text=3.0, cfg_scale_speaker=8.0,
                                           cfg_min_t=0.5, cfg_max_t=1.0, sequence_length=640)
    assert (config.model, config.codec, config.pca) == (
        "jordand/echo-tts-base", "jordand/fish-s1-dac-min", "jordand/echo-tts-base")
    assert (config.dtype, config.gpu) == ("bfloat16", "A10G")
    assert config.source == (ROOT / "results" / "baselines" / "production.toml").resolve()


def test_defaults_and_int_widening() -> None:
    config = ProductionConfig.from_toml("[sampler]\ncfg_scale_text = 3\n")
    assert config.sampler == SamplerConfig()
    assert isinstance(config.sampler.cfg_scale_text, float)
    assert config.pca == config.model and config.gpu is None


@pytest.mark.parametrize(("text", "needle"), [
    ("[sampler]\nnum_step = 30\n", "'num_step' in [sampler] (did you mean 'num_steps'?)"),
    ("[samplr]\n", "'samplr' in the top level"),
    ("[model]\nweights = 'x'\n", "'weights' in [model]"),
    ("[deploy]\ngpus = 'L4'\n", "'gpus' in [deploy]"),
    ("[sampler]\nnum_steps = 0\n", "num_steps must be an integer >= 1"),
    ("[sampler]\ncfg_mode = 'fast'\n", "cfg_mode must be one of"),
    ("[sampler]\nnum_steps = 2.5\n", "num_steps"),
    ("[model]\ndtype = 'int8'\n", "model.dtype must be one of"),
    ("[model]\nmodel = ''\n", "model.model must be a non-empty"),
    ("[deploy]\ngpu = 3\n", "deploy.gpu"),
    ("sampler = 3\n", "sampler must be a table"),
    ("[sampler\n", "not valid TOML"),
])
def test_errors_name_the_key(text: str, needle: str) -> None:
    with pytest.raises(ProductionConfigError) as info:
        ProductionConfig.from_toml(text, origin="prod.toml")
    assert needle in str(info.value) and str(info.value).startswith("prod.toml: ")


def test_relative_folders_resolve_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    path = tmp_path / "prod.toml"
    path.write_text('[model]\nmodel = "./weights"\ncodec = "random:tiny"\n')
    config = ProductionConfig.from_file(path)
    assert config.model == str((tmp_path / "weights").resolve()) == config.pca
    assert config.codec == "random:tiny"


@pytest.mark.parametrize("source", ["./w\\u0000x", "~no-such-user-echo/w"])
def test_unusable_paths_are_config_errors(tmp_path: Path, source: str) -> None:
    path = tmp_path / "prod.toml"
    path.write_text(f'[model]\nmodel = "{source}"\n')
    with pytest.raises(ProductionConfigError, match=r"model\.model: .* is not a usable path"):
        ProductionConfig.from_file(path)


def test_windows_relative_folders_resolve_too(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    path = tmp_path / "prod.toml"
    path.write_text('[model]\nmodel = ".\\\\weights"\n')
    assert ProductionConfig.from_file(path).model == str((tmp_path / ".\\weights").resolve())


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProductionConfigError, match="no such production config"):
        ProductionConfig.from_file(tmp_path / "nope.toml")


def test_to_dict_round_trips() -> None:
    config = ProductionConfig(sampler=SamplerConfig(num_steps=30, truncation_factor=0.8),
                              gpu="L4")
    again = ProductionConfig.from_dict(config.to_dict())
    assert again == config
