"""The CI gate: a candidate config against a baseline, on the same prompts and seeds.

Three checks, each PASS, FAIL or INCONCLUSIVE (plus NOT_MEANINGFUL / SKIPPED for quality
that cannot be judged), and one verdict:

* quality (non-inferiority): the paired cluster-bootstrap 95 % interval of candidate minus
  baseline corpus WER (and CER; speaker similarity when a ``sim`` column exists) against a
  margin. PASS when the upper bound is below the margin, FAIL when the lower bound is
  above it, otherwise INCONCLUSIVE with an estimate of the prompts needed. Below
  ``min_prompts`` prompts no quality decision is made. Random model weights or a random
  ASR make quality NOT_MEANINGFUL: it is neither passed nor failed.
* speed (asv's rule: a ratio threshold AND significance): the ratio of median
  ``speed_metric`` (default ``rtf_full``, compute seconds per second of the full generated
  sequence, which unlike cropped audio does not depend on what random weights produce).
  PASS when the ratio is within ``speed_factor``; FAIL when beyond it and a one-sided
  Wilcoxon signed-rank test on the per-pair log ratios against log(speed_factor) gives
  p < ``alpha``; INCONCLUSIVE (noise) when beyond it but not significant.
* memory: the candidate's peak (reserved CUDA memory; host RSS on CPU runs, and the check
  says which) within the GPU's memory less ``memory_headroom``.

A candidate generation without speech (failed, NaN or silent audio) is a FAIL of its own
(a config that crashes, runs out of memory or says nothing is not faster), and counts as
an empty transcript in the quality checks, as in the report (:mod:`bench.scoring.outcomes`). Exit codes: 0 pass, 1 fail, 2 bad input, 3 inconclusive. Quality
that could not be checked makes the verdict INCONCLUSIVE (3) unless ``require_quality``
is false (a deliberate speed-only gate), in which case a pass says "quality not checked".
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.analysis.cells import column, pair_keys, pair_scores, quality_is_meaningful, scored_rows
from bench.analysis.signed_rank import signed_rank_p_greater
from bench.core.errors import UserError
from bench.scoring.outcomes import has_scores, no_speech, outcome
from bench.scoring.stats import bootstrap_ratio_replicates, percentile_interval
from bench.scoring.wer import paired_difference
from bench.spec.sweep import SweepSpec, parse_spec
from bench.store.run_store import DEFAULT_RUNS_ROOT, load_records
from echo_tts.production import ProductionConfig
from echo_tts.sampling import SamplerConfig

Status = Literal["PASS", "FAIL", "INCONCLUSIVE", "NOT_MEANINGFUL", "SKIPPED"]
EXIT_CODES: dict[str, int] = {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}

#: Memory of one card in GiB (Modal GPU strings; a bare "A100" is a 40 GB card). Cards
#: hold slightly less than the nominal size; the headroom absorbs that.
GPU_MEMORY_GIB: dict[str, float] = {
    "T4": 16, "L4": 24, "A10": 24, "A10G": 24, "L40S": 48, "A100": 40, "A100-40GB": 40,
    "A100-80GB": 80, "H100": 80, "H100!": 80, "H200": 141, "B200": 180, "RTX-PRO-6000": 96,
}
#: Record columns the speed check may compare (lower is better for all of them).
SPEED_METRICS: tuple[str, ...] = (
    "rtf_full", "rtf", "t_total", "t_sampling", "t_decode", "t_sampling_per_nfe",
    "wall_seconds",
)
_GIB = 2**30


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class GateThresholds:
    """Decision thresholds: the ``[gate]`` table of a gate spec.

    ``wer_margin``/``cer_margin`` are absolute percentage points (0.5 = half a point);
    ``sim_margin`` is in similarity units (cosine), ``utmos_margin`` in MOS points (1-5
    scale); ``speed_factor`` a ratio of medians;
    ``alpha`` the one-sided significance level of the speed test; ``memory_headroom`` the
    share of the card kept free; ``memory_budget_gb`` (GiB) overrides the card's size;
    ``max_rounds`` the most interleaved rounds (baseline and candidate once each on a
    prompt/seed) the gate measures when its speed check is inconclusive (default: three
    times what the spec plans; see :mod:`bench.gate.rounds`).
    """

    wer_margin: float = 0.5
    cer_margin: float = 0.5
    sim_margin: float = 0.01
    utmos_margin: float = 0.1
    speed_factor: float = 1.05
    speed_metric: str = "rtf_full"
    alpha: float = 0.05
    memory_headroom: float = 0.10
    memory_budget_gb: float | None = None
    n_boot: int = 2000
    seed: int = 0
    min_prompts: int = 10
    require_quality: bool = True
    max_rounds: int | None = None

    @classmethod
    def from_table(cls, table: Mapping[str, Any], origin: str = "[gate]") -> GateThresholds:
        """Validate a ``[gate]`` table; unknown keys and out-of-range values are errors."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise UserError(f"{origin}: unknown key {key!r} in [gate]; allowed: "
                                f"{', '.join(known)}")
            values[key] = value
        try:
            out = cls(**values)
        except TypeError as exc:  # pragma: no cover - keys are checked above
            raise UserError(f"{origin}: {exc}") from None
        problems = out._problems()
        if problems:
            raise UserError(f"{origin}: {'; '.join(problems)}")
        return out

    def _problems(self) -> list[str]:
        out = []
        for name in ("wer_margin", "cer_margin", "sim_margin", "utmos_margin"):
            if not _number(getattr(self, name)) or getattr(self, name) < 0:
                out.append(f"gate.{name} must be a number >= 0")
        if not _number(self.speed_factor) or self.speed_factor < 1:
            out.append("gate.speed_factor must be a number >= 1 (e.g. 1.05)")
        if self.speed_metric not in SPEED_METRICS:
            out.append(f"gate.speed_metric must be one of {', '.join(SPEED_METRICS)}")
        if not _number(self.alpha) or not 0 < self.alpha < 0.5:
            out.append("gate.alpha must be in (0, 0.5)")
        if not _number(self.memory_headroom) or not 0 <= self.memory_headroom < 1:
            out.append("gate.memory_headroom must be in [0, 1)")
        if self.memory_budget_gb is not None and (
                not _number(self.memory_budget_gb) or self.memory_budget_gb <= 0):
            out.append("gate.memory_budget_gb must be a positive number of GiB")
        for name, low in (("n_boot", 100), ("min_prompts", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                out.append(f"gate.{name} must be an integer >= {low}")
        if self.max_rounds is not None and (isinstance(self.max_rounds, bool) or not isinstance(
                self.max_rounds, int) or self.max_rounds < 1):
            out.append("gate.max_rounds must be an integer >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            out.append("gate.seed must be an integer")
        if not isinstance(self.require_quality, bool):
            out.append("gate.require_quality must be true or false")
        return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------- verdict


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


@dataclass(frozen=True)
class Side:
    """What one side of the comparison is: a label and where its records came from."""

    role: str
    label: str
    origin: str
    cell_id: str
    run_dir: str


@dataclass(frozen=True)
class GateVerdict:
    """The gate's decision: overall ``status`` and ``exit_code``, each check, and notes."""

    status: Literal["PASS", "FAIL", "INCONCLUSIVE"]
    headline: str
    checks: tuple[Check, ...]
    thresholds: GateThresholds
    n_pairs: int
    n_prompts: int
    notes: tuple[str, ...] = ()
    baseline: Side | None = None
    candidate: Side | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def check(self, name: str) -> Check:
        """The check called ``name`` (KeyError when absent)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready verdict for machines."""
        return _jsonable({
            "status": self.status, "exit_code": self.exit_code, "headline": self.headline,
            "n_pairs": self.n_pairs, "n_prompts": self.n_prompts,
            "baseline": None if self.baseline is None else asdict(self.baseline),
            "candidate": None if self.candidate is None else asdict(self.candidate),
            "checks": [asdict(c) for c in self.checks],
            "thresholds": asdict(self.thresholds), "notes": list(self.notes),
        })

    def to_text(self) -> str:
        """Plain text for the terminal: one line per check."""
        lines = [f"gate: {self.headline}"]
        for side in (self.baseline, self.candidate):
            if side is not None:
                lines.append(f"  {side.role:<9} {side.label}  [{side.origin}, cell {side.cell_id}]")
        lines.append(f"  paired on {self.n_pairs} prompt/seed pairs over {self.n_prompts} prompts")
        for c in self.checks:
            lines.append(f"{c.name:<12} {c.status:<14} {c.summary}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """Markdown for a pull request (or ``$GITHUB_STEP_SUMMARY``)."""
        icon = {"PASS": "✅", "FAIL": "❌", "INCONCLUSIVE": "⚠️"}[self.status]
        out = [f"## {icon} echo-bench gate: {self.headline}", ""]
        for side in (self.baseline, self.candidate):
            if side is not None:
                out.append(f"- **{side.role}**: `{side.label}` ({side.origin}, cell "
                           f"`{side.cell_id}`)")
        out += [f"- paired on {self.n_pairs} prompt/seed pairs over {self.n_prompts} prompts",
                "", "| check | verdict | figures |", "|---|---|---|"]
        for c in self.checks:
            out.append(f"| {c.name} | **{c.status}** | {c.summary.replace('|', '/')} |")
        t = self.thresholds
        out += ["", f"Thresholds: WER margin +{t.wer_margin} pts, CER margin +{t.cer_margin} "
                f"pts, speed factor {t.speed_factor} on median `{t.speed_metric}` "
                f"(alpha {t.alpha}), memory headroom {t.memory_headroom:.0%}, "
                f"min prompts {t.min_prompts}."]
        out.extend(f"> {n}" for n in self.notes)
        return "\n".join(out) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------- decisions


def decide(baseline: pd.DataFrame, candidate: pd.DataFrame, thresholds: GateThresholds,
           *, baseline_side: Side | None = None, candidate_side: Side | None = None,
           notes: Sequence[str] = ()) -> GateVerdict:
    """Compare two record tables (one cell each, rows as ``bench.store.run_store.load_records``
    gives them) and decide. Rows are paired by (prompt_id, seed)."""
    base_ok = _ok(baseline)
    cand_ok = _ok(candidate)
    pairs = sorted(set(pair_keys(base_ok)) & set(pair_keys(cand_ok)), key=repr)
    n_prompts = len({p for p, _ in pairs})
    all_notes = list(notes)
    only = len(set(pair_keys(base_ok)) ^ set(pair_keys(cand_ok)))
    if only:
        all_notes.append(f"{only} prompt/seed pairs ran on one side only and are not compared")
    checks = [_check_failures(baseline, candidate)]
    # Quality sees every generation: failed, NaN and silent ones count as empty
    # transcripts (bench.scoring.outcomes), as in the report and history.
    checks += check_quality(baseline, candidate, thresholds)
    # Imported here: bench.gate.quality builds on this module's Check and thresholds.
    from bench.gate.quality import check_naturalness

    checks += check_naturalness(base_ok, cand_ok, thresholds)
    checks.append(check_speed(base_ok, cand_ok, thresholds))
    checks.append(check_memory(base_ok, cand_ok, thresholds))
    status, headline = _overall(checks, thresholds)
    return GateVerdict(status=status, headline=headline, checks=tuple(checks),
                       thresholds=thresholds, n_pairs=len(pairs), n_prompts=n_prompts,
                       notes=tuple(all_notes), baseline=baseline_side,
                       candidate=candidate_side)


def _overall(checks: Sequence[Check], t: GateThresholds
             ) -> tuple[Literal["PASS", "FAIL", "INCONCLUSIVE"], str]:
    statuses = [c.status for c in checks]
    failed = [c.name for c in checks if c.status == "FAIL"]
    if failed:
        return "FAIL", f"FAIL ({', '.join(failed)})"
    open_ = [c for c in checks if c.status == "INCONCLUSIVE"]
    if open_:
        needs = [f"{c.name}: ~{c.n_needed} needed" for c in open_ if c.n_needed]
        extra = f"; {', '.join(needs)}" if needs else ""
        return "INCONCLUSIVE", f"INCONCLUSIVE ({', '.join(c.name for c in open_)}{extra})"
    unchecked = [c for c in checks if c.name.startswith("quality")
                 and c.status in ("NOT_MEANINGFUL", "SKIPPED")]
    if unchecked:
        why = unchecked[0].summary
        if t.require_quality:
            return "INCONCLUSIVE", (f"INCONCLUSIVE (quality not checked: {why}; use real "
                                    "weights and ASR, or set [gate] require_quality = false "
                                    "for a speed-only gate)")
        return "PASS", f"PASS (speed and memory only; quality NOT CHECKED: {why})"
    assert all(s in ("PASS", "SKIPPED") for s in statuses)
    return "PASS", "PASS"


def _ok(records: pd.DataFrame) -> pd.DataFrame:
    return records[column(records, "status") == "ok"]


def _check_failures(baseline: pd.DataFrame, candidate: pd.DataFrame) -> Check:
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


# ---- quality


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
    a = _first_per_pair(base, "sim")
    b = _first_per_pair(cand, "sim")
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


def _first_per_pair(records: pd.DataFrame, name: str) -> dict[tuple[str, int], float]:
    out: dict[tuple[str, int], float] = {}
    values = pd.to_numeric(column(records, name), errors="coerce")
    for key, value in zip(pair_keys(records), values, strict=True):
        if math.isfinite(value):
            out.setdefault(key, float(value))
    return out


# ---- speed


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


# ---- memory


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
    return size * _GIB * (1 - t.memory_headroom), what


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
        return Check("memory", "SKIPPED", f"{kind} {peak / _GIB:.2f} GiB; no budget: {what}",
                     {"candidate_peak_bytes": peak, "kind": kind})
    figures = {"kind": kind, "candidate_peak_bytes": peak, "baseline_peak_bytes": base_peak,
               "budget_bytes": budget, "headroom": t.memory_headroom, "budget": what}
    was = f" (baseline {base_peak / _GIB:.2f})" if base_peak is not None else ""
    text = (f"{kind} {peak / _GIB:.2f} GiB{was} vs {budget / _GIB:.2f} GiB usable of "
            f"{what} with {t.memory_headroom:.0%} headroom")
    return Check("memory", "PASS" if peak <= budget else "FAIL", text, figures)


# --------------------------------------------------------------------------- gate specs


@dataclass(frozen=True)
class GateSpec:
    """A gate spec file split in two: the sweep tables (``sweep``, everything but
    ``[gate]``) and the decision ``thresholds``."""

    sweep: dict[str, Any]
    thresholds: GateThresholds
    base_dir: Path
    name: str
    origin: str


def load_gate_spec(path: str | Path) -> GateSpec:
    """Read a gate spec: a sweep spec without cells plus a ``[gate]`` table."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such gate spec") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a valid TOML file: {exc}") from None
    gate = raw.pop("gate", {})
    if not isinstance(gate, dict):
        raise UserError(f"{path}: gate must be a table: write [gate] on its own line")
    for section in ("grid", "include", "exclude"):
        if section in raw:
            raise UserError(f"{path}: a gate spec has no [{section}]: the two cells come "
                            "from --baseline and --candidate")
    return GateSpec(raw, GateThresholds.from_table(gate, str(path)), path.resolve().parent,
                    str(raw.get("name", path.stem)), str(path))


def build_sweep(gate: GateSpec, configs: Sequence[ProductionConfig]) -> SweepSpec:
    """One sweep with one cell per production config (in order; equal configs share one),
    on the gate spec's prompts, seeds and measurement settings.

    The weights and dtype come from the configs (what production runs); the gate spec's
    ``[model]`` contributes how to run them (device, compile, codec dtype). Scoring needs
    the audio, so ``keep_audio`` is forced on.
    """
    first = configs[0]
    for other in configs[1:]:
        if (other.model, other.codec, other.pca) != (first.model, first.codec, first.pca):
            raise UserError("the baseline and candidate load different weights; one gate "
                            "sweep loads one model. Run each with `echo-bench sweep` and "
                            "pass the run directories to --baseline/--candidate")
    raw = {k: v for k, v in gate.sweep.items()}
    model = dict(raw.get("model", {}))
    model.update(model=first.model, codec=first.codec, pca=first.pca, dtype=first.dtype)
    raw["model"] = model
    measure = dict(raw.get("measure", {}))
    measure["keep_audio"] = True
    measure.pop("max_audio_files", None)
    raw["measure"] = measure
    raw["include"] = [_include(c) for c in configs]
    return parse_spec(dump_toml(raw), base_dir=gate.base_dir, name=gate.name,
                      origin=gate.origin)


def _include(config: ProductionConfig) -> dict[str, Any]:
    # Only settings that differ from the sampler's defaults: the rest are implied, and
    # the cell labels then show what the configs change.
    defaults = SamplerConfig().to_dict()
    values: dict[str, Any] = {k: v for k, v in config.sampler.to_dict().items()
                              if v is not None and v != defaults[k]}
    values["dtype"] = config.dtype
    if config.gpu is not None:
        values["gpu"] = config.gpu
    return values


def dump_toml(data: Mapping[str, Any]) -> str:
    """TOML text for the shapes a sweep spec uses: top-level scalars, tables of scalars
    and lists of scalars, and arrays of such tables. Anything else raises ValueError."""
    lines: list[str] = []
    tables: list[str] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables += ["", f"[{_key(key)}]", *_table_lines(value, key)]
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for item in value:
                tables += ["", f"[[{_key(key)}]]", *_table_lines(item, key)]
        else:
            lines.append(f"{_key(key)} = {_value(value, key)}")
    return "\n".join(lines + tables) + "\n"


def _table_lines(table: Mapping[str, Any], where: str) -> list[str]:
    return [f"{_key(k)} = {_value(v, f'{where}.{k}')}" for k, v in table.items()]


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key, ensure_ascii=False)


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} has no place in a spec")
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes (\", \\, \n, \uXXXX) are all valid in a TOML basic string.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v, where) for v in value) + "]"
    raise ValueError(f"{where}: cannot write {type(value).__name__} as TOML")


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class ConfigArg:
    """A side given as a production config file."""

    path: Path
    config: ProductionConfig


@dataclass(frozen=True)
class RunArg:
    """A side given as a recorded run directory (``RUN`` or ``RUN@CELL_ID``)."""

    run_dir: Path
    cell_id: str | None


def parse_side(text: str) -> ConfigArg | RunArg:
    """A ``--baseline``/``--candidate`` value: a run directory (with ``@CELL_ID`` when the
    run has several cells) or a production config file."""
    from echo_tts.production import ProductionConfigError

    path_text, _, cell = text.partition("@") if "@" in text else (text, "", "")
    path = Path(path_text)
    if path.is_dir():
        if not (path / "manifest.json").is_file():
            raise UserError(f"{path} is a folder but not a run directory (no manifest.json)")
        return RunArg(path, cell or None)
    if cell:
        raise UserError(f"{text}: @CELL_ID only follows a run directory")
    try:
        return ConfigArg(path, ProductionConfig.from_file(path))
    except ProductionConfigError as exc:
        raise UserError(str(exc)) from None


def _cell_records(records: pd.DataFrame, run_dir: Path, cell_id: str | None,
                  role: str) -> tuple[pd.DataFrame, str]:
    cells = list(dict.fromkeys(column(records, "cell_id")))
    if cell_id is None:
        if len(cells) != 1:
            labels = dict(zip(column(records, "cell_id"), column(records, "cell_label"),
                              strict=True))
            listing = ", ".join(f"{c} ({labels.get(c)})" for c in cells) or "none"
            raise UserError(f"--{role} {run_dir}: the run has {len(cells)} cells; pick one "
                            f"as {run_dir}@CELL_ID from: {listing}")
        cell_id = str(cells[0])
    rows = records[column(records, "cell_id") == cell_id]
    if not len(rows):
        raise UserError(f"--{role} {run_dir}@{cell_id}: no records of that cell; cells: "
                        f"{', '.join(map(str, cells))}")
    return rows, cell_id


Scorer = Any  # bench.commands.sweep.CellScorer, called after each cell


def run_gate(baseline: ConfigArg | RunArg, candidate: ConfigArg | RunArg, gate: GateSpec,
             *, backend: Any = None, root: Path = DEFAULT_RUNS_ROOT,
             scorer: Scorer = None, spec: SweepSpec | None = None) -> GateVerdict:
    """Run what has to run (one sweep for the config sides) and decide.

    ``backend`` is a runner backend (needed when a side is a config); ``scorer`` the
    ``after_cell`` hook that scores each cell as it finishes (None: no scoring);
    ``spec`` the sweep of the config sides when the caller already built it.
    """
    from bench.gate.rounds import next_seed, speed_undecided
    from bench.run.runner import run_sweep
    from bench.spec.prompts import load_prompts

    sides = {"baseline": baseline, "candidate": candidate}
    configs = [s.config for s in sides.values() if isinstance(s, ConfigArg)]
    notes: list[str] = []
    if configs:
        spec = spec or build_sweep(gate, configs)
        run_dir = run_sweep(spec, backend, root=root, after_cell=scorer).run_dir
        if len(spec.cells) == 1 and len(configs) == 2:
            notes.append("the candidate's settings equal the baseline's: one cell compared "
                          "with itself")
        verdict = _decide_sides(sides, gate, spec, run_dir, notes)
        # Noise, not a verdict: measure more interleaved rounds (new seeds) while the
        # budget allows, then decide on everything measured.
        n_prompts = len(load_prompts(spec.prompts))
        added: list[int] = []
        while speed_undecided(verdict.check("speed").status, verdict.check("speed").figures):
            seed = next_seed(spec, added, n_prompts, gate.thresholds.max_rounds)
            if seed is None:
                break
            added.append(seed)
            run_sweep(spec, backend, root=root, resume=str(run_dir), after_cell=scorer,
                      extra_seeds=added)
            more = (f"speed was inconclusive: measured {len(added)} more seed(s) "
                    f"({', '.join(map(str, added))}) in interleaved rounds")
            verdict = _decide_sides(sides, gate, spec, run_dir, [*notes, more])
        return verdict
    return _decide_sides(sides, gate, None, None, notes)


def _decide_sides(sides: Mapping[str, ConfigArg | RunArg], gate: GateSpec,
                  spec: SweepSpec | None, run_dir: Path | None, notes: list[str]
                  ) -> GateVerdict:
    """Load each side's records (the gate's own run for config sides) and decide."""
    frames: dict[str, tuple[pd.DataFrame, Side]] = {}
    if spec is not None and run_dir is not None:
        ids = {c.id: c for c in spec.cells}
        records = load_records(run_dir)
        # Cells keep the configs' order; equal configs collapse into one cell.
        cell_of_config = iter([spec.cells[0].id, spec.cells[-1].id])
        for role, side in sides.items():
            if isinstance(side, ConfigArg):
                cell_id = next(cell_of_config)
                rows = records[column(records, "cell_id") == cell_id]
                frames[role] = (rows, Side(role, ids[cell_id].label, str(side.path), cell_id,
                                           str(run_dir)))
    notes = list(notes)
    for role, side in sides.items():
        if isinstance(side, RunArg):
            rows, cell_id = _cell_records(load_records(side.run_dir), side.run_dir,
                                          side.cell_id, role)
            label = str(column(rows, "cell_label").iloc[0])
            frames[role] = (rows, Side(role, label, f"run {side.run_dir.name}", cell_id,
                                       str(side.run_dir)))
    configs = [s for s in sides.values() if isinstance(s, ConfigArg)]
    if len(configs) < 2 and any(isinstance(s, RunArg) for s in sides.values()):
        hosts = {str(v) for f, _ in frames.values() for v in column(f, "device_name").dropna()}
        if len(hosts) > 1:
            notes.append(f"the sides ran on different hardware ({', '.join(sorted(hosts))}): "
                         "speed is compared across machines")
    (base_rows, base_side), (cand_rows, cand_side) = frames["baseline"], frames["candidate"]
    return decide(base_rows, cand_rows, gate.thresholds, baseline_side=base_side,
                  candidate_side=cand_side, notes=notes)
