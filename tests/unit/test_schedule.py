"""The run order: interleaved rounds within groups of cells sharing a pipeline."""

from __future__ import annotations

from collections import Counter

from bench.run.schedule import Generation, group_key, plan, round_order, schedule
from bench.spec.prompt_files import Prompt
from bench.spec.sweep import Cell
from echo_tts import SamplerConfig

PROMPTS = [Prompt("a", "One."), Prompt("b", "Two."), Prompt("c", "Three.")]


def _cell(name: str, **kw: object) -> Cell:
    return Cell(id=name, sampler=SamplerConfig(num_steps=4), **kw)  # type: ignore[arg-type]


def _work(cells: list[Cell], seeds: tuple[int, ...] = (0, 1), repeats: int = 1
          ) -> dict[Cell, list[Generation]]:
    work: dict[Cell, list[Generation]] = {}
    for gen in plan(cells, PROMPTS, seeds, repeats):
        work.setdefault(gen.cell, []).append(gen)
    return work


def test_cells_sharing_a_pipeline_run_in_rounds_of_one_generation_each() -> None:
    a, b = _cell("a"), _cell("b", batch_size=2)
    [group] = schedule(_work([a, b]), seed=3)
    assert group.interleaved and group.cells == (a, b)
    steps = group.steps
    assert len(steps) == 12
    for r in range(6):
        pair = steps[2 * r: 2 * r + 2]
        assert {s.gen.cell for s in pair} == {a, b} and {s.round for s in pair} == {r}
        assert pair[0].gen.prompt == pair[1].gen.prompt and pair[0].gen.seed == pair[1].gen.seed
        assert [s.position for s in pair] == [0, 1]
    # ABBA: each odd round reverses the round before it.
    for r in range(0, 6, 2):
        first = [s.gen.cell for s in steps[2 * r: 2 * r + 2]]
        second = [s.gen.cell for s in steps[2 * r + 2: 2 * r + 4]]
        assert second == first[::-1]
    # Each cell goes first equally often.
    assert Counter(s.gen.cell.id for s in steps if s.position == 0) == {"a": 3, "b": 3}


def test_cells_needing_another_pipeline_or_machine_stay_grouped() -> None:
    a, b = _cell("a"), _cell("b", dtype="float32")
    c, d = _cell("c", gpu="L4"), _cell("d", compile=True)
    e = _cell("e", attention="packed")  # same weights and no graphs: interleaves with a
    groups = schedule(_work([a, b, c, d, e]))
    assert [g.cells for g in groups] == [(a, e), (b,), (c,), (d,)]
    assert [g.interleaved for g in groups] == [True, False, False, False]
    assert group_key(a) == group_key(e) != group_key(b)
    # Groups run one after the other, each cell's generations all inside its group.
    assert [s.gen.cell for s in groups[1].steps] == [b] * 6


def test_the_order_is_seeded_and_cell_after_cell_remains_available() -> None:
    cells = [_cell(str(i)) for i in range(4)]
    assert schedule(_work(cells), seed=1) == schedule(_work(cells), seed=1)
    orders = {tuple(c.id for c in round_order(cells, r, seed)) for seed in range(5)
              for r in (0, 2, 4)}
    assert len(orders) > 1
    flat = schedule(_work(cells), interleave=False)
    assert [g.cells for g in flat] == [(c,) for c in cells]


def test_a_resumed_run_schedules_exactly_the_missing_generations() -> None:
    a, b = _cell("a"), _cell("b")
    work = _work([a, b])
    done = {work[a][0].key, work[a][1].key, work[b][0].key}
    missing = {c: [g for g in gens if g.key not in done] for c, gens in work.items()}
    [group] = schedule(missing)
    keys = [s.gen.key for s in group.steps]
    assert sorted(keys) == sorted(g.key for gens in missing.values() for g in gens)
    assert len(keys) == len(set(keys)) == 9
    # The unit only b still needs is a round of b alone.
    assert [s.gen.cell for s in group.steps if s.round == 0] == [b]
    last = group.last_steps()
    assert last[a] == max(i for i, s in enumerate(group.steps) if s.gen.cell == a)
