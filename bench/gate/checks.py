"""The gate's checks of generations, speed and memory, each a PASS, FAIL or INCONCLUSIVE Check.

Speed is the paired log ratio against the factor on an anytime-valid interval
(:mod:`bench.gate.anytime`), so the gate may add rounds and look again. Memory compares resident weights plus the working peak with the card
less its headroom."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.analysis.cells import pair_keys
from bench.analysis.sequential import paired_log_ratios, prompts_needed
from bench.gate.anytime import SPEED_TIGHT_AT, call
from bench.gate.thresholds import GIB, GPU_MEMORY_GIB, GateThresholds
from bench.scoring.outcomes import column, no_speech, outcome

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
    """The paired log ratio candidate/baseline of ``speed_metric`` (per prompt/seed pair,
    the median over repeats) against log(``speed_factor``), on an anytime-valid interval
    (:mod:`bench.gate.anytime`): FAIL when the whole interval is beyond the factor, PASS
    when within it, otherwise INCONCLUSIVE (the gate adds rounds while it may)."""
    metric = t.speed_metric
    a, b = _medians_per_pair(base, metric), _medians_per_pair(cand, metric)
    keys = sorted(set(a) & set(b), key=repr)
    if not keys:
        return Check("speed", "INCONCLUSIVE", f"no paired {metric} values to compare", {})
    num, den = paired_log_ratios([a[k] for k in keys], [b[k] for k in keys])
    verdict = call(num, den, math.log(t.speed_factor), t.alpha, SPEED_TIGHT_AT)
    base_median = float(np.median(_numbers(base, metric)))
    cand_median = float(np.median(_numbers(cand, metric)))
    ratio, low, high = (math.exp(v) for v in (verdict.estimate, verdict.low, verdict.high))
    figures = {"metric": metric, "baseline_median": base_median,
               "candidate_median": cand_median, "ratio": ratio, "ratio_ci_low": low,
               "ratio_ci_high": high, "factor": t.speed_factor, "alpha": t.alpha,
               "interval": "anytime", "n_pairs": verdict.n,
               "compute_seconds": compute_seconds(base, cand, set(keys))}
    text = (f"paired {metric} ratio {ratio:.3f} (anytime {1 - 2 * t.alpha:.0%} interval "
            f"{low:.3f} … {high:.3f}) over {verdict.n} pairs, factor {t.speed_factor:g}; "
            f"median {cand_median:.4g} vs {base_median:.4g}")
    if verdict.call == "PASS":
        return Check("speed", "PASS", text, figures)
    if verdict.call == "FAIL":
        return Check("speed", "FAIL", f"{text}: slower beyond the factor", figures)
    sd = float(np.std(num[den > 0], ddof=1)) if verdict.n > 1 else math.nan
    gap = abs(verdict.estimate - math.log(t.speed_factor))
    needed = prompts_needed(sd, 1.0, gap, 1 - 2 * t.alpha) if math.isfinite(sd) and gap > 0 else None
    needed = max(needed, verdict.n + 1) if needed else None
    hint = (f"undecided: ~{needed} pairs would settle it if the estimate and spread hold"
            if needed else "undecided: the estimate sits on the factor")
    return Check("speed", "INCONCLUSIVE", f"{text}; {hint}", figures, needed)


def compute_seconds(base: pd.DataFrame, cand: pd.DataFrame,
                    pairs: set[tuple[str, int]]) -> float | None:
    """Compute seconds both sides spent on ``pairs`` (every repeat; ``t_total``, else
    ``wall_seconds``): what the check cost. None when the records carry no timing."""
    total, seen = 0.0, False
    for rows in (base, cand):
        name = "t_total" if "t_total" in rows.columns else "wall_seconds"
        values = pd.to_numeric(column(rows, name), errors="coerce")
        for key, value in zip(pair_keys(rows), values, strict=True):
            if key in pairs and math.isfinite(value):
                total += float(value)
                seen = True
    return total if seen else None


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
