"""The Wilcoxon signed-rank test, one-sided, exact for small samples: the paired test of the
CI gate's speed check and of history's step changes (one implementation, no optional
install deciding which test runs).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt


def signed_rank_p_greater(d: npt.ArrayLike) -> float:
    """One-sided Wilcoxon signed-rank p-value for "the median of ``d`` is above 0".

    Zeros are dropped (Wilcoxon's convention); ties share average ranks. Exact for up to
    200 non-zero values (the null distribution of the positive rank sum by dynamic
    programming over doubled ranks, which are integers even with ties), else the normal
    approximation with tie and continuity corrections.
    """
    values = np.asarray(d, np.float64)
    values = values[np.isfinite(values) & (values != 0)]
    n = values.size
    if n == 0:
        return 1.0
    ranks = _average_ranks(np.abs(values))
    w_plus = float(ranks[values > 0].sum())
    if n <= 200:
        doubled = np.rint(2 * ranks).astype(np.int64)
        dist = np.zeros(int(doubled.sum()) + 1)
        dist[0] = 1.0
        for r in doubled:  # each rank joins the positive sum with probability 1/2
            shifted = np.zeros_like(dist)
            shifted[r:] = dist[:-r]
            dist = 0.5 * (dist + shifted)
        return float(min(1.0, dist[round(2 * w_plus):].sum()))
    _, counts = np.unique(np.abs(values), return_counts=True)
    mean = n * (n + 1) / 4
    var = n * (n + 1) * (2 * n + 1) / 24 - float((counts**3 - counts).sum()) / 48
    z = (w_plus - mean - 0.5) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))


def _average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks, ties getting the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size)
    sorted_values = values[order]
    start = 0
    while start < values.size:
        stop = start
        while stop + 1 < values.size and sorted_values[stop + 1] == sorted_values[start]:
            stop += 1
        ranks[order[start:stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    return ranks
