"""The gate's thresholds (the [gate] table of a gate spec) and the GPU memory table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from bench.core.errors import UserError

#: Memory of one card in GiB (Modal GPU strings; a bare "A100" is a 40 GB card). Cards
#: hold slightly less than the nominal size; the headroom absorbs that.
GPU_MEMORY_GIB: dict[str, float] = {
    "T4": 16, "L4": 24, "A10": 24, "A10G": 24, "L40S": 48, "A100": 40, "A100-40GB": 40,
    "A100-80GB": 80, "H100": 80, "H100!": 80, "H200": 141, "B200": 180, "RTX-PRO-6000": 96,
}

#: Record columns the speed check may compare (lower is better for all of them).
SPEED_METRICS: tuple[str, ...] = (
    "rtf_full", "rtf", "t_total", "t_sampling", "t_decode", "t_sampling_per_nfe",
    "wall_seconds",
)

GIB = 2**30


@dataclass(frozen=True)
class GateThresholds:
    """Decision thresholds: the ``[gate]`` table of a gate spec.

    ``wer_margin``/``cer_margin`` are absolute percentage points (0.5 = half a point);
    ``sim_margin`` is in similarity units (cosine), ``utmos_margin`` in MOS points (1-5
    scale); ``speed_factor`` a ratio of medians;
    ``alpha`` the one-sided error of each check's call (speed and quality), on intervals
    valid at every look (:mod:`bench.gate.anytime`); ``memory_headroom`` the
    share of the card kept free; ``memory_budget_gb`` (GiB) overrides the card's size;
    ``max_rounds`` the most interleaved rounds (baseline and candidate once each on a
    prompt/seed) the gate measures while a check is undecided (default: three times what
    the spec plans; see :mod:`bench.gate.rounds`); ``stage_prompts`` the prompts per look
    (each under every seed of the round); ``seed`` seeds the shuffle of the prompts.
    """

    wer_margin: float = 0.5
    cer_margin: float = 0.5
    sim_margin: float = 0.01
    utmos_margin: float = 0.1
    speed_factor: float = 1.05
    speed_metric: str = "rtf_full"
    alpha: float = 0.05
    memory_headroom: float = 0.10
    memory_budget_gb: float | None = None
    seed: int = 0
    min_prompts: int = 10
    require_quality: bool = True
    max_rounds: int | None = None
    stage_prompts: int = 4

    @classmethod
    def from_table(cls, table: Mapping[str, Any], origin: str = "[gate]") -> GateThresholds:
        """Validate a ``[gate]`` table; unknown keys and out-of-range values are errors."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise UserError(f"{origin}: unknown key {key!r} in [gate]; allowed: "
                                f"{', '.join(known)}")
            values[key] = value
        try:
            out = cls(**values)
        except TypeError as exc:  # pragma: no cover - keys are checked above
            raise UserError(f"{origin}: {exc}") from None
        problems = out._problems()
        if problems:
            raise UserError(f"{origin}: {'; '.join(problems)}")
        return out

    def _problems(self) -> list[str]:
        out = []
        for name in ("wer_margin", "cer_margin", "sim_margin", "utmos_margin"):
            if not _number(getattr(self, name)) or getattr(self, name) < 0:
                out.append(f"gate.{name} must be a number >= 0")
        if not _number(self.speed_factor) or self.speed_factor < 1:
            out.append("gate.speed_factor must be a number >= 1 (e.g. 1.05)")
        if self.speed_metric not in SPEED_METRICS:
            out.append(f"gate.speed_metric must be one of {', '.join(SPEED_METRICS)}")
        if not _number(self.alpha) or not 0 < self.alpha < 0.5:
            out.append("gate.alpha must be in (0, 0.5)")
        if not _number(self.memory_headroom) or not 0 <= self.memory_headroom < 1:
            out.append("gate.memory_headroom must be in [0, 1)")
        if self.memory_budget_gb is not None and (
                not _number(self.memory_budget_gb) or self.memory_budget_gb <= 0):
            out.append("gate.memory_budget_gb must be a positive number of GiB")
        for name, low in (("stage_prompts", 1), ("min_prompts", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                out.append(f"gate.{name} must be an integer >= {low}")
        if self.max_rounds is not None and (isinstance(self.max_rounds, bool) or not isinstance(
                self.max_rounds, int) or self.max_rounds < 1):
            out.append("gate.max_rounds must be an integer >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            out.append("gate.seed must be an integer")
        if not isinstance(self.require_quality, bool):
            out.append("gate.require_quality must be true or false")
        return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
