"""``[[predictions]]`` in a sweep spec: what a piece of research predicts, as data.

Each table names one proposal and the cells that test it::

    [[predictions]]
    name = "30 steps"                      # a row of the report
    proposal = "1. fewer diffusion steps"  # optional grouping text
    change = { num_steps = 30 }            # the proposal: the baseline with these axes changed
    baseline = {}                          # optional: axes that differ from the defaults
    speedup = 1.3                          # optional: the predicted gain (x)
    cost_factor = 1.0                      # optional: predicted cost per audio hour (x)
    measure = "latency"                    # latency | ttfb | throughput | memory
    vram_gb = 8                            # optional: the card the proposal must fit
    reference_seconds = 12.0               # optional (no change only): the source's own figure
    category = "passage"                   # optional: prompts the row is measured on
    source = "the research's words"

The baseline cell is the spec's base settings (the first value of every [grid] axis, as
for ``[[include]]``; production defaults and [model]'s dtypes for the others) with
``baseline`` applied; the candidate is the baseline with ``change`` applied. A
table without ``change`` is the baseline row itself. When ``[grid]`` varies ``gpu`` and
neither table names one, the prediction is tested on every GPU type (one row each).
Both cells must be in the grid, so a prediction can never silently measure nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MEASURES: tuple[str, ...] = ("latency", "ttfb", "throughput", "memory")
_KEYS = ("name", "proposal", "change", "baseline", "speedup", "cost_factor", "measure",
         "vram_gb", "reference_seconds", "reference_audio_seconds", "category", "source")


@dataclass(frozen=True)
class Prediction:
    """One proposal tested on one GPU type (``gpu`` None: wherever the run ran)."""

    name: str
    baseline_cell: str
    candidate_cell: str | None  # None: the baseline row
    gpu: str | None = None
    proposal: str = ""
    change: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    speedup: float | None = None
    cost_factor: float | None = None
    measure: str = "latency"
    vram_gb: float | None = None
    reference_seconds: float | None = None
    reference_audio_seconds: float | None = None
    category: str | None = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


ErrorFactory = Callable[[str, str], Exception]
AxisValue = Callable[[str, Any, str], Any]
CellId = Callable[[Mapping[str, Any]], str]


def parse_predictions(tables: Any, *, base: Mapping[str, Any], gpus: Sequence[str | None],
                      cell_ids: set[str], axes: Sequence[str], axis_value: AxisValue,
                      cell_id: CellId, error: ErrorFactory) -> tuple[Prediction, ...]:
    """Validate ``[[predictions]]`` against the expanded grid (see the module docstring).

    ``base`` holds every axis's value for a cell that names nothing; ``gpus`` the grid's
    GPU values; ``axis_value(key, value, where)`` canonicalises one axis value (raising
    on a bad one); ``error(message, key)`` builds the exception to raise.
    """
    if tables is None:
        return ()
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise error("predictions must be an array of tables: write [[predictions]] followed "
                    "by key = value lines", "predictions")
    out: list[Prediction] = []
    names: set[str] = set()
    for index, table in enumerate(tables, 1):
        where = f"predictions[{index}]"
        for key in table:
            if key not in _KEYS:
                raise error(f"unknown key {key!r} in [[predictions]]; allowed: "
                            f"{', '.join(_KEYS)}", f"{where}.{key}")
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            raise error(f'{where} needs name = "..." (the report row)', f"{where}.name")
        if name in names:
            raise error(f"{where}: name {name!r} is used twice; give each prediction its own",
                        f"{where}.name")
        names.add(name)
        change = _selector(table, "change", where, axes, axis_value, error)
        baseline = _selector(table, "baseline", where, axes, axis_value, error)
        options = _options(table, where, error)
        if "change" not in table and options["speedup"] is not None:
            raise error(f"{where} has a speedup but no change; say what the proposal changes "
                        "with change = { axis = value }", f"{where}.speedup")
        named_gpu = "gpu" in change or "gpu" in baseline
        for gpu in ([None] if named_gpu else list(gpus) or [None]):
            base_values = dict(base, **baseline, **({} if gpu is None else {"gpu": gpu}))
            base_id = cell_id(base_values)
            if base_id not in cell_ids:
                raise error(f"{where}: no cell has the baseline settings "
                            f"{_show(baseline, gpu)}; add that cell to [grid] or "
                            "[[include]]", f"{where}.baseline" if baseline else where)
            candidate_id = None
            if "change" in table:
                candidate_id = cell_id(dict(base_values, **change))
                if candidate_id not in cell_ids:
                    raise error(f"{where}: no cell has the proposal's settings "
                                f"{_show(dict(baseline, **change), gpu)}; add it to "
                                "[[include]]", f"{where}.change")
            out.append(Prediction(name=name, baseline_cell=base_id, candidate_cell=candidate_id,
                                  gpu=base_values.get("gpu"), change=change, **options))
    return tuple(out)


def _selector(table: Mapping[str, Any], key: str, where: str, axes: Sequence[str],
              axis_value: AxisValue, error: ErrorFactory) -> dict[str, Any]:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise error(f"{where}.{key} must be an inline table of axes, e.g. "
                    f"{key} = {{ num_steps = 30 }}", f"{where}.{key}")
    out = {}
    for axis, v in value.items():
        if axis not in axes:
            raise error(f"{where}.{key}.{axis} is not a grid axis; use one of the [grid] axes",
                        f"{where}.{key}")
        out[axis] = axis_value(axis, v, f"{where}.{key}.{axis}")
    return out


def _options(table: Mapping[str, Any], where: str, error: ErrorFactory) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("speedup", "cost_factor", "vram_gb", "reference_seconds",
                "reference_audio_seconds"):
        value = table.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value) or value <= 0):
            raise error(f"{where}.{key} must be a number > 0 (got {value!r})", f"{where}.{key}")
        out[key] = None if value is None else float(value)
    measure = table.get("measure", "latency")
    if measure not in MEASURES:
        raise error(f"{where}.measure must be one of {', '.join(MEASURES)} (got {measure!r})",
                    f"{where}.measure")
    out["measure"] = measure
    for key in ("proposal", "source", "category"):
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise error(f"{where}.{key} must be a string", f"{where}.{key}")
    out["proposal"] = table.get("proposal", "")
    out["source"] = table.get("source", "")
    out["category"] = table.get("category")
    return out


def _show(values: Mapping[str, Any], gpu: str | None) -> str:
    shown = dict(values, **({} if gpu is None else {"gpu": gpu}))
    return " ".join(f"{k}={v}" for k, v in shown.items()) or "(the defaults)"
