"""How many more interleaved rounds a gate with an undecided speed check measures."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bench.gate.checks import Check
from bench.gate.rounds import looks, next_seed, round_budget, undecided
from bench.spec.parser import parse_spec
from bench.spec.sweep import MeasureSpec
from tests.tiny import TINY_MODEL_TOML


def _spec(seeds: tuple[int, ...], repeats: int = 1):  # type: ignore[no-untyped-def]
    spec = parse_spec(TINY_MODEL_TOML + "[grid]\nnum_steps = [4]\n", base_dir=Path("."),
                      name="t")
    return replace(spec, measure=MeasureSpec(seeds=seeds, repeats=repeats))


def test_only_an_undecided_comparison_asks_for_more() -> None:
    open_ = Check("speed", "INCONCLUSIVE", "", {"n_pairs": 6})
    passed = Check("quality.wer", "PASS", "", {"n_pairs": 6})
    assert undecided([open_, passed])
    assert not undecided([Check("speed", "INCONCLUSIVE", "", {})])  # nothing was paired
    assert not undecided([open_, Check("quality.wer", "FAIL", "", {"n_pairs": 6})])
    assert not undecided([passed, Check("quality", "NOT_MEANINGFUL", "", {})])


def test_each_pass_looks_at_every_prompt_once_in_its_own_order() -> None:
    ids = [f"p{k}" for k in range(10)]
    first, second = looks(ids, 4, 0, 0), looks(ids, 4, 0, 1)
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(p for b in first for p in b) == sorted(ids)
    assert first != second and looks(ids, 4, 0, 0) == first


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
