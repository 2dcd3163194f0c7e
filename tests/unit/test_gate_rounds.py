"""How many more interleaved rounds a gate with an undecided speed check measures."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bench.gate.rounds import next_seed, round_budget, speed_undecided
from bench.spec.parser import parse_spec
from bench.spec.sweep import MeasureSpec
from tests.tiny import TINY_MODEL_TOML


def _spec(seeds: tuple[int, ...], repeats: int = 1):  # type: ignore[no-untyped-def]
    spec = parse_spec(TINY_MODEL_TOML + "[grid]\nnum_steps = [4]\n", base_dir=Path("."),
                      name="t")
    return replace(spec, measure=MeasureSpec(seeds=seeds, repeats=repeats))


def test_only_an_undecided_comparison_asks_for_more() -> None:
    assert speed_undecided("INCONCLUSIVE", {"ratio": 1.2, "p_value": 0.2})
    assert not speed_undecided("INCONCLUSIVE", {})  # nothing was paired
    assert not speed_undecided("FAIL", {"ratio": 2.0})
    assert not speed_undecided("PASS", {"ratio": 1.0})


def test_seeds_are_added_one_at_a_time_within_the_budget() -> None:
    spec = _spec((0, 1), repeats=2)
    # 5 prompts x 2 repeats = 10 rounds a seed; the spec plans 20, default budget 60.
    assert round_budget(spec, 5, None) == 60
    assert next_seed(spec, [], 5, None) == 2
    assert next_seed(spec, [2, 3], 5, None) == 4
    assert next_seed(spec, [2, 3, 4, 5], 5, None) is None
    assert next_seed(spec, [], 5, 30) == 2
    assert next_seed(spec, [2], 5, 30) is None
    assert next_seed(_spec((7, 3)), [], 5, None) == 8
