"""The Wilcoxon signed-rank test, one-sided, exact for small samples: the paired test of the
CI gate's speed check and of history's step changes (one implementation, no optional
install deciding which test runs).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt


def signed_rank_p_greater(d: npt.ArrayLike) -> float:
    """One-sided Wilcoxon signed-rank p-value for "the median of ``d`` is above 0".

    Zeros are dropped (Wilcoxon's convention); ties share average ranks. Exact for up to
    200 non-zero values (the null distribution of the positive rank sum by dynamic
    programming over doubled ranks, which are integers even with ties), else the normal
    approximation with tie and continuity corrections.
    """
    return _tails(d)[0]


def signed_rank_p_two_sided(d: npt.ArrayLike) -> float:
    """Two-sided p: twice the smaller one-sided p (capped at 1), from one pass."""
    greater, less = _tails(d)
    return min(1.0, 2 * min(greater, less))


def _tails(d: npt.ArrayLike) -> tuple[float, float]:
    """(p for "median above 0", p for "median below 0")."""
    values = np.asarray(d, np.float64)
    values = values[np.isfinite(values) & (values != 0)]
    n = values.size
    if n == 0:
        return 1.0, 1.0
    ranks = _average_ranks(np.abs(values))
    w_plus = float(ranks[values > 0].sum())
    w_minus = float(ranks.sum()) - w_plus
    if n <= 200:
        doubled = np.sort(np.rint(2 * ranks).astype(np.int64))
        dist = _null_distribution(doubled.tobytes())
        # By symmetry of the null, P(W- >= w-) is the lower tail of W+.
        return (float(min(1.0, dist[round(2 * w_plus):].sum())),
                float(min(1.0, dist[round(2 * w_minus):].sum())))
    _, counts = np.unique(np.abs(values), return_counts=True)
    mean = n * (n + 1) / 4
    var = n * (n + 1) * (2 * n + 1) / 24 - float((counts**3 - counts).sum()) / 48

    def upper(w: float) -> float:
        return 0.5 * math.erfc((w - mean - 0.5) / math.sqrt(2 * var))

    return upper(w_plus), upper(w_minus)


@lru_cache(maxsize=4096)
def _null_distribution(doubled_ranks: bytes) -> npt.NDArray[np.float64]:
    """P(2 W+ = k) under the null for these doubled ranks (sorted int64 bytes).

    Cached: without ties the ranks of n values are always 1..n, so history over hundreds
    of nights and cells needs a handful of distributions, not one per comparison.
    """
    doubled = np.frombuffer(doubled_ranks, dtype=np.int64)
    dist = np.zeros(int(doubled.sum()) + 1)
    dist[0] = 1.0
    for r in doubled:  # each rank joins the positive sum with probability 1/2
        shifted = np.zeros_like(dist)
        shifted[r:] = dist[:-r]
        dist = 0.5 * (dist + shifted)
    dist.setflags(write=False)
    return dist


def _average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks, ties getting the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # the rank of each distinct value's last copy
    return ((last - counts + 1 + last) / 2.0)[inverse.reshape(-1)]
