"""The sequential-decision core: confidence sequences for prompts drawn without
replacement, checked against what they promise (coverage at every look, simulated) and
what they must do exactly (close on the whole set, skip what was not run)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench.analysis.sequential import (
    SIGMA_BOUND_LEVEL,
    boundary,
    confidence_sequence,
    fixed_half_width,
    mixture_scale,
    prompts_needed,
)


def _looks(values: np.ndarray, den: np.ndarray, first: int = 6, every: int = 3
           ) -> tuple[np.ndarray, np.ndarray]:
    """One column per look: the first t values of the draw order, the rest not run."""
    n = len(values)
    ts = list(range(first, n + 1, every))
    num = np.full((n, len(ts)), np.nan)
    weights = np.full((n, len(ts)), np.nan)
    for j, t in enumerate(ts):
        num[:t, j], weights[:t, j] = values[:t], den[:t]
    return num, weights


def _population(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if kind == "normal":
        return rng.normal(0.1, 1.0, n), np.ones(n)
    if kind == "heavy":
        return rng.standard_t(3, n), np.ones(n)
    # Per-prompt word-error differences of two cells over prompts of 2-157 words with
    # heavy-tailed difficulty: a ratio of sums, as the corpus WER difference is.
    words = rng.integers(2, 158, n)
    p = np.clip(0.03 * rng.lognormal(0.0, 0.8, n), 0.0, 0.9)
    a = rng.binomial(words, p)
    b = rng.binomial(words, np.clip(1.3 * p, 0.0, 0.95))
    return (b - a).astype(float), words.astype(float)


@pytest.mark.parametrize("kind", ["normal", "heavy", "wer"])
@pytest.mark.parametrize("n", [40, 120])
def test_coverage_holds_at_every_look_where_a_fixed_interval_does_not(kind: str, n: int) -> None:
    rng = np.random.default_rng(7)
    reps, missed, naive_missed = 300, 0, 0
    for _ in range(reps):
        values, den = _population(kind, n, rng)
        truth = values.sum() / den.sum()
        order = rng.permutation(n)
        num, weights = _looks(values[order], den[order])
        seq = confidence_sequence(num, weights, n)
        missed += bool(((seq.low > truth + 1e-12) | (seq.high < truth - 1e-12)).any())
        # The same looks with an ordinary 95 % interval (finite-population corrected).
        t = seq.n.astype(float)
        half = 1.96 * seq.sd / (seq.den_mean * np.sqrt(t)) * np.sqrt(np.clip(1 - t / n, 0, 1))
        naive_missed += bool((np.abs(seq.estimate - truth) > half + 1e-12)[t < n].any())
    # Nominal 5 %: 300 sequences put a binomial's 99th percentile near 9 %.
    assert missed / reps <= 0.09, missed
    assert naive_missed / reps > 0.25, naive_missed  # looking often does break a fixed level


def test_the_whole_set_seen_gives_its_figure_exactly() -> None:
    rng = np.random.default_rng(1)
    num, den = rng.normal(size=(12, 3)), rng.integers(1, 9, size=(12, 3)).astype(float)
    seq = confidence_sequence(num, den, 12)
    exact = num.sum(axis=0) / den.sum(axis=0)
    assert seq.estimate == pytest.approx(exact)
    assert seq.low == pytest.approx(exact) and seq.high == pytest.approx(exact)
    assert list(seq.n) == [12, 12, 12]


def test_rows_not_run_are_left_out_and_a_finite_set_narrows_the_interval() -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(size=30)
    num = np.vstack([values[:, None], np.full((10, 1), np.nan)])  # 10 prompts not run
    den = np.vstack([np.ones((30, 1)), np.zeros((10, 1))])
    finite = confidence_sequence(num, den, 40)
    endless = confidence_sequence(num, den, None)
    assert finite.n[0] == endless.n[0] == 30
    assert finite.estimate[0] == pytest.approx(values.mean())
    assert endless.low[0] < finite.low[0] < finite.high[0] < endless.high[0]
    # A single prompt says nothing; no prompt gives no figure.
    one = confidence_sequence(np.array([[1.0], [np.nan]]), np.array([[1.0], [0.0]]), 40)
    assert one.low[0] == -math.inf and one.high[0] == math.inf
    none = confidence_sequence(np.array([[np.nan]]), np.array([[0.0]]), 40)
    assert math.isnan(none.estimate[0]) and none.n[0] == 0


def test_the_boundary_is_tightest_near_where_it_is_tuned() -> None:
    # Relative to sqrt(t) (a fixed-sample interval's growth), Robbins' boundary is
    # smallest near the t it is tuned for.
    ts = np.arange(2, 400)
    relative = boundary(ts, 0.95, 40.0) / np.sqrt(ts)
    assert 25 <= ts[int(np.argmin(relative))] <= 70
    u = mixture_scale(0.95)
    assert 2 * math.log(20) + math.log1p(1 / u) == pytest.approx(1 / u, rel=1e-6)


def test_prompts_needed_inverts_the_half_width() -> None:
    half = fixed_half_width(sd=3.0, den_mean=50.0, n=40)
    assert prompts_needed(3.0, 50.0, half) in (40, 41)
    assert prompts_needed(3.0, 50.0, half / 2) in (160, 161)  # half the width, 4x prompts
    assert fixed_half_width(3.0, 50.0, 1) == math.inf


def test_pooled_columns_share_one_noise_scale_and_a_noisier_one_keeps_its_own() -> None:
    rng = np.random.default_rng(11)
    num = rng.normal(0.0, 1.0, (3, 20))  # 20 cells, 3 draws each: two dof apiece
    den = np.ones_like(num)
    own = confidence_sequence(num, den, 40, 0.8)
    shared = confidence_sequence(num, den, 40, 0.8, pooled=True)
    assert np.allclose(shared.estimate, own.estimate)
    # Forty degrees of freedom bound sigma far tighter than two, for most cells.
    assert np.median((shared.high - shared.low) / (own.high - own.low)) < 0.8
    # A cell ten times noisier is never narrower than its own plug-in spread makes it
    # (its own interval less the chi-square inflation of two degrees of freedom), and
    # stays far wider than the rest.
    num[:, 0] = rng.normal(0.0, 10.0, 3)
    own = confidence_sequence(num, den, 40, 0.8)
    shared = confidence_sequence(num, den, 40, 0.8, pooled=True)
    inflation = np.sqrt(2.0 / stats.chi2.ppf(1.0 - SIGMA_BOUND_LEVEL, 2))
    widths = shared.high - shared.low
    assert widths[0] >= (own.high[0] - own.low[0]) / inflation * (1 - 1e-9)
    assert widths[0] > 3 * np.median(widths[1:])
