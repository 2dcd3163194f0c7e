"""Cluster bootstrap for ratio-of-sums statistics.

Every quality figure the harness reports is a ratio of sums over utterances:

* corpus WER = sum(errors) / sum(reference words),
* CER        = sum(character errors) / sum(reference characters),
* mean WER   = sum(per-utterance WER) / number of utterances scored.

So one routine covers them all: per-item numerators and denominators go in, and the
bootstrap resamples whole *clusters* (prompts) with replacement, so several seeds of one
prompt, which share its text and its difficulty, move together. Resampling counts are
drawn once per call and shared by every column, which is what makes a paired comparison
paired: column b minus column a is computed on the same resampled prompts.

The functions are generic (arrays in, intervals out) so the analysis and gate modules can
reuse them for other ratio statistics.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "Interval",
    "bootstrap_ratio_replicates",
    "cluster_codes",
    "percentile_interval",
    "ratio_interval",
    "ratio_of_sums",
    "resample_counts",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Upper bound on the elements of one block of resampling counts (n_boot x n_clusters), so
# that 1000 replicates over 100k prompts do not need 800 MB at once.
_MAX_BLOCK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval (same units as the statistic)."""

    estimate: float
    low: float
    high: float


def cluster_codes(cluster: Sequence[Hashable] | None, n: int) -> IntArray:
    """Integer codes 0..C-1 for cluster labels, in order of first appearance.

    Args:
        cluster: one label per item (e.g. the prompt id), or None for one cluster per item.
        n: number of items; must equal ``len(cluster)`` when labels are given.

    Returns:
        int64 array of shape [n].
    """
    if cluster is None:
        return np.arange(n, dtype=np.int64)
    if len(cluster) != n:
        raise ValueError(f"cluster has {len(cluster)} labels for {n} items")
    index: dict[Hashable, int] = {}
    return np.fromiter((index.setdefault(c, len(index)) for c in cluster), np.int64, n)


def ratio_of_sums(num: npt.ArrayLike, den: npt.ArrayLike) -> FloatArray:
    """Column-wise sum(num) / sum(den); NaN where the denominator sums to zero.

    Args:
        num, den: arrays of shape [n_items] or [n_items, k].

    Returns:
        float64 array of shape [] or [k].
    """
    n_sum = np.asarray(num, np.float64).sum(axis=0)
    d_sum = np.asarray(den, np.float64).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(d_sum > 0, n_sum / np.where(d_sum > 0, d_sum, 1.0), np.nan)


def resample_counts(n_clusters: int, n_boot: int, seed: int) -> FloatArray:
    """How often each cluster is drawn in each replicate, shape [n_boot, n_clusters]:
    the draws :func:`bootstrap_ratio_replicates` makes for this seed, for callers that
    compare many columns on one set of draws without holding them all at once."""
    rng = np.random.default_rng(seed)
    probs = np.full(n_clusters, 1.0 / n_clusters)
    return rng.multinomial(n_clusters, probs, size=n_boot).astype(np.float64)


def bootstrap_ratio_replicates(
    num: npt.ArrayLike,
    den: npt.ArrayLike,
    cluster: Sequence[Hashable] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    counts: FloatArray | None = None,
) -> FloatArray:
    """Bootstrap replicates of column-wise ratios of sums, resampling whole clusters.

    Each replicate draws as many clusters as there are, with replacement (multinomial
    counts), and evaluates sum(num) / sum(den) over the drawn clusters' items. All columns
    share the same draws, so differences between columns are paired.

    Args:
        num, den: per-item numerators and denominators, shape [n_items, k] (or [n_items]).
        cluster: cluster label per item (length n_items); None means every item is its
            own cluster.
        n_boot: number of replicates.
        seed: seed of the numpy Generator; a fixed seed gives identical replicates.
        counts: resampling counts from :func:`resample_counts` to use instead of drawing
            (shape [n_boot, n_clusters], clusters numbered as ``cluster_codes`` numbers
            them): comparisons made in separate calls then share their draws.

    Returns:
        float64 array [n_boot, k] (or [n_boot] for 1-D input); NaN where a replicate's
        denominator is zero.
    """
    num_a = np.asarray(num, np.float64)
    den_a = np.asarray(den, np.float64)
    if num_a.shape != den_a.shape:
        raise ValueError(f"num {num_a.shape} and den {den_a.shape} differ in shape")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if num_a.ndim not in (1, 2):
        raise ValueError(f"expected [n_items] or [n_items, k] arrays, got shape {num_a.shape}")
    one_d = num_a.ndim == 1
    num2 = num_a[:, None] if one_d else num_a
    den2 = den_a[:, None] if one_d else den_a
    n_items, k = num2.shape
    if n_items == 0:
        out = np.full((n_boot, k), np.nan)
        return out[:, 0] if one_d else out

    codes = cluster_codes(cluster, n_items)
    n_clusters = int(codes.max()) + 1 if counts is None else counts.shape[1]
    # Sum items within each cluster first: a replicate is then counts @ cluster sums.
    num_c = np.zeros((n_clusters, k))
    den_c = np.zeros((n_clusters, k))
    np.add.at(num_c, codes, num2)
    np.add.at(den_c, codes, den2)

    rng = np.random.default_rng(seed)
    probs = np.full(n_clusters, 1.0 / n_clusters)
    n_boot = n_boot if counts is None else counts.shape[0]
    block = max(1, _MAX_BLOCK_ELEMENTS // n_clusters) if counts is None else n_boot
    out = np.empty((n_boot, k))
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        drawn = (rng.multinomial(n_clusters, probs, size=stop - start).astype(np.float64)
                 if counts is None else counts)
        # One matrix-vector product per column rather than one matrix product: BLAS may
        # block a matrix product differently across columns, and identical columns must
        # give bit-identical replicates (a cell compared with itself differs by exactly 0).
        for j in range(k):
            n_sum = drawn @ num_c[:, j]
            d_sum = drawn @ den_c[:, j]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[start:stop, j] = np.where(
                    d_sum > 0, n_sum / np.where(d_sum > 0, d_sum, 1.0), np.nan
                )
    return out[:, 0] if one_d else out


def percentile_interval(replicates: npt.ArrayLike, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates, ignoring NaN replicates.

    Args:
        replicates: 1-D array of replicate values.
        level: coverage, e.g. 0.95 for the 2.5th and 97.5th percentiles.

    Returns:
        (low, high); (nan, nan) when every replicate is NaN.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    reps = np.asarray(replicates, np.float64)
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(reps, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def ratio_interval(
    num: npt.ArrayLike,
    den: npt.ArrayLike,
    cluster: Sequence[Hashable] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """sum(num) / sum(den) with a cluster-bootstrap percentile interval.

    For a mean of per-item values x (NaN items excluded), pass num = x (0 where NaN)
    and den = 1 (0 where NaN).

    Args:
        num, den: 1-D per-item numerators and denominators, shape [n_items].
        cluster: cluster label per item, or None for independent items.
        n_boot, seed, level: see `bootstrap_ratio_replicates` and `percentile_interval`.
    """
    estimate = float(ratio_of_sums(num, den))
    reps = bootstrap_ratio_replicates(num, den, cluster, n_boot=n_boot, seed=seed)
    low, high = percentile_interval(reps, level)
    return Interval(estimate, low, high)
