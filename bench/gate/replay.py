"""Simulated gates over constructed pairs with a known truth: how often the gate FAILs an
identical candidate, how often it catches a real regression, and how many pairs it
spends before its verdict (``echo-bench gate-replay``).

No model runs. Each simulated gate draws a prompt set like the gate's (prompt lengths
2-157 words, log-uniform, as in the weekly set), a per-prompt speed factor both sides
share (short prompts pay fixed costs over little speech), about 3 % timing noise per
generation, and a heavy-tailed per-prompt difficulty for word errors (a few prompts, names
and numbers, carry most errors). Baseline and candidate make different audio (a
different config), so their word errors are drawn independently from their own rates.

The gate is then looked at exactly as :func:`bench.gate.run_gate.run_gate` looks: passes
over the prompt set in a shuffled order, the planned seeds in the first pass and one more
seed per later pass while undecided, a look every ``stage_prompts`` prompts, the same
anytime calls (:func:`bench.gate.anytime.calls`) for speed and corpus WER against the
same thresholds, ``min_prompts`` before any quality call, and a candidate generation
without speech FAILing the gate on the spot. CER, SIM, UTMOS and memory are not
simulated. All gates of a case are columns of one array, so 200 gates cost a few
vectorised calls per look.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.gate.anytime import QUALITY_TIGHT_AT, SPEED_TIGHT_AT, calls
from bench.gate.thresholds import GateThresholds

FloatArray = npt.NDArray[np.float64]

#: Timing noise of one generation (log scale), as repeated GPU timings show (~3 %).
SPEED_NOISE = 0.03
#: Baseline word-error probability before the per-prompt difficulty (mean ~3 % WER).
BASE_ERROR = 0.02


@dataclass(frozen=True)
class Case:
    """A candidate's truth: ``slowdown`` (ratio of its compute time to the baseline's),
    ``wer_plus`` (word-error probability added on every prompt: 0.015 = +1.5 points),
    ``fail_share`` (share of prompts on which it produces no speech)."""

    name: str
    slowdown: float = 1.0
    wer_plus: float = 0.0
    fail_share: float = 0.0


CASES: tuple[Case, ...] = (
    Case("identical"),
    Case("slower-5pct", slowdown=1.05),
    Case("slower-2x", slowdown=2.0),
    Case("wer-plus-1.5", wer_plus=0.015),
    Case("fails-tenth", fail_share=0.1),
)


@dataclass(frozen=True)
class Design:
    """The gate being simulated: its prompt count, planned seeds and thresholds (whose
    ``max_rounds``, ``stage_prompts`` and ``min_prompts`` shape the looks)."""

    n_prompts: int = 69
    seeds: int = 2
    thresholds: GateThresholds = field(default_factory=lambda: GateThresholds(min_prompts=20))

    @property
    def budget_seeds(self) -> int:
        """Seeds the gate may measure in all: as :func:`bench.gate.rounds.next_seed` adds
        them, whole seeds within ``max_rounds`` (default three times the plan)."""
        planned = self.n_prompts * self.seeds
        budget = self.thresholds.max_rounds or 3 * planned
        return max(self.seeds, budget // self.n_prompts)


@dataclass(frozen=True)
class CaseResult:
    """Over ``gates`` simulated gates: the share that FAILed, PASSed (the rest ended
    INCONCLUSIVE at the budget), the median and 90th percentile of pairs run before the
    verdict, and the median compute seconds (both sides) spent."""

    name: str
    gates: int
    fail_rate: float
    pass_rate: float
    inconclusive_rate: float
    median_pairs: float
    p90_pairs: float
    median_compute_seconds: float


def simulate(case: Case, gates: int, seed: int, design: Design | None = None) -> CaseResult:
    """``gates`` gates of ``case`` (generator ``seed``), looked at as the real gate looks."""
    design = design or Design()
    rng = np.random.default_rng(seed)
    world = _draw(case, gates, rng, design)
    t = design.thresholds
    stops = np.zeros(gates, dtype=np.int64)  # pairs run when decided (0: not yet)
    verdict = np.zeros(gates, dtype=np.int64)  # +1 FAIL, -1 PASS, 0 INCONCLUSIVE
    first_dead = _first_true(world["dead"])
    for end, prompts_seen in _looks(design):
        open_ = stops == 0
        if not open_.any():
            break
        dead = open_ & (first_dead < end)
        speed, *_ = calls(world["log_ratio"][:end], np.ones((end, gates)),
                          math.log(t.speed_factor), t.alpha, SPEED_TIGHT_AT)
        if prompts_seen >= t.min_prompts:
            wer, *_ = calls(world["err_diff"][:end], world["words"][:end],
                            t.wer_margin / 100, t.alpha, QUALITY_TIGHT_AT)
        else:
            wer = np.zeros(gates, dtype=np.int64)
        fail = dead | (speed > 0) | (wer > 0)
        passed = ~fail & (speed < 0) & (wer < 0)
        # A failed generation FAILs the gate at the look that ran it.
        decided = open_ & (fail | passed)
        verdict[decided] = np.where(fail[decided], 1, -1)
        stops[decided] = end
    total = world["log_ratio"].shape[0]
    stops[stops == 0] = total
    spent = np.cumsum(world["seconds"], axis=0)[stops - 1, np.arange(gates)]
    return CaseResult(case.name, gates, float(np.mean(verdict > 0)),
                      float(np.mean(verdict < 0)), float(np.mean(verdict == 0)),
                      float(np.median(stops)), float(np.percentile(stops, 90)),
                      float(np.median(spent)))


def replay(gates: int, seed: int, design: Design | None = None,
           cases: tuple[Case, ...] = CASES) -> list[CaseResult]:
    """Every case, each from its own generator seed (``seed`` + its index)."""
    return [simulate(c, gates, seed + k, design) for k, c in enumerate(cases)]


def to_json(results: list[CaseResult], design: Design, seed: int) -> dict[str, Any]:
    """The ``--json`` object: ``cases`` (one entry per case) and the design simulated."""
    t = design.thresholds
    return {"cases": [asdict(r) for r in results], "seed": seed,
            "design": {"prompts": design.n_prompts, "seeds": design.seeds,
                       "budget_seeds": design.budget_seeds, "stage_prompts": t.stage_prompts,
                       "min_prompts": t.min_prompts, "speed_factor": t.speed_factor,
                       "wer_margin_points": t.wer_margin, "alpha": t.alpha}}


def _looks(design: Design) -> list[tuple[int, int]]:
    """(pairs run, distinct prompts seen) at each look: pass 0 runs the planned seeds
    over every prompt, each later pass one seed; a look every ``stage_prompts`` prompts."""
    step, n = design.thresholds.stage_prompts, design.n_prompts
    out, done = [], 0
    for seeds in [design.seeds] + [1] * (design.budget_seeds - design.seeds):
        for start in range(0, n, step):
            size = min(step, n - start)
            out.append((done + seeds * (start + size), n if done else start + size))
        done += seeds * n
    return out


def _draw(case: Case, gates: int, rng: np.random.Generator, design: Design
          ) -> dict[str, npt.NDArray[Any]]:
    """Per-pair arrays (pairs in run order x gates): candidate/baseline log ratio,
    word-error difference, reference words, both sides' compute seconds, and whether
    the candidate's generation produced no speech."""
    n = design.n_prompts
    words = np.exp(rng.uniform(math.log(2), math.log(157), (n, gates))).round()
    speech = 0.4 * words + 0.5  # seconds of speech
    factor = rng.lognormal(0.0, 0.3, (n, gates))  # per-prompt RTF factor, both sides
    difficulty = rng.lognormal(0.0, 1.0, (n, gates))  # heavy-tailed per prompt
    p_base = np.minimum(0.9, BASE_ERROR * difficulty)
    p_cand = np.minimum(0.95, p_base + case.wer_plus)
    broken = rng.random((n, gates)) < case.fail_share
    passes = [design.seeds] + [1] * (design.budget_seeds - design.seeds)
    rows: list[npt.NDArray[np.int64]] = []
    for seeds in passes:
        order = np.argsort(rng.random((n, gates)), axis=0)  # a shuffle per gate and pass
        # Stage by stage, each prompt under every seed of the pass: prompt-major rows.
        rows.extend(order[k] for k in range(n) for _ in range(seeds))
    idx = np.stack(rows)  # (pairs, gates): the prompt of each pair
    cols = np.broadcast_to(np.arange(gates), idx.shape)
    w = words[idx, cols]
    base_rtf = factor[idx, cols] * np.exp(rng.normal(0.0, SPEED_NOISE, idx.shape))
    cand_rtf = (factor[idx, cols] * case.slowdown
                * np.exp(rng.normal(0.0, SPEED_NOISE, idx.shape)))
    dead = broken[idx, cols]
    err_base = rng.binomial(w.astype(np.int64), p_base[idx, cols])
    err_cand = np.where(dead, w, rng.binomial(w.astype(np.int64), p_cand[idx, cols]))
    seconds = (base_rtf + cand_rtf) * speech[idx, cols]
    return {"log_ratio": np.log(cand_rtf / base_rtf), "err_diff": (err_cand - err_base
                                                                    ).astype(np.float64),
            "words": w, "seconds": seconds, "dead": dead}


def _first_true(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """Per column, the row of the first True (the number of rows when none)."""
    any_ = mask.any(axis=0)
    return np.where(any_, mask.argmax(axis=0), mask.shape[0]).astype(np.int64)
