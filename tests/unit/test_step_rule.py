"""The sequential step rule (bench.analysis.steps): twins of an unchanged sampler are no
step, a 15 % slowdown and +2 WER points are, noise is not called a step more often than
the stated error rate, and the without-replacement form closes on the full runs' figure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.analysis.steps import (
    PairedUnits,
    StepSizes,
    metric_step,
    paired,
    resolvable,
    step_changes,
)


def twins(rng: np.random.Generator, *, prompts: int = 24, seeds: int = 2,
          slowdown: float = 1.0, wer_plus: float = 0.0, noise: float = 0.03,
          flips: float = 0.1) -> PairedUnits:
    """Two nights of one cell: per-prompt RTF shared, ``noise`` per generation; word
    errors the same audio's on both nights except a ``flips`` share off by one (kernels
    are not bit-exact), plus ``wer_plus`` more errors per word tonight."""
    n = prompts * seeds
    factor = np.repeat(rng.lognormal(0.0, 0.4, prompts), seeds)
    words = np.repeat(rng.integers(5, 60, prompts), seeds).astype(float)
    before = rng.binomial(words.astype(int), 0.03).astype(float)
    flip = rng.choice([-1.0, 1.0], n) * (rng.random(n) < flips)
    after = np.maximum(0.0, before + flip) + rng.binomial(words.astype(int), wer_plus)
    return PairedUnits(
        rtf_before=factor * np.exp(rng.normal(0, noise, n)),
        rtf_after=factor * slowdown * np.exp(rng.normal(0, noise, n)),
        errors_before=before, errors_after=after, ref_words=words,
        cluster=tuple(f"p{k // seeds}" for k in range(n)))


def test_unchanged_twins_are_no_step_and_planted_steps_are_steps() -> None:
    rng = np.random.default_rng(0)
    same = step_changes(twins(rng))
    assert same["speed"].state == "none" and same["wer"].state == "none"
    assert same["speed"].n == 24  # prompts, each a draw of its two seeds
    slow = step_changes(twins(rng, slowdown=1.15))
    assert slow["speed"].state == "step" and slow["speed"].direction == "up"
    assert slow["speed"].estimate == pytest.approx(1.15, rel=0.03)
    worse = step_changes(twins(rng, wer_plus=0.02))
    assert worse["wer"].state == "step" and worse["speed"].state == "none"
    assert worse["wer"].size == pytest.approx(1.0)  # points, as stated


def test_noise_is_rarely_a_step_and_a_15pct_slowdown_usually_is() -> None:
    # The with-replacement form (history over complete runs): the question is whether the
    # sampler changed, so 5 % timing noise must stay under the stated 5 % error rate;
    # with the usual 3 % a 15 % slowdown is caught.
    rng = np.random.default_rng(1)
    steps = [step_changes(twins(rng, noise=0.05))["speed"].state == "step"
             for _ in range(200)]
    caught = [step_changes(twins(rng, slowdown=1.15))["speed"].state == "step"
              for _ in range(100)]
    assert np.mean(steps) <= 0.05
    assert np.mean(caught) >= 0.9


def test_without_replacement_closes_on_the_full_figure() -> None:
    units = twins(np.random.default_rng(2), slowdown=1.12)
    full = step_changes(units, n_population=24)["speed"]
    assert full.low == full.high == pytest.approx(full.estimate)
    ratio = math.exp(np.mean(np.log(units.rtf_after / units.rtf_before)))
    assert full.estimate == pytest.approx(ratio)
    assert full.state == "step"  # 12 % beyond the 10 % step, exactly


def test_sizes_are_stated_and_resolution_is_reported() -> None:
    units = twins(np.random.default_rng(3))
    out = step_changes(units, StepSizes(speed_factor=1.2, wer_points=0.5))
    assert out["speed"].size == pytest.approx(1.2) and out["wer"].size == pytest.approx(0.5)
    assert set(out) == {"speed", "wer"}  # no SIM or MOS in these runs
    assert 1.0 < resolvable(units, "speed") < 1.05
    assert 0.0 < resolvable(units, "wer") < 1.0


def test_dnsmos_is_a_metric_of_its_own_and_few_draws_can_be_held_open() -> None:
    units = twins(np.random.default_rng(4))
    n = len(units.rtf_before)
    mos = np.full(n, 3.9)
    out = step_changes(PairedUnits(
        rtf_before=units.rtf_before, rtf_after=units.rtf_after, mos_before=mos,
        mos_after=mos + 0.3, dnsmos_before=mos - 0.7, dnsmos_after=mos - 0.7))
    assert out["mos"].state == "step" and out["dnsmos"].state == "none"
    assert out["dnsmos"].size == pytest.approx(StepSizes().dnsmos)
    # Two twins, both exactly x2: a zero-width interval far beyond the size, but fewer
    # draws than a first batch at 95 % (6) never make a step; six such twins do.
    num, den = paired("speed", np.array([1.0, 2.0]), np.array([2.0, 4.0]))
    held = metric_step("speed", num, den)
    assert held is not None and held.state == "open" and held.estimate == pytest.approx(2.0)
    num, den = paired("speed", np.ones(6), np.full(6, 2.0))
    assert (step := metric_step("speed", num, den)) is not None and step.state == "step"
    assert metric_step("speed", *paired("speed", np.array([np.nan]), np.array([1.0]))) is None
