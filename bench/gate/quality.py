"""The gate's quality checks: non-inferiority of WER, CER, SIM and UTMOS.

Each is the paired difference of the candidate against the baseline over (prompt, seed)
pairs, on the anytime-valid interval of the sequential core (:mod:`bench.gate.anytime`),
so the gate may add rounds and look again: PASS when the whole interval of the loss lies
below the margin, FAIL when it lies above, otherwise INCONCLUSIVE with the prompts a
fixed-size test would need at 80 % power. Below ``min_prompts`` no quality decision is
made; random weights or a random ASR make quality NOT_MEANINGFUL (neither passed nor
failed).

UTMOS is a predicted mean opinion score (1-5, higher is better). Like SIM, the gate judges
the *loss* (baseline minus candidate) against ``[gate] utmos_margin`` on the same interval: the candidate passes when the whole interval of the
loss lies below the margin. Generations the metric skipped (``utmos`` missing, with a
``utmos_skipped`` reason) are left out of the pairs; a run with no UTMOS at all gets no
check rather than a fake one. Random weights are already reported by the WER check as
"not meaningful", so no naturalness check is added for them.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import pandas as pd

from bench.analysis.cells import pair_scores
from bench.analysis.evidence import quality_is_meaningful, scored_rows
from bench.analysis.sequential import paired_differences
from bench.gate.anytime import AnytimeCall, call
from bench.gate.checks import Check, compute_seconds, first_per_pair
from bench.gate.thresholds import GateThresholds
from bench.scoring.outcomes import column, has_scores

Pairs = list[tuple[str, int]]


def paired_mean_loss(base: pd.DataFrame, cand: pd.DataFrame, name: str, margin: float,
                     alpha: float) -> tuple[Pairs, AnytimeCall] | None:
    """The loss baseline - candidate of the mean of ``name`` (higher is better: SIM,
    UTMOS) over (prompt, seed) pairs scored on both sides, called against ``margin`` on
    the anytime interval; None when no pair is scored on both sides."""
    a = first_per_pair(base, name)
    b = first_per_pair(cand, name)
    keys = sorted(set(a) & set(b), key=repr)
    if not keys:
        return None
    # loss = base - cand: the candidate as "before", the baseline as "after".
    num, den = paired_differences([b[k] for k in keys], [a[k] for k in keys])
    return keys, call(num, den, margin, alpha)


def check_naturalness(base: pd.DataFrame, cand: pd.DataFrame, t: GateThresholds
                      ) -> list[Check]:
    """The UTMOS non-inferiority check, or none when UTMOS was not scored or the weights
    are random."""
    both = pd.concat([base, cand], ignore_index=True)
    if any(bool(v) is True for v in column(both, "random_weights").dropna()):
        return []
    return _mean_loss_check(base, cand, "utmos", "quality.utmos", "UTMOS loss",
                            t.utmos_margin, t)


def _mean_loss_check(base: pd.DataFrame, cand: pd.DataFrame, metric: str, name: str,
                     what: str, margin: float, t: GateThresholds) -> list[Check]:
    loss = paired_mean_loss(base, cand, metric, margin, t.alpha)
    if loss is None:
        return []
    keys, c = loss
    return [_non_inferiority(name, what, keys, c, 1.0, margin, t, "",
                             compute_seconds(base, cand, set(keys)))]


def _not_meaningful_reason(rows: pd.DataFrame) -> str:
    reasons = []
    if any(bool(v) is True for v in column(rows, "random_weights").dropna()):
        reasons.append("random weights")
    if any(bool(v) is True for v in column(rows, "asr_random").dropna()):
        reasons.append("random ASR")
    return ", ".join(reasons) or "marked not meaningful by the scorer"


def check_quality(base: pd.DataFrame, cand: pd.DataFrame, t: GateThresholds) -> list[Check]:
    """WER and CER non-inferiority (and speaker similarity when a ``sim`` column exists),
    each the paired difference candidate - baseline over (prompt, seed) pairs on the
    anytime interval (:mod:`bench.gate.anytime`): corpus WER as word errors over
    reference words, CER as character errors over reference characters.

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
    keys = sorted(set(a) & set(b), key=repr)
    spent = compute_seconds(base, cand, set(keys))
    checks = []
    for name, what, errors, size, margin in (
            ("quality.wer", "corpus WER", "word_errors", "ref_words", t.wer_margin),
            ("quality.cer", "CER", "char_errors", "ref_chars", t.cer_margin)):
        num, den = paired_differences([getattr(a[k], errors) for k in keys],
                                      [getattr(b[k], errors) for k in keys],
                                      [getattr(a[k], size) for k in keys])
        # Margins are in points: the interval of the fraction is judged at margin / 100.
        checks.append(_non_inferiority(name, what, keys, call(num, den, margin / 100, t.alpha),
                                       100.0, margin, t, "pts", spent))
    if "sim" in base.columns and "sim" in cand.columns:
        # Higher similarity is better: judged as the loss (baseline - candidate).
        checks += _mean_loss_check(base, cand, "sim", "quality.sim",
                                   "speaker similarity loss", t.sim_margin, t)
    return checks


def _non_inferiority(name: str, what: str, keys: Pairs, c: AnytimeCall, scale: float,
                     margin: float, t: GateThresholds, unit: str,
                     spent: float | None) -> Check:
    """Decide the candidate's loss (positive = worse) against ``margin`` from the anytime
    call ``c`` (in units of ``scale`` x the call's): FAIL beyond, PASS within, else
    INCONCLUSIVE; below ``min_prompts`` prompts, INCONCLUSIVE whatever the interval."""
    delta, low, high = c.estimate * scale, c.low * scale, c.high * scale
    n_prompts = len({p for p, _ in keys})
    level = 1 - 2 * t.alpha
    figures = {"delta": delta, "ci_low": low, "ci_high": high, "margin": margin,
               "n_prompts": n_prompts, "n_pairs": c.n, "level": level,
               "interval": "anytime", "compute_seconds": spent}
    text = (f"Δ {what} {delta:+.2f} {unit} (anytime {level:.0%} interval {low:+.2f} … "
            f"{high:+.2f}), margin +{margin:g} {unit}, {n_prompts} prompts").replace("  ", " ")
    if not all(map(math.isfinite, (delta, low, high))):
        if n_prompts < t.min_prompts:
            return Check(name, "INCONCLUSIVE", f"{text}; below min_prompts={t.min_prompts}",
                         figures, t.min_prompts)
        return Check(name, "INCONCLUSIVE", f"no defined {what} difference: {text}", figures)
    needed = prompts_needed(n_prompts, delta, low, high, margin)
    if n_prompts < t.min_prompts:
        n_needed = max(t.min_prompts, needed or 0)
        return Check(name, "INCONCLUSIVE", f"{text}; below min_prompts={t.min_prompts}, "
                     f"~{n_needed} prompts needed", figures, n_needed)
    if c.call == "PASS":
        return Check(name, "PASS", text, figures)
    if c.call == "FAIL":
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

    An interval's half-width shrinks like 1/sqrt(n). The side of the interval
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
