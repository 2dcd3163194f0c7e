"""A gate spec (gate.toml) and the sweep it runs: the baseline and candidate production
configs as two cells of one sweep, on the same prompts and seeds."""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.errors import UserError
from bench.gate.thresholds import GateThresholds
from bench.spec.parser import parse_spec
from bench.spec.sweep import SweepSpec
from echo_tts.production import ProductionConfig
from echo_tts.sampling import SamplerConfig


@dataclass(frozen=True)
class GateSpec:
    """A gate spec file split in two: the sweep tables (``sweep``, everything but
    ``[gate]``) and the decision ``thresholds``."""

    sweep: dict[str, Any]
    thresholds: GateThresholds
    base_dir: Path
    name: str
    origin: str


def load_gate_spec(path: str | Path) -> GateSpec:
    """Read a gate spec: a sweep spec without cells plus a ``[gate]`` table."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such gate spec") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a valid TOML file: {exc}") from None
    gate = raw.pop("gate", {})
    if not isinstance(gate, dict):
        raise UserError(f"{path}: gate must be a table: write [gate] on its own line")
    for section in ("grid", "include", "exclude"):
        if section in raw:
            raise UserError(f"{path}: a gate spec has no [{section}]: the two cells come "
                            "from --baseline and --candidate")
    return GateSpec(raw, GateThresholds.from_table(gate, str(path)), path.resolve().parent,
                    str(raw.get("name", path.stem)), str(path))


def build_sweep(gate: GateSpec, configs: Sequence[ProductionConfig]) -> SweepSpec:
    """One sweep with one cell per production config (in order; equal configs share one),
    on the gate spec's prompts, seeds and measurement settings.

    The weights and dtype come from the configs (what production runs); the gate spec's
    ``[model]`` contributes how to run them (device, compile, codec dtype). Scoring needs
    the audio, so ``keep_audio`` is forced on.
    """
    first = configs[0]
    for other in configs[1:]:
        if (other.model, other.codec, other.pca) != (first.model, first.codec, first.pca):
            raise UserError("the baseline and candidate load different weights; one gate "
                            "sweep loads one model. Run each with `echo-bench sweep` and "
                            "pass the run directories to --baseline/--candidate")
    raw = {k: v for k, v in gate.sweep.items()}
    model = dict(raw.get("model", {}))
    model.update(model=first.model, codec=first.codec, pca=first.pca, dtype=first.dtype)
    raw["model"] = model
    measure = dict(raw.get("measure", {}))
    measure["keep_audio"] = True
    measure.pop("max_audio_files", None)
    raw["measure"] = measure
    raw["include"] = [_include(c) for c in configs]
    return parse_spec(dump_toml(raw), base_dir=gate.base_dir, name=gate.name,
                      origin=gate.origin)


def _include(config: ProductionConfig) -> dict[str, Any]:
    # Only settings that differ from the sampler's defaults: the rest are implied, and
    # the cell labels then show what the configs change.
    defaults = SamplerConfig().to_dict()
    values: dict[str, Any] = {k: v for k, v in config.sampler.to_dict().items()
                              if v is not None and v != defaults[k]}
    values["dtype"] = config.dtype
    if config.gpu is not None:
        values["gpu"] = config.gpu
    return values


def dump_toml(data: Mapping[str, Any]) -> str:
    """TOML text for the shapes a sweep spec uses: top-level scalars, tables of scalars
    and lists of scalars, and arrays of such tables. Anything else raises ValueError."""
    lines: list[str] = []
    tables: list[str] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables += ["", f"[{_key(key)}]", *_table_lines(value, key)]
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for item in value:
                tables += ["", f"[[{_key(key)}]]", *_table_lines(item, key)]
        else:
            lines.append(f"{_key(key)} = {_value(value, key)}")
    return "\n".join(lines + tables) + "\n"


def _table_lines(table: Mapping[str, Any], where: str) -> list[str]:
    return [f"{_key(k)} = {_value(v, f'{where}.{k}')}" for k, v in table.items()]


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key, ensure_ascii=False)


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} has no place in a spec")
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes (\", \\, \n, \uXXXX) are all valid in a TOML basic string.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v, where) for v in value) + "]"
    raise ValueError(f"{where}: cannot write {type(value).__name__} as TOML")
