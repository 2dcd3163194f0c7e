"""Cluster bootstrap of ratio-of-sums statistics."""

from __future__ import annotations

import numpy as np
import pytest

from bench.scoring import stats
from bench.scoring.stats import (
    bootstrap_ratio_replicates,
    cluster_codes,
    percentile_interval,
    ratio_interval,
    ratio_of_sums,
)


def _cell(
    n_prompts: int, seeds: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Word errors and reference words of n_prompts x seeds utterances."""
    rng = np.random.default_rng(seed)
    words = np.repeat(rng.integers(5, 30, n_prompts), seeds).astype(float)
    errors = rng.binomial(words.astype(int), 0.08).astype(float)
    cluster = [f"p{i // seeds}" for i in range(n_prompts * seeds)]
    return errors, words, cluster


def test_cluster_codes() -> None:
    assert cluster_codes(["b", "a", "b", "c"], 4).tolist() == [0, 1, 0, 2]
    assert cluster_codes(None, 3).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="labels"):
        cluster_codes(["a"], 2)


def test_ratio_of_sums() -> None:
    assert ratio_of_sums([1, 2], [10, 10]) == pytest.approx(0.15)
    assert np.isnan(ratio_of_sums([1.0], [0.0]))
    assert ratio_of_sums([[1, 0], [1, 2]], [[2, 1], [2, 1]]).tolist() == [0.5, 1.0]


def test_interval_contains_estimate_and_is_deterministic() -> None:
    errors, words, cluster = _cell(50)
    a = ratio_interval(errors, words, cluster, n_boot=500, seed=3)
    assert a.estimate == pytest.approx(errors.sum() / words.sum())
    assert a.low < a.estimate < a.high
    assert ratio_interval(errors, words, cluster, n_boot=500, seed=3) == a
    assert ratio_interval(errors, words, cluster, n_boot=500, seed=4) != a


def test_interval_shrinks_with_more_prompts() -> None:
    small = ratio_interval(*_cell(20), n_boot=1000)
    large = ratio_interval(*_cell(320), n_boot=1000)
    # Width goes as 1/sqrt(prompts): 16x the prompts, about a quarter of the width.
    assert (large.high - large.low) < 0.5 * (small.high - small.low)


def test_clusters_move_together() -> None:
    # Two identical seeds per prompt: resampling utterances independently would pretend
    # there are twice as many independent observations and give a narrower interval.
    errors, words, _ = _cell(60, seeds=1)
    errors, words = np.repeat(errors, 2), np.repeat(words, 2)
    cluster = [i // 2 for i in range(120)]
    by_prompt = ratio_interval(errors, words, cluster, n_boot=2000)
    by_item = ratio_interval(errors, words, None, n_boot=2000)
    assert (by_item.high - by_item.low) < (by_prompt.high - by_prompt.low)


def test_columns_share_draws_so_identical_columns_are_identical() -> None:
    errors, words, cluster = _cell(40)
    num = np.stack([errors, errors, errors * 2], axis=1)
    den = np.stack([words, words, words], axis=1)
    reps = bootstrap_ratio_replicates(num, den, cluster, n_boot=300)
    assert reps.shape == (300, 3)
    assert np.array_equal(reps[:, 0], reps[:, 1])
    np.testing.assert_allclose(reps[:, 2], 2 * reps[:, 0])


def test_blocking_does_not_change_replicates(monkeypatch: pytest.MonkeyPatch) -> None:
    errors, words, cluster = _cell(30)
    whole = bootstrap_ratio_replicates(errors, words, cluster, n_boot=100, seed=1)
    monkeypatch.setattr(stats, "_MAX_BLOCK_ELEMENTS", 7 * 30)  # blocks of 7 replicates
    blocked = bootstrap_ratio_replicates(errors, words, cluster, n_boot=100, seed=1)
    np.testing.assert_array_equal(whole, blocked)


def test_degenerate_inputs() -> None:
    empty = ratio_interval([], [], n_boot=10)
    assert np.isnan(empty.estimate) and np.isnan(empty.low) and np.isnan(empty.high)
    # A replicate whose denominator is zero is NaN and left out of the percentiles.
    reps = bootstrap_ratio_replicates([1.0, 1.0], [0.0, 2.0], n_boot=200)
    assert np.isnan(reps).any() and not np.isnan(reps).all()
    low, high = percentile_interval(reps)
    assert 0.0 <= low <= high <= 1.0
    assert np.isnan(percentile_interval([np.nan, np.nan])).all()
    with pytest.raises(ValueError, match="shape"):
        bootstrap_ratio_replicates([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ratio_replicates([1.0], [1.0], n_boot=0)
    with pytest.raises(ValueError, match="level"):
        percentile_interval([1.0], level=1.0)
