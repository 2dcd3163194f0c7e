"""The CI gate: a candidate config against a baseline, on the same prompts and seeds.

Five checks, each PASS, FAIL or INCONCLUSIVE (plus NOT_MEANINGFUL / SKIPPED for quality
that cannot be judged), and one verdict:

* generations: every candidate generation completes with speech; one without (failed,
  NaN or silent audio) is a FAIL of its own (:mod:`bench.gate.checks`).
* quality (non-inferiority): the paired difference candidate minus baseline in corpus
  WER (and CER; speaker similarity when the records carry it) over (prompt, seed)
  pairs, on an anytime-valid interval (:mod:`bench.gate.anytime`) against a margin.
  PASS when the interval lies below the margin, FAIL when above it, otherwise
  INCONCLUSIVE with an estimate of the prompts needed. Below ``min_prompts`` prompts no
  quality decision is made. Random model weights or a random ASR make quality
  NOT_MEANINGFUL: it is neither passed nor failed.
* naturalness: the paired UTMOS loss (baseline minus candidate) on the same kind of
  interval against ``utmos_margin``, when the records carry ``utmos``
  (:mod:`bench.gate.quality`).
* speed: the paired log ratio candidate/baseline of ``speed_metric`` (default
  ``rtf_full``, compute seconds per second of the full generated sequence, which unlike
  cropped audio does not depend on what random weights produce) on the same kind of
  interval against log(``speed_factor``): FAIL when the whole interval is beyond it,
  PASS when within, otherwise INCONCLUSIVE. Its one-sided error is at most ``alpha``
  however many rounds the gate adds (:mod:`bench.gate.rounds`).
* memory: the candidate's peak (reserved CUDA memory; host RSS on CPU runs, and the check
  says which) within the GPU's memory less ``memory_headroom``.

A candidate generation without speech (a config that crashes, runs out of memory or
says nothing is not faster) also counts as an empty transcript in the quality checks, as
in the report (:mod:`bench.scoring.outcomes`). Exit codes: 0 pass, 1 fail, 2 bad input,
3 inconclusive. Quality that could not be checked makes the verdict INCONCLUSIVE (3)
unless ``require_quality`` is false (a deliberate speed-only gate), in which case a pass
says "quality not checked".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from bench.analysis.cells import pair_keys
from bench.gate.checks import (
    EXIT_CODES,
    Check,
    check_failures,
    check_memory,
    check_speed,
    ok_rows,
)
from bench.gate.quality import check_quality
from bench.gate.thresholds import GateThresholds

# --------------------------------------------------------------------------- verdict


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
            lines.append(f"{c.name:<12} {c.status:<14} {c.summary}{_spent(c)}")
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
            out.append(f"| {c.name} | **{c.status}** | {c.summary.replace('|', '/')}"
                       f"{_spent(c)} |")
        t = self.thresholds
        out += ["", f"Thresholds: WER margin +{t.wer_margin} pts, CER margin +{t.cer_margin} "
                f"pts, speed factor {t.speed_factor} on paired `{t.speed_metric}` "
                f"(alpha {t.alpha}), memory headroom {t.memory_headroom:.0%}, "
                f"min prompts {t.min_prompts}."]
        out.extend(f"> {n}" for n in self.notes)
        return "\n".join(out) + "\n"


def _spent(check: Check) -> str:
    """What a check cost: the pairs it rests on and both sides' compute seconds on them."""
    pairs, seconds = check.figures.get("n_pairs"), check.figures.get("compute_seconds")
    if pairs is None:
        return ""
    cost = f", {seconds:.1f} compute s" if isinstance(seconds, float) else ""
    return f" [{pairs} pairs{cost}]"


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
    base_ok = ok_rows(baseline)
    cand_ok = ok_rows(candidate)
    pairs = sorted(set(pair_keys(base_ok)) & set(pair_keys(cand_ok)), key=repr)
    n_prompts = len({p for p, _ in pairs})
    all_notes = list(notes)
    only = len(set(pair_keys(base_ok)) ^ set(pair_keys(cand_ok)))
    if only:
        all_notes.append(f"{only} prompt/seed pairs ran on one side only and are not compared")
    checks = [check_failures(baseline, candidate)]
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


# --------------------------------------------------------------------------- running a gate


Scorer = Any  # bench.commands.sweep.CellScorer, called after each cell
