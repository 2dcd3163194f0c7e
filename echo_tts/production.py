"""The production config: the one TOML file a deployment reads its settings from.

The CI gate (``echo-bench gate``) checks changes to exactly this file, so what was
measured is what runs. The format::

    [sampler]                       # SamplerConfig fields; omitted ones keep its defaults
    num_steps = 40
    cfg_mode = "independent"
    cfg_scale_text = 3.0
    cfg_scale_speaker = 8.0
    cfg_min_t = 0.5
    cfg_max_t = 1.0
    sequence_length = 640

    [model]                         # weight sources, as echo_tts.weights reads them
    model = "jordand/echo-tts-base" # an owner/name Hub id, a folder, or "random:<preset>"
    codec = "jordand/fish-s1-dac-min"
    pca = "jordand/echo-tts-base"   # default: the same source as model
    dtype = "bfloat16"              # float32 | bfloat16 | float16

    [deploy]
    gpu = "A10G"                    # the Modal GPU string production runs on (optional)

Every table and key is checked: an unknown key is an error that names it (a typo such as
``num_step`` must not silently fall back to a default).
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from echo_tts.autoencoder import DEFAULT_CODEC_REPO as DEFAULT_CODEC
from echo_tts.sampling import SamplerConfig
from echo_tts.weights import DEFAULT_MODEL_REPO as DEFAULT_MODEL
from echo_tts.weights import RANDOM_PREFIX

DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")

_TABLES: dict[str, tuple[str, ...]] = {
    "sampler": SamplerConfig.field_names(),
    "model": ("model", "codec", "pca", "dtype"),
    "deploy": ("gpu",),
}


class ProductionConfigError(ValueError):
    """A production config is invalid; the message names the file, the key and the fix."""


_Fail = Callable[[str], ProductionConfigError]


@dataclass(frozen=True)
class ProductionConfig:
    """Validated settings of one production deployment.

    ``sampler`` is the :class:`SamplerConfig` production samples with; ``model``,
    ``codec`` and ``pca`` are weight sources (Hub ids, folders, or ``random:<preset>``;
    relative folders in a file are resolved against the file's folder); ``dtype`` is the
    DiT's compute dtype; ``gpu`` the Modal GPU string, or None when not pinned.
    """

    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    model: str = DEFAULT_MODEL
    codec: str = DEFAULT_CODEC
    pca: str = DEFAULT_MODEL
    dtype: str = "bfloat16"
    gpu: str | None = None
    source: Path | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> ProductionConfig:
        """Read and validate a config file (see the module docstring for the format)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ProductionConfigError(f"{path}: no such production config file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ProductionConfigError(f"{path}: cannot read it ({exc})") from None
        config = cls.from_toml(text, base_dir=path.resolve().parent, origin=str(path))
        return replace(config, source=path.resolve())

    @classmethod
    def from_toml(
        cls, text: str, *, base_dir: str | Path | None = None, origin: str = "production config"
    ) -> ProductionConfig:
        """Parse config ``text``; ``origin`` prefixes error messages. With ``base_dir``,
        relative weight folders (``./w``, ``../w``, or one that exists there) become
        absolute paths; without it they are kept as written."""
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProductionConfigError(f"{origin}: not valid TOML: {exc}") from None
        return cls.from_dict(raw, base_dir=base_dir, origin=origin)

    @classmethod
    def from_dict(
        cls,
        raw: Mapping[str, Any],
        *,
        base_dir: str | Path | None = None,
        origin: str = "production config",
    ) -> ProductionConfig:
        """Validate an already parsed config (the tables of the TOML format)."""

        def fail(message: str) -> ProductionConfigError:
            return ProductionConfigError(f"{origin}: {message}")

        _check_keys(raw, tuple(_TABLES), "the top level", fail)
        tables: dict[str, Mapping[str, Any]] = {}
        for name, allowed in _TABLES.items():
            table = raw.get(name, {})
            if not isinstance(table, Mapping):
                raise fail(f"{name} must be a table: write [{name}] on its own line")
            _check_keys(table, allowed, f"[{name}]", fail)
            tables[name] = table

        sampler = _sampler(tables["sampler"], fail)
        model_table = tables["model"]
        sources = {}
        for key, default in (("model", DEFAULT_MODEL), ("codec", DEFAULT_CODEC)):
            sources[key] = _source(model_table.get(key, default), f"model.{key}", base_dir, fail)
        # The PCA state ships with the DiT checkpoint, so it follows the model by default.
        sources["pca"] = (_source(model_table["pca"], "model.pca", base_dir, fail)
                          if "pca" in model_table else sources["model"])
        dtype = model_table.get("dtype", "bfloat16")
        if dtype not in DTYPES:
            raise fail(f"model.dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")
        gpu = tables["deploy"].get("gpu")
        if gpu is not None and (not isinstance(gpu, str) or not gpu.strip()):
            raise fail(f'deploy.gpu must be a GPU string such as "A10G" (got {gpu!r})')
        return cls(
            sampler=sampler,
            model=sources["model"],
            codec=sources["codec"],
            pca=sources["pca"],
            dtype=dtype,
            gpu=gpu,
        )

    def to_dict(self) -> dict[str, Any]:
        """The config as TOML-shaped tables (unset optional sampler fields left out)."""
        return {
            "sampler": {k: v for k, v in self.sampler.to_dict().items() if v is not None},
            "model": {
                "model": self.model,
                "codec": self.codec,
                "pca": self.pca,
                "dtype": self.dtype,
            },
            "deploy": {} if self.gpu is None else {"gpu": self.gpu},
        }


def _check_keys(
    table: Mapping[str, Any], allowed: tuple[str, ...], where: str, fail: _Fail
) -> None:
    for key in table:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise fail(f"unknown key {key!r} in {where}{suggestion}; allowed: {', '.join(allowed)}")


def _sampler(table: Mapping[str, Any], fail: _Fail) -> SamplerConfig:
    """SamplerConfig from a [sampler] table, with TOML ints widened on float fields (so
    ``cfg_scale_text = 3`` and ``3.0`` are the same config)."""
    kwargs: dict[str, Any] = {}
    float_fields = {f.name for f in fields(SamplerConfig) if "float" in str(f.type)}
    for key, value in table.items():
        if key in float_fields and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        kwargs[key] = value
    try:
        return SamplerConfig(**kwargs)
    except ValueError as exc:
        raise fail(f"[sampler] is not a valid sampler setting: {exc}") from None


def _source(value: Any, key: str, base_dir: str | Path | None, fail: _Fail) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(
            f'{key} must be a non-empty source string, e.g. "{DEFAULT_MODEL}", a '
            f'folder or "random:tiny" (got {value!r})'
        )
    if base_dir is None:
        return value
    try:
        return resolve_relative_source(value, base_dir)
    except ValueError as err:
        raise fail(f"{key}: {err}") from None


def resolve_relative_source(value: str, base_dir: str | Path) -> str:
    """A weights source as a config file writes it: a relative folder (``./w``, ``../w``,
    their Windows spellings, or one that exists there) becomes absolute against
    ``base_dir``, ``~`` is expanded, and ``random:...``, absolute paths and Hub ids
    (owner/name) stay as written. A path the OS cannot take is a ValueError."""
    if value.startswith(RANDOM_PREFIX):
        return value
    base = Path(base_dir)
    try:
        if value.startswith(("./", "../", ".\\", "..\\")) or (base / value).exists():
            return str((base / value).resolve())
        if value.startswith("~"):
            return str(Path(value).expanduser())
    except (OSError, RuntimeError, ValueError) as err:  # NUL byte, unknown ~user, too long
        raise ValueError(f"{value!r} is not a usable path ({err})") from None
    return value


__all__ = ["DTYPES", "ProductionConfig", "ProductionConfigError", "resolve_relative_source"]
