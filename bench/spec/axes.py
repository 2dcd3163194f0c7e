"""The value types of grid axes: what each axis accepts, how a value is checked and shown.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from bench.spec.gpus import describe_gpus, parse_gpu
from echo_tts.sampling import CFG_MODES, SamplerConfig

# The value that clears an optional axis (e.g. ``speaker_kv_scale = ["unset", 1.5]``).
UNSET = "unset"


@dataclass(frozen=True)
class AxisType:
    """What values one axis takes: ``kind`` int/float/bool/choice/gpu, whether it may be
    unset, allowed ``choices``, and the smallest allowed value for ints."""

    kind: str
    optional: bool = False
    choices: tuple[str, ...] = ()
    minimum: int | None = None

    def describe(self) -> str:
        if self.kind == "choice":
            text = "one of " + ", ".join(self.choices)
        elif self.kind == "gpu":
            text = describe_gpus()
        elif self.kind == "int":
            text = "an integer" + (f" >= {self.minimum}" if self.minimum is not None else "")
        elif self.kind == "float":
            text = "a number"
        elif self.kind == "positive_float":
            text = "a number > 0"
        elif self.kind == "int_list":
            text = f"a list of integers >= {self.minimum}, e.g. [32, 128, 480]"
        elif self.kind == "pair_list":
            text = "a list of [text, speaker] number pairs, e.g. [[2.0, 5.0], [3.0, 8.0]]"
        else:
            text = "true or false"
        return text + (f' or "{UNSET}"' if self.optional else "")


def sampler_axis_types() -> dict[str, AxisType]:
    """Axis types read off SamplerConfig's annotations, so new fields need no edit here."""
    out: dict[str, AxisType] = {}
    for name, hint in typing.get_type_hints(SamplerConfig).items():
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        optional = type(None) in args
        base = next(a for a in args if a is not type(None))
        if typing.get_origin(base) is Literal:
            out[name] = AxisType("choice", optional, tuple(typing.get_args(base)))
        elif base is int:
            out[name] = AxisType("int", optional)
        elif base is float:
            out[name] = AxisType("float", optional)
        elif base is bool:
            out[name] = AxisType("bool", optional)
        else:  # pragma: no cover - a new field type must be taught to the spec
            raise TypeError(f"SamplerConfig.{name} has a type the spec cannot express: {hint}")
    # The literal must agree with the runtime list the sampler validates against.
    out["cfg_mode"] = AxisType("choice", False, CFG_MODES)
    return out


def check_value(axis: AxisType, value: Any) -> tuple[bool, Any]:
    """(ok, canonical value). Canonical: ints widened to float on float axes (so
    ``3`` and ``3.0`` are one cell), "unset" -> None, GPU names upper-cased."""
    if axis.optional and value == UNSET:
        return True, None
    if axis.kind == "bool":
        return isinstance(value, bool), value
    if axis.kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return ok and (axis.minimum is None or value >= axis.minimum), value
    if axis.kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok and math.isfinite(value), float(value) if ok else value
    if axis.kind == "choice":
        return value in axis.choices, value
    if axis.kind == "positive_float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok and math.isfinite(value) and value > 0, float(value) if ok else value
    if axis.kind == "int_list":
        ok = (isinstance(value, list) and bool(value)
              and all(isinstance(v, int) and not isinstance(v, bool)
                      and v >= (axis.minimum or 0) for v in value))
        return ok, tuple(value) if ok else value
    if axis.kind == "pair_list":
        ok = isinstance(value, list) and bool(value) and all(
            isinstance(p, list) and len(p) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                    for v in p) for p in value)
        return ok, tuple((float(a), float(b)) for a, b in value) if ok else value
    if not isinstance(value, str):
        return False, value
    # One table (bench.spec.gpus) for the spec, the CLI and the Modal app.
    return parse_gpu(value) is not None, value.upper()


def format_value(value: Any) -> str:
    if isinstance(value, tuple):  # block schedules: 32/128/480, CFG pairs 2:5/3:8
        return "/".join(":".join(map(format_value, v)) if isinstance(v, tuple)
                        else format_value(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return str(value)
