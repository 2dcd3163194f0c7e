"""The gate's decisions on the sequential core (:mod:`bench.analysis.sequential`): one
rule for speed and quality, valid however often the gate looks.

A gate adds rounds while a check is undecided, and looks after each. A fixed-level test
repeated after every round errs more often than its level (each look is another chance);
the intervals here are confidence sequences, so the chance that *any* look ends in a
wrong FAIL stays within ``alpha`` however many rounds are added.

What the population is, and why the with-replacement form: the gate asks about the
sampler, not about the seeds it happened to draw. Its figure is the candidate's expected
loss on the gate's prompt set, averaged over seeds, and seeds are an unbounded population
(a new seed is new noise). The prompt set within a seed is finite, and the gate uses that
in its *order*: each pass over a seed visits every prompt once, in a seeded shuffle, so a
batch's prompts are a sample without replacement of the set. The without-replacement
interval, though, is about the realized figure of the pairs drawn: at the end of a pass
it closes on that pass's figure, noise included, and a gate deciding on it would call
timing noise a regression. So the intervals are the with-replacement form
(``n_population=None``) over (prompt, seed) pairs, which stays valid, and conservative,
when the prompts of a pass are drawn without replacement (sampling without replacement
concentrates at least as well: Hoeffding 1963, section 6); ``echo-bench gate-replay``
checks the error rate by simulation.

Each call is one-sided: FAIL when the whole interval lies beyond the threshold, PASS when
it lies within, otherwise undecided. The two-sided sequence at 1 - 2 alpha makes each
side's error at most alpha.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from bench.analysis.sequential import confidence_sequence, side_of

#: Pairs at which each check's boundary is tightest (Robbins' mixture trades early width
#: for late): speed decides a clear regression within a few looks; a corpus WER
#: difference against a half-point margin needs a hundred pairs or more. Tuned on
#: ``echo-bench gate-replay`` with generator seeds 1 and 2 (reported on others).
SPEED_TIGHT_AT = 20.0
QUALITY_TIGHT_AT = 150.0

Call = Literal["PASS", "FAIL", "OPEN"]


@dataclass(frozen=True)
class AnytimeCall:
    """One check's call at one look: ``estimate`` and the interval (``low``, ``high``) of
    the candidate's loss in the check's units, ``n`` the pairs it rests on, and ``call``:
    FAIL (beyond the threshold), PASS (within it) or OPEN (undecided)."""

    call: Call
    estimate: float
    low: float
    high: float
    n: int


def calls(num: npt.ArrayLike, den: npt.ArrayLike, threshold: float, alpha: float,
          tight_at: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64],
                     npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Vectorised over columns (one column per simulated gate in a replay): per column
    +1 FAIL, -1 PASS, 0 open, and the estimate, low, high and pairs of the loss
    sum(num) / sum(den) over the pairs so far (rows: pairs, not-run rows with den 0)."""
    iv = confidence_sequence(num, den, None, 1.0 - 2.0 * alpha, tight_at)
    return side_of(iv, threshold), iv.estimate, iv.low, iv.high, iv.n


def call(num: npt.ArrayLike, den: npt.ArrayLike, threshold: float, alpha: float,
         tight_at: float = QUALITY_TIGHT_AT) -> AnytimeCall:
    """:func:`calls` for one check (one column)."""
    side, est, low, high, n = calls(np.reshape(np.asarray(num, dtype=np.float64), (-1, 1)),
                                    np.reshape(np.asarray(den, dtype=np.float64), (-1, 1)),
                                    threshold, alpha, tight_at)
    word: Call = "FAIL" if side[0] > 0 else "PASS" if side[0] < 0 else "OPEN"
    return AnytimeCall(word, float(est[0]), float(low[0]), float(high[0]), int(n[0]))
