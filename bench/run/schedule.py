"""The order generations run in: interleaved rounds for cells that share a loaded pipeline.

Timing two things one after the other lets anything that changes in between (a busy
neighbour, clocks, a warming card) pass for a difference between them. So cells that
share a loaded pipeline run in *rounds*: a round is one (prompt, seed, repeat) unit, and
in it every cell of the group runs once, back to back. The order inside a round is
seeded: an even round takes a seeded shuffle of the cells, the round after it the same
order reversed, which for two cells is a randomised ABBA and for any number balances a
linear drift over each pair of rounds.

Cells that need another pipeline (another dtype or compile/CUDA-graph setting, since
those hold other weights or graphs) or another machine (``gpu``) form groups of their
own and run one group after another: interleaving them would keep two models resident or
thrash compiled graphs. Cells that differ only in sampler settings, batch size or the
attention layout share the weights and interleave.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from graphlib import TopologicalSorter
from typing import Any

from torch import Tensor

from bench.spec.prompt_files import Prompt
from bench.spec.sweep import Cell
from bench.store.layout import record_key

GroupKey = tuple[str | None, str, bool, bool]


# Where a worker hands each finished generation: its record, and its audio (None when it
# failed). The runner's sink writes to the store; the Modal worker's to its volume.
ResultSink = Callable[[dict[str, Any], Tensor | None], None]


@dataclass(frozen=True)
class Generation:
    """One unit of work: a cell's settings on one prompt, seed and repeat."""

    cell: Cell
    prompt: Prompt
    seed: int
    repeat: int

    @property
    def key(self) -> str:
        return record_key(self.cell.id, self.prompt.id, self.seed, self.repeat)


def plan(cells: Iterable[Cell], prompts: list[Prompt], seeds: Iterable[int],
         repeats: int) -> list[Generation]:
    """Every generation of a sweep, cell by cell (prompts x seeds x repeats within a cell)."""
    seeds = list(seeds)
    return [Generation(cell, prompt, seed, repeat)
            for cell in cells for prompt in prompts for seed in seeds for repeat in range(repeats)]


def group_key(cell: Cell) -> GroupKey:
    """What a cell needs loaded (and where): cells with equal keys interleave."""
    return (cell.gpu, cell.dtype, cell.compile, cell.cuda_graphs)


@dataclass(frozen=True)
class Step:
    """One generation in run order: its group, round and place in the round."""

    gen: Generation
    group: int
    round: int
    position: int


@dataclass(frozen=True)
class Group:
    """Cells run together in rounds (``interleaved`` when there is more than one)."""

    index: int
    cells: tuple[Cell, ...]
    steps: tuple[Step, ...]

    @property
    def interleaved(self) -> bool:
        return len(self.cells) > 1

    def last_steps(self) -> dict[Cell, int]:
        """For each cell, the index in ``steps`` of its last generation (it is done then)."""
        return {step.gen.cell: i for i, step in enumerate(self.steps)}


def unit(gen: Generation) -> tuple[str, int, int]:
    """The (prompt, seed, repeat) a generation measures: what one round covers."""
    return (gen.prompt.id, gen.seed, gen.repeat)


def round_order(cells: Sequence[Cell], index: int, seed: int) -> list[Cell]:
    """The order of ``cells`` in round ``index``: a seeded shuffle on even rounds, the
    previous round's order reversed on odd ones."""
    digest = hashlib.sha256(f"{seed}:{index // 2}".encode()).digest()
    order = list(cells)
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    return order[::-1] if index % 2 else order


def schedule(work: Mapping[Cell, Sequence[Generation]], *, seed: int = 0,
             interleave: bool = True) -> list[Group]:
    """The groups of ``work`` in cell order, each with its steps in run order.

    Rounds follow the plan's order (prompts in the order the work lists them, then
    seeds, then repeats); a unit only some cells still need (a resumed run) is a round
    of those cells. ``interleave=False`` runs each
    cell's generations in a block (one group per cell), the order before rounds existed.
    """
    keyed: dict[object, list[Cell]] = {}
    for cell, gens in work.items():
        if gens:
            # A concurrency cell times rounds of N of its own requests in flight at once;
            # another cell's generation between them would break the round.
            alone = not interleave or cell.concurrency > 1
            keyed.setdefault(cell.id if alone else group_key(cell), []).append(cell)
    groups = []
    for index, cells in enumerate(keyed.values()):
        by_unit: dict[tuple[str, int, int], dict[Cell, Generation]] = {}
        for cell in cells:
            for gen in work[cell]:
                by_unit.setdefault(unit(gen), {})[cell] = gen
        rank = _prompt_ranks([work[c] for c in cells])
        units = sorted(by_unit, key=lambda u: (rank[u[0]], u[1], u[2]))
        steps = []
        for r, in_round in enumerate(by_unit[u] for u in units):
            present = [c for c in round_order(cells, r, seed) if c in in_round]
            steps += [Step(in_round[c], index, r, p) for p, c in enumerate(present)]
        groups.append(Group(index, tuple(cells), tuple(steps)))
    return groups


def _prompt_ranks(lists: Sequence[Sequence[Generation]]) -> dict[str, int]:
    """Each prompt's place in the order all ``lists`` follow (each list is the plan's
    order with some generations left out, so together they fix the prompts' order)."""
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for gens in lists:
        ids = list(dict.fromkeys(g.prompt.id for g in gens))
        for before, after in itertools.pairwise(ids):
            sorter.add(after, before)
        for prompt_id in ids:
            sorter.add(prompt_id)
    return {prompt_id: i for i, prompt_id in enumerate(sorter.static_order())}


def order_seed(spec_hash: str) -> int:
    """The shuffle seed of a spec's rounds: fixed per spec, so a rerun keeps its order."""
    return int(spec_hash[:12] or "0", 16)
