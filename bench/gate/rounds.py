"""More interleaved rounds for a gate whose speed check is inconclusive from noise.

A speed check is INCONCLUSIVE when the candidate's median is beyond the factor but the
signed-rank test over the prompt/seed pairs is not significant: too few pairs, or pairs
that disagree. More pairs settle it either way, so before answering INCONCLUSIVE the
gate measures more: one more seed over every prompt at a time (``len(prompts) *
repeats`` rounds, each round the baseline and the candidate once, interleaved), while
the total stays within ``[gate] max_rounds``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bench.spec.sweep import SweepSpec


def speed_undecided(status: str, figures: Mapping[str, object]) -> bool:
    """True for a speed check that compared pairs and could not decide (not one that had
    nothing to compare: more of nothing decides nothing)."""
    return status == "INCONCLUSIVE" and "ratio" in figures


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
