"""The small additions to the sequential core: paired units as num/den, and which side
of a threshold an interval lies on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.analysis.sequential import (
    confidence_sequence,
    paired_differences,
    paired_log_ratios,
    side_of,
)


def test_paired_units_become_num_and_den() -> None:
    num, den = paired_log_ratios([1.0, 2.0, math.nan, 0.0], [2.0, 2.0, 1.0, 1.0])
    assert num[:2] == pytest.approx([math.log(2), 0.0]) and list(den) == [1, 1, 0, 0]
    num, den = paired_differences([1, 2, 3], [4, 2, math.nan], [10, 20, 30])
    assert list(num) == [3, 0, 0] and list(den) == [10, 20, 0]
    iv = confidence_sequence(num[:, None], den[:, None], None)
    assert iv.estimate[0] == pytest.approx(3 / 30)  # a difference of corpus rates


def test_side_of_a_threshold() -> None:
    rng = np.random.default_rng(0)
    clear = rng.normal(1.0, 0.1, (40, 1))
    both = np.hstack([clear, -clear, rng.normal(0.0, 1.0, (40, 1))])
    iv = confidence_sequence(both, np.ones_like(both), None)
    assert list(side_of(iv, 0.0)) == [1, -1, 0]
    empty = confidence_sequence(np.zeros((0, 1)), np.zeros((0, 1)), None)
    assert list(side_of(empty, 0.0)) == [0]  # no interval yet: undecided
