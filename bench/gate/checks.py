"""The gate's checks of generations, speed and memory, each a PASS, FAIL or INCONCLUSIVE Check.

Speed follows asv's rule: a ratio threshold AND a one-sided Wilcoxon signed-rank test on the
per-pair log ratios. Memory compares resident weights plus the working peak with the card
less its headroom."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.analysis.cells import pair_keys
from bench.analysis.signed_rank import signed_rank_p_greater
from bench.gate.thresholds import GIB, GPU_MEMORY_GIB, GateThresholds
from bench.scoring.outcomes import column, no_speech, outcome
from bench.scoring.stats import bootstrap_ratio_replicates, percentile_interval

Status = Literal["PASS", "FAIL", "INCONCLUSIVE", "NOT_MEANINGFUL", "SKIPPED"]

EXIT_CODES: dict[str, int] = {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}


@dataclass(frozen=True)
class Check:
    """One figure's decision: ``summary`` is the one-line explanation with the figures;
    ``figures`` the numbers behind it (JSON-ready); ``n_needed`` the estimated number of
    prompts (quality) or pairs (speed) that would decide an INCONCLUSIVE check."""

    name: str
    status: Status
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)
    n_needed: int | None = None


def ok_rows(records: pd.DataFrame) -> pd.DataFrame:
    return records[column(records, "status") == "ok"]


def check_failures(baseline: pd.DataFrame, candidate: pd.DataFrame) -> Check:
    """A candidate generation with no speech (failed, NaN or silent audio:
    :mod:`bench.scoring.outcomes`) is a regression: a config that crashes, runs out of memory or
    says nothing is not faster."""
    cand_rows, base_rows = candidate.to_dict("records"), baseline.to_dict("records")
    cand, base = outcome(cand_rows), outcome(base_rows)
    figures = {"candidate_failed": cand.n_failed, "candidate_nan": cand.n_nan,
               "candidate_silent": cand.n_silent, "candidate_total": cand.n,
               "baseline_failed": base.n_failed, "baseline_nan": base.n_nan,
               "baseline_silent": base.n_silent, "baseline_total": base.n}
    if not len(candidate):
        return Check("generations", "FAIL", "the candidate has no records", figures)
    if cand.n_no_speech:
        parts = [f"{n} {what}" for n, what in ((cand.n_failed, "failed"), (cand.n_nan, "NaN"),
                                               (cand.n_silent, "silent")) if n]
        first = next((r for r in cand_rows if no_speech(r)), {})
        error = first.get("error") if first.get("status") != "ok" else None
        detail = f" (first: {error})" if error else ""
        return Check("generations", "FAIL", f"{cand.n_no_speech} of {cand.n} candidate "
                     f"generations produced no speech: {', '.join(parts)}{detail}", figures)
    extra = (f"; {base.n_no_speech} baseline generations produced no speech"
             if base.n_no_speech else "")
    return Check("generations", "PASS", f"all {cand.n} candidate generations "
                 f"completed with speech{extra}", figures)


def first_per_pair(records: pd.DataFrame, name: str) -> dict[tuple[str, int], float]:
    out: dict[tuple[str, int], float] = {}
    values = pd.to_numeric(column(records, name), errors="coerce")
    for key, value in zip(pair_keys(records), values, strict=True):
        if math.isfinite(value):
            out.setdefault(key, float(value))
    return out


def check_speed(base: pd.DataFrame, cand: pd.DataFrame, t: GateThresholds) -> Check:
    """Ratio of medians against ``speed_factor``, FAIL only when also significant."""
    metric = t.speed_metric
    a, b = _medians_per_pair(base, metric), _medians_per_pair(cand, metric)
    keys = sorted(set(a) & set(b), key=repr)
    if not keys:
        return Check("speed", "INCONCLUSIVE", f"no paired {metric} values to compare", {})
    x = np.array([a[k] for k in keys])
    y = np.array([b[k] for k in keys])
    base_median = float(np.median(_numbers(base, metric)))
    cand_median = float(np.median(_numbers(cand, metric)))
    ratio = cand_median / base_median
    log_excess = np.log(y / x) - math.log(t.speed_factor)
    p = signed_rank_p_greater(log_excess)
    clusters = [k[0] for k in keys]
    reps = bootstrap_ratio_replicates(np.stack([x, y], 1), np.ones((len(x), 2)), clusters,
                                      n_boot=t.n_boot, seed=t.seed)
    low, high = percentile_interval(reps[:, 1] / reps[:, 0])
    figures = {"metric": metric, "baseline_median": base_median,
               "candidate_median": cand_median, "ratio": ratio, "ratio_ci_low": low,
               "ratio_ci_high": high, "factor": t.speed_factor, "p_value": p,
               "alpha": t.alpha, "n_pairs": len(keys)}
    text = (f"median {metric} {cand_median:.4g} vs {base_median:.4g}: ratio {ratio:.3f} "
            f"(95% CI of mean ratio {low:.3f} … {high:.3f}), factor {t.speed_factor:g}, "
            f"signed-rank p={p:.3g} over {len(keys)} pairs")
    if ratio <= t.speed_factor:
        return Check("speed", "PASS", text, figures)
    if p < t.alpha:
        return Check("speed", "FAIL", f"{text}: slower beyond the factor", figures)
    # With n pairs the smallest possible one-sided p is 2^-n.
    floor = math.ceil(math.log2(1 / t.alpha))
    needed = floor if len(keys) < floor else None
    hint = (f"{len(keys)} pairs cannot reach p < {t.alpha}; >= {floor} needed" if needed
            else "not significant: likely noise; re-run with more repeats or prompts")
    return Check("speed", "INCONCLUSIVE", f"{text}; {hint}", figures, needed)


def _numbers(records: pd.DataFrame, name: str) -> npt.NDArray[np.float64]:
    values = pd.to_numeric(column(records, name), errors="coerce").to_numpy(np.float64)
    return values[np.isfinite(values) & (values > 0)]


def _medians_per_pair(records: pd.DataFrame, name: str) -> dict[tuple[str, int], float]:
    values = pd.to_numeric(column(records, name), errors="coerce")
    groups: dict[tuple[str, int], list[float]] = {}
    for key, value in zip(pair_keys(records), values, strict=True):
        if math.isfinite(value) and value > 0:
            groups.setdefault(key, []).append(float(value))
    return {k: float(np.median(v)) for k, v in groups.items()}


def memory_budget_bytes(gpu: str | None, t: GateThresholds) -> tuple[float | None, str]:
    """(usable bytes after the headroom, what the budget is), or (None, why not)."""
    if t.memory_budget_gb is not None:
        size, what = float(t.memory_budget_gb), f"{t.memory_budget_gb:g} GiB ([gate] budget)"
    elif gpu:
        card = gpu.split(":", 1)[0].upper()
        if card not in GPU_MEMORY_GIB:
            return None, f"unknown GPU {gpu!r}; set [gate] memory_budget_gb"
        size, what = GPU_MEMORY_GIB[card], f"{GPU_MEMORY_GIB[card]:g} GiB ({card})"
    else:
        return None, "no GPU named; set [deploy] gpu or [gate] memory_budget_gb"
    return size * GIB * (1 - t.memory_headroom), what


def _peak(records: pd.DataFrame) -> tuple[float | None, str]:
    needed = needed_bytes(records)
    if needed is not None:
        on_gpu = any(str(d).startswith("cuda") for d in column(records, "device").dropna())
        return needed, ("resident weights + working peak (CUDA)" if on_gpu else
                        "resident + working peak host RSS (CPU run, not GPU memory)")
    reserved = _numbers(records, "peak_reserved_bytes")
    if reserved.size:
        return float(reserved.max()), "peak reserved CUDA memory"
    rss = _numbers(records, "peak_rss_bytes")
    if rss.size:
        return float(rss.max()), "peak host RSS (CPU run, not GPU memory)"
    return None, ""


def needed_bytes(records: pd.DataFrame) -> float | None:
    """The most one generation needed: resident weights plus its working peak, each
    measured after what earlier cells left was freed (None for records without them)."""
    resident = pd.to_numeric(column(records, "weights_resident_bytes"), errors="coerce")
    working = pd.to_numeric(column(records, "working_peak_bytes"), errors="coerce")
    total = (resident + working).to_numpy(np.float64)
    total = total[np.isfinite(total)]
    return float(total.max()) if total.size else None


def check_memory(base: pd.DataFrame, cand: pd.DataFrame, t: GateThresholds) -> Check:
    """The candidate's peak memory within its GPU's budget less the headroom."""
    gpus = [g for g in column(cand, "gpu").dropna() if isinstance(g, str)]
    budget, what = memory_budget_bytes(gpus[0] if gpus else None, t)
    peak, kind = _peak(cand)
    base_peak, _ = _peak(base)
    if peak is None:
        return Check("memory", "SKIPPED", "no memory figures in the records", {})
    if budget is None:
        return Check("memory", "SKIPPED", f"{kind} {peak / GIB:.2f} GiB; no budget: {what}",
                     {"candidate_peak_bytes": peak, "kind": kind})
    figures = {"kind": kind, "candidate_peak_bytes": peak, "baseline_peak_bytes": base_peak,
               "budget_bytes": budget, "headroom": t.memory_headroom, "budget": what}
    was = f" (baseline {base_peak / GIB:.2f})" if base_peak is not None else ""
    text = (f"{kind} {peak / GIB:.2f} GiB{was} vs {budget / GIB:.2f} GiB usable of "
            f"{what} with {t.memory_headroom:.0%} headroom")
    return Check("memory", "PASS" if peak <= budget else "FAIL", text, figures)
