"""More interleaved rounds for a gate with an undecided check, and looks within a round.

A check is undecided when its anytime interval (:mod:`bench.gate.anytime`) still holds
its threshold. The gate runs its prompts in stages of ``[gate] stage_prompts`` prompts
(each under every seed of the round, in a seeded shuffle of the prompt set) and looks
after each; it stops as soon as every check is decided or one FAILs. When a pass over
the prompts ends undecided, it adds one more seed over every prompt (``len(prompts) *
repeats`` rounds, each the baseline and the candidate once, interleaved) and goes on
looking, while the total stays within ``[gate] max_rounds``. The intervals are valid at
every look, so looking after each stage costs no error rate.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.gate.checks import Check
from bench.spec.adaptive import stage_batches
from bench.spec.sweep import SweepSpec


def undecided(checks: Sequence[Check]) -> bool:
    """True while more pairs may decide the gate: no check FAILed, and some check that
    compared pairs is INCONCLUSIVE (not one with nothing to compare: more of nothing
    decides nothing)."""
    if any(c.status == "FAIL" for c in checks):
        return False
    return any(c.status == "INCONCLUSIVE" and "n_pairs" in c.figures for c in checks)


def looks(prompt_ids: Sequence[str], stage_prompts: int, seed: int, round_: int
          ) -> list[tuple[str, ...]]:
    """The prompts of one pass cut into looks: a shuffle seeded by the gate's ``seed``
    and the pass, then ``stage_prompts`` prompts per look."""
    return stage_batches(prompt_ids, stage_prompts, stage_prompts, seed * 1000 + round_)


def rounds_per_seed(spec: SweepSpec, n_prompts: int) -> int:
    """Rounds one seed adds: every prompt, every repeat."""
    return n_prompts * spec.measure.repeats


def round_budget(spec: SweepSpec, n_prompts: int, max_rounds: int | None) -> int:
    """The most rounds the gate measures in all: ``max_rounds``, or by default three
    times what the spec plans."""
    planned = rounds_per_seed(spec, n_prompts) * len(spec.measure.seeds)
    return max_rounds if max_rounds is not None else 3 * planned


def next_seed(spec: SweepSpec, added: Sequence[int], n_prompts: int,
              max_rounds: int | None) -> int | None:
    """The next seed to measure, or None when one more would pass the budget."""
    seeds = [*spec.measure.seeds, *added]
    per_seed = rounds_per_seed(spec, n_prompts)
    if per_seed * (len(seeds) + 1) > round_budget(spec, n_prompts, max_rounds):
        return None
    return max(seeds) + 1
