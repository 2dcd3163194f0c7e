"""``[adaptive]`` in a sweep spec: run every cell on a first batch of prompts, then spend
further prompts only on cells that could still change the frontier or the headline.

    [adaptive]
    first_batch = 6          # prompts every cell runs first (>= the minimum below)
    batch = 3                # prompts per later stage, for the undecided cells only
    confidence = 0.95        # level of the intervals a decision needs
    seed = 0                 # the prompts' order (a seeded shuffle of the set)
    wer_budget = 0.5         # points of corpus WER over the baseline (the headline's rule)
    max_gpu_hours = 2.0      # budget: compute hours over all cells (at least one of the two)
    max_usd = 3.0            # budget: USD at bench/data/gpu_prices.toml's prices
    goal = "headline"        # what must be decided before a cell stops: "headline" (the
                             # headline's choice, the default; the frontier is read off what
                             # ran) or "frontier" (every frontier's membership as well)

This module only describes and validates the settings and cuts the prompt set into
stages; the policy (which cells are still undecided) is
:mod:`bench.analysis.adaptive`, the staged run is :func:`bench.run.runner.run_sweep`.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The headline's default WER budget (bench.analysis.headline.DEFAULT_WER_BUDGET_POINTS;
#: spec sits below analysis, so a test checks that the two agree).
DEFAULT_WER_BUDGET = 0.5
DEFAULT_CONFIDENCE = 0.95
DEFAULT_BATCH = 3
#: The adaptive run's decision log in its run directory (written by the sweep command,
#: read by the report).
ADAPTIVE_LOG = "adaptive.json"

_KEYS = ("first_batch", "batch", "confidence", "seed", "wer_budget", "max_gpu_hours",
         "max_usd", "goal")
#: What an adaptive run must decide before it stops a cell (see the module docstring).
GOALS = ("headline", "frontier")


def min_first_batch(confidence: float) -> int:
    """The fewest prompts a first batch at ``confidence`` can have.

    n prompts drawn from a set all fall on one side of the median of what the whole set
    would show with probability 2 * 0.5**n, and a first batch that misses the middle of
    the set that often cannot stand for it: 1 - 2 * 0.5**n must reach ``confidence``,
    i.e. n >= 1 + log2(1 / (1 - confidence)): 6 prompts at 0.95, 5 at 0.90, 8 at 0.99.
    A necessary floor, not a guarantee of coverage (the intervals themselves are
    :mod:`bench.analysis.sequential`'s confidence sequences).
    """
    return 1 + math.ceil(math.log2(1.0 / (1.0 - confidence)) - 1e-12)


@dataclass(frozen=True)
class AdaptiveSpec:
    """Validated ``[adaptive]`` settings (see the module docstring)."""

    first_batch: int
    batch: int = DEFAULT_BATCH
    confidence: float = DEFAULT_CONFIDENCE
    seed: int = 0
    wer_budget: float = DEFAULT_WER_BUDGET
    max_gpu_hours: float | None = None
    max_usd: float | None = None
    goal: str = GOALS[0]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


ErrorFactory = Callable[[str, str], Exception]


def parse_adaptive(table: Mapping[str, Any], error: ErrorFactory,
                   prompt_limit: int | None) -> AdaptiveSpec:
    """``[adaptive]`` -> AdaptiveSpec; every problem is ``error(message, dotted key)``
    (one line naming the key and the fix)."""
    for key in table:
        if key not in _KEYS:
            raise error(f"unknown key {key!r} in [adaptive]; allowed: {', '.join(_KEYS)}",
                        f"adaptive.{key}")

    def number(key: str, default: float | None, low: float, high: float | None,
               describe: str) -> float | None:
        value = table.get(key, default)
        if value is None:
            return None
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or value <= low
                or (high is not None and value >= high)):
            raise error(f"adaptive.{key} must be {describe} (got {value!r})", f"adaptive.{key}")
        return float(value)

    def integer(key: str, default: int, minimum: int) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise error(f"adaptive.{key} must be an integer >= {minimum} (got {value!r})",
                        f"adaptive.{key}")
        return value

    confidence = number("confidence", DEFAULT_CONFIDENCE, 0.5, 1.0,
                        "a level between 0.5 and 1, e.g. 0.95")
    assert confidence is not None
    hours = number("max_gpu_hours", None, 0.0, None, "a positive number of hours")
    usd = number("max_usd", None, 0.0, None, "a positive amount in USD")
    if hours is None and usd is None:
        raise error("[adaptive] needs a budget: max_gpu_hours = H and/or max_usd = D (the "
                    "compute it may spend before it stops undecided)", "adaptive")
    need = min_first_batch(confidence)
    if "first_batch" not in table:
        raise error(f"[adaptive] needs first_batch = N, the prompts every cell runs first "
                    f"(at least {need} at confidence {confidence:g})", "adaptive")
    first = integer("first_batch", need, 1)
    if first < need:
        raise error(
            f"adaptive.first_batch = {first} is too small for confidence {confidence:g}: "
            f"intervals from resampling {first} prompts cannot reach that level (the range of "
            f"n prompts covers the median with probability 1 - 2*0.5^n); set first_batch >= "
            f"{need} or lower adaptive.confidence", "adaptive.first_batch")
    if prompt_limit is not None and prompt_limit < first:
        raise error(f"adaptive.first_batch = {first} needs at least {first} prompts but "
                    f"prompts.limit = {prompt_limit}; raise the limit or lower first_batch",
                    "adaptive.first_batch")
    wer_budget = number("wer_budget", DEFAULT_WER_BUDGET, -1e-12, None,
                        "a number of WER points >= 0")
    assert wer_budget is not None
    goal = table.get("goal", GOALS[0])
    if goal not in GOALS:
        raise error(f"adaptive.goal must be one of {', '.join(map(repr, GOALS))} (got "
                    f"{goal!r})", "adaptive.goal")
    return AdaptiveSpec(first_batch=first, batch=integer("batch", DEFAULT_BATCH, 1),
                        confidence=confidence, seed=integer("seed", 0, 0),
                        wer_budget=wer_budget, max_gpu_hours=hours, max_usd=usd, goal=goal)


def stage_batches(prompt_ids: Sequence[str], first_batch: int, batch: int, seed: int
                  ) -> list[tuple[str, ...]]:
    """The prompt set cut into stages: a seeded shuffle, then ``first_batch`` prompts and
    ``batch`` prompts per later stage (the last stage takes what is left). The shuffle
    keeps any ordering of the set (by length, by source) out of the first batch."""
    order = list(prompt_ids)
    digest = hashlib.sha256(f"adaptive:{seed}".encode()).digest()
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    stages = [tuple(order[:first_batch])]
    for start in range(first_batch, len(order), batch):
        stages.append(tuple(order[start:start + batch]))
    return stages
