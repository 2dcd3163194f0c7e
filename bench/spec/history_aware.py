"""``[history]`` in a sweep spec: the history-aware nightly. When the store holds a full
run of the same spec (same hash: cells, prompts, seeds) from the last ``full_every_days``
days, tonight runs every cell on a first batch of generations, pairs each with its twin
in that run (same prompt and seed), and spends further generations only on cells where
a step beyond its size is still possible; otherwise it runs in full (the audit).

    [history]
    first_batch = 3          # generations (a prompt and a seed) every cell runs first
    batch = 1                # generations per later look, for the cells still open
    full_every_days = 7      # a full run when the last one is older (the weekly audit)
    seed = 0                 # mixed with the run id into tonight's order of generations

This module only describes and validates the settings and orders the generations; the
rule (which cells are still open) is :mod:`bench.analysis.nightly`, the staged run
:func:`bench.run.runner.run_sweep` through ``bench.commands.nightly_sweep``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The history-aware run's log in its run directory (which run it was checked against,
#: each look's states; read by the report).
HISTORY_LOG = "nightly.json"
DEFAULT_FIRST_BATCH = 3
DEFAULT_BATCH = 1
DEFAULT_FULL_EVERY_DAYS = 7

_KEYS = ("first_batch", "batch", "full_every_days", "seed")


@dataclass(frozen=True)
class HistorySpec:
    """Validated ``[history]`` settings (see the module docstring)."""

    first_batch: int = DEFAULT_FIRST_BATCH
    batch: int = DEFAULT_BATCH
    full_every_days: int = DEFAULT_FULL_EVERY_DAYS
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def parse_history(table: Mapping[str, Any], error: Callable[[str, str], Exception]
                  ) -> HistorySpec:
    """``[history]`` -> HistorySpec; every problem is ``error(message, dotted key)``."""
    for key in table:
        if key not in _KEYS:
            raise error(f"unknown key {key!r} in [history]; allowed: {', '.join(_KEYS)}",
                        f"history.{key}")

    def integer(key: str, default: int, minimum: int) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise error(f"history.{key} must be an integer >= {minimum} (got {value!r})",
                        f"history.{key}")
        return value

    # Two generations are the fewest an interval's spread can rest on.
    return HistorySpec(first_batch=integer("first_batch", DEFAULT_FIRST_BATCH, 2),
                       batch=integer("batch", DEFAULT_BATCH, 1),
                       full_every_days=integer("full_every_days", DEFAULT_FULL_EVERY_DAYS, 1),
                       seed=integer("seed", 0, 0))


def draw_order(draws: Sequence[str], seed: int, run_id: str) -> list[str]:
    """Tonight's order of the draws (``prompt/seed`` names): a shuffle seeded by ``seed``
    and the run id, so each night checks other generations first and a resumed run
    takes the same order (sorted first: the records' order does not matter)."""
    order = sorted(set(draws))
    digest = hashlib.sha256(f"history:{seed}:{run_id}".encode()).digest()
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    return order


def looks(order: Sequence[str], first_batch: int, batch: int) -> list[tuple[str, ...]]:
    """``order`` cut into looks: ``first_batch`` draws, then ``batch`` per look."""
    out = [tuple(order[:first_batch])]
    for start in range(first_batch, len(order), batch):
        out.append(tuple(order[start:start + batch]))
    return out
