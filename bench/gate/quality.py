"""The gate's quality checks: non-inferiority of WER, CER, SIM and UTMOS.

Each is a paired, prompt-clustered bootstrap 95 % interval of the candidate's loss against
a margin: PASS when the whole interval lies below the margin, FAIL when it lies above,
otherwise INCONCLUSIVE with the prompts needed for a decision at 80 % power. Below
``min_prompts`` no quality decision is made; random weights or a random ASR make quality
NOT_MEANINGFUL (neither passed nor failed).

UTMOS is a predicted mean opinion score (1-5, higher is better). Like SIM, the gate judges
the *loss* (baseline minus candidate) against ``[gate] utmos_margin`` with a paired,
prompt-clustered bootstrap interval: the candidate passes when the whole interval of the
loss lies below the margin. Generations the metric skipped (``utmos`` missing, with a
``utmos_skipped`` reason) are left out of the pairs; a run with no UTMOS at all gets no
check rather than a fake one. Random weights are already reported by the WER check as
"not meaningful", so no naturalness check is added for them.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd

from bench.analysis.cells import pair_scores
from bench.analysis.evidence import quality_is_meaningful, scored_rows
from bench.gate.checks import (
    Check,
    first_per_pair,
)
from bench.gate.thresholds import GateThresholds
from bench.scoring.outcomes import column, has_scores
from bench.scoring.stats import bootstrap_ratio_replicates, percentile_interval
from bench.scoring.wer import paired_difference


def paired_mean_loss(base: pd.DataFrame, cand: pd.DataFrame, name: str, *, n_boot: int,
                     seed: int) -> tuple[int, float, float, float] | None:
    """(prompts, baseline - candidate mean of ``name``, 95 % CI) over (prompt, seed) pairs
    scored on both sides; None when no pair is."""
    a = first_per_pair(base, name)
    b = first_per_pair(cand, name)
    keys = sorted(set(a) & set(b), key=repr)
    if not keys:
        return None
    values = np.array([[a[k], b[k]] for k in keys])
    clusters = [k[0] for k in keys]
    reps = bootstrap_ratio_replicates(values, np.ones_like(values), clusters, n_boot=n_boot,
                                      seed=seed)
    low, high = percentile_interval(reps[:, 0] - reps[:, 1])
    return len(set(clusters)), float(values[:, 0].mean() - values[:, 1].mean()), low, high


def check_naturalness(base: pd.DataFrame, cand: pd.DataFrame, t: GateThresholds
                      ) -> list[Check]:
    """The UTMOS non-inferiority check, or none when UTMOS was not scored or the weights
    are random."""
    both = pd.concat([base, cand], ignore_index=True)
    if any(bool(v) is True for v in column(both, "random_weights").dropna()):
        return []
    loss = paired_mean_loss(base, cand, "utmos", n_boot=t.n_boot, seed=t.seed)
    if loss is None:
        return []
    n, delta, low, high = loss
    return [_non_inferiority("quality.utmos", "UTMOS loss", n, delta, low, high,
                             t.utmos_margin, t.min_prompts, "")]


def _not_meaningful_reason(rows: pd.DataFrame) -> str:
    reasons = []
    if any(bool(v) is True for v in column(rows, "random_weights").dropna()):
        reasons.append("random weights")
    if any(bool(v) is True for v in column(rows, "asr_random").dropna()):
        reasons.append("random ASR")
    return ", ".join(reasons) or "marked not meaningful by the scorer"


def check_quality(base: pd.DataFrame, cand: pd.DataFrame, t: GateThresholds) -> list[Check]:
    """WER and CER non-inferiority (and speaker similarity when a ``sim`` column exists).

    ``base``/``cand`` are every generation of each side: under the rule of
    :mod:`bench.scoring.outcomes` a failed, NaN or silent generation is an empty transcript."""
    both = pd.concat([base, cand], ignore_index=True)
    if any(bool(v) is True for v in column(both, "random_weights").dropna()) or (
            len(scored_rows(both)) and not quality_is_meaningful(scored_rows(both))):
        reason = _not_meaningful_reason(both)
        return [Check("quality", "NOT_MEANINGFUL", f"NOT MEANINGFUL ({reason})",
                      {"reason": reason})]
    scored = has_scores(both)
    a, b = pair_scores(base, scored=scored), pair_scores(cand, scored=scored)
    if not a or not b:
        return [Check("quality", "SKIPPED", "NOT SCORED (no transcripts; set [measure] "
                      "score = true)", {})]
    diff = paired_difference(a, b, n_boot=t.n_boot, seed=t.seed)
    checks = [
        _non_inferiority("quality.wer", "corpus WER", diff.n_clusters,
                         diff.delta_corpus_wer * 100, diff.ci_low * 100, diff.ci_high * 100,
                         t.wer_margin, t.min_prompts, "pts"),
        _non_inferiority("quality.cer", "CER", diff.n_clusters, diff.delta_cer * 100,
                         diff.delta_cer_ci[0] * 100, diff.delta_cer_ci[1] * 100,
                         t.cer_margin, t.min_prompts, "pts"),
    ]
    sim = _sim_difference(base, cand, t)
    if sim is not None:
        n, delta, low, high = sim
        # Higher similarity is better: judge the loss (baseline - candidate) instead.
        checks.append(_non_inferiority("quality.sim", "speaker similarity loss", n, -delta,
                                       -high, -low, t.sim_margin, t.min_prompts, ""))
    return checks


def _non_inferiority(name: str, what: str, n: int, delta: float, low: float, high: float,
                     margin: float, min_prompts: int, unit: str) -> Check:
    """Decide "candidate minus baseline" (positive = worse) against ``margin``."""
    figures = {"delta": delta, "ci_low": low, "ci_high": high, "margin": margin,
               "n_prompts": n, "level": 0.95}
    text = (f"Δ {what} {delta:+.2f} {unit} (95% CI {low:+.2f} … {high:+.2f}), margin "
            f"+{margin:g} {unit}, {n} prompts").replace("  ", " ")
    if not all(map(math.isfinite, (delta, low, high))):
        return Check(name, "INCONCLUSIVE", f"no defined {what} difference: {text}", figures)
    needed = prompts_needed(n, delta, low, high, margin)
    if n < min_prompts:
        n_needed = max(min_prompts, needed or 0)
        return Check(name, "INCONCLUSIVE", f"{text}; below min_prompts={min_prompts}, "
                     f"~{n_needed} prompts needed", figures, n_needed)
    if high < margin:
        return Check(name, "PASS", text, figures)
    if low > margin:
        return Check(name, "FAIL", f"{text}: clearly worse than the margin", figures)
    hint = (f"~{needed} prompts needed for {DECISION_POWER:.0%} power, if the estimate and "
            "the per-prompt spread hold" if needed is not None
            else "the estimate sits on the margin")
    return Check(name, "INCONCLUSIVE", f"{text}; {hint}", figures, needed)

#: Chance that a check re-run with the suggested number of prompts decides (PASS or FAIL),
#: if the true difference equals the estimate: the usual 80 %.
DECISION_POWER = 0.80


def prompts_needed(n: int, delta: float, low: float, high: float, margin: float,
                   power: float = DECISION_POWER, level: float = 0.95) -> int | None:
    """Prompts for the interval to clear the margin with probability ``power``, if the
    observed estimate and per-prompt spread hold.

    A bootstrap interval's half-width shrinks like 1/sqrt(n). The side of the interval
    facing the margin (``high - delta`` when the estimate is below it, ``delta - low``
    when above) is z_level x se; the margin must sit (z_level + z_power) standard errors
    from the estimate: n_needed = n x ((z_level + z_power) / z_level x half / gap)^2.
    (Without the z_power term the estimate is where a re-run decides half the time.)
    None when the estimate equals the margin (no sample size decides it).
    """
    gap = margin - delta
    if gap == 0:
        return None
    half = (high - delta) if gap > 0 else (delta - low)
    if half <= 0:
        return n
    z_level = NormalDist().inv_cdf(0.5 + level / 2)
    inflate = (z_level + NormalDist().inv_cdf(power)) / z_level
    # The epsilon keeps float noise (4.0000000001) from adding a prompt.
    return max(n, math.ceil(n * (inflate * half / abs(gap)) ** 2 - 1e-9))


def _sim_difference(base: pd.DataFrame, cand: pd.DataFrame, t: GateThresholds
                    ) -> tuple[int, float, float, float] | None:
    """(prompts, candidate - baseline mean similarity, 95 % CI) or None when not scored."""
    if "sim" not in base.columns or "sim" not in cand.columns:
        return None
    a = first_per_pair(base, "sim")
    b = first_per_pair(cand, "sim")
    keys = sorted(set(a) & set(b), key=repr)
    if not keys:
        return None
    num = np.array([[a[k], b[k]] for k in keys])
    clusters = [k[0] for k in keys]
    reps = bootstrap_ratio_replicates(num, np.ones_like(num), clusters, n_boot=t.n_boot,
                                      seed=t.seed)
    low, high = percentile_interval(reps[:, 1] - reps[:, 0])
    delta = float(num[:, 1].mean() - num[:, 0].mean())
    return len(set(clusters)), delta, low, high
