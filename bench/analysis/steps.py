"""Step changes between two runs of one cell, paired as the gate pairs them.

Two runs of a spec use the same prompts, seeds and repeats, so a generation in one run has
a twin in the other: the same text, the same noise. Comparing twins removes the spread
between prompts (a short prompt's RTF can be several times a long one's), which an
unpaired test of the pooled values cannot see past: a uniform 15 % slowdown over a mix of
short and long prompts hides in that spread.

Rule (asv's, both conditions): the paired ratio (the median over twins of after/before)
is beyond ``factor`` either way, AND the Wilcoxon
signed-rank test on the twins' log ratios says the change is not zero: two-sided p (twice
the smaller one-sided p) below ``alpha``. One test, always the same one.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np

from bench.analysis.signed_rank import signed_rank_p_greater


@dataclass(frozen=True)
class StepChange:
    """``ratio``: median over twins of after/before (> 1 slower); ``p_value`` two-sided;
    ``n_pairs`` twins compared; ``step`` "slower", "faster" or "" (no step)."""

    ratio: float
    p_value: float
    n_pairs: int
    step: str


NO_PAIRS = StepChange(math.nan, math.nan, 0, "")


def paired_step_change(before: Mapping[Hashable, float], after: Mapping[Hashable, float],
                       *, factor: float = 1.1, alpha: float = 0.05) -> StepChange:
    """Compare the figures of twin generations (same key: prompt, seed, repeat) of two
    runs. Keys present in one run only, and non-positive or missing figures, are left out."""
    keys = [k for k in before if k in after
            and _positive(before[k]) and _positive(after[k])]
    if not keys:
        return NO_PAIRS
    logs = np.log(np.array([after[k] / before[k] for k in keys], dtype=np.float64))
    ratio = float(np.exp(np.median(logs)))
    p = min(1.0, 2 * min(signed_rank_p_greater(logs), signed_rank_p_greater(-logs)))
    beyond = ratio > factor or ratio < 1 / factor
    step = ("slower" if ratio > 1 else "faster") if beyond and p < alpha else ""
    return StepChange(ratio, p, len(keys), step)


def _positive(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0
