"""``echo-bench history``: key figures of a spec's runs over time, with step changes flagged.

A step change is a change of a cell's figure against its previous run whose
anytime-valid interval at 1 - ``--alpha`` lies wholly beyond the step size, either way:
the step rule of :mod:`bench.analysis.steps`, the nightly's, with its sizes
(:class:`bench.analysis.steps.StepSizes`; ``--factor`` replaces RTF's). Generations are
paired across the two runs by prompt, seed and repeat, as the gate pairs them; the speed
interval is over the pairs' log ratios, the quality ones (corpus WER, SIM, UTMOS, DNSMOS
OVRL) over their differences (:mod:`bench.analysis.history`). WER counts failed and
silent generations as empty transcripts, and the share without speech is shown beside
it. Figures come from each run's summary, computed once per run
(:mod:`bench.analysis.run_summary`), so a new night re-reads that night only.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.core.errors import UserError
from bench.store.layout import DEFAULT_RUNS_ROOT

if TYPE_CHECKING:
    from bench.analysis.history import StepChange


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("history", help="trend of median RTF and WER over runs; flags step changes")
    p.add_argument("--spec", metavar="NAME", help="only runs of this spec name")
    p.add_argument("--root", type=Path, default=DEFAULT_RUNS_ROOT,
                   help=f"folder holding run directories (default {DEFAULT_RUNS_ROOT})")
    add_rule_arguments(p)
    p.set_defaults(handler=run)


def add_rule_arguments(p: argparse.ArgumentParser) -> None:
    """``--factor`` and ``--alpha`` of the step rule (history and the dashboard)."""
    p.add_argument("--factor", type=float, default=1.1,
                   help="smallest RTF ratio that counts as a step (default 1.1)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="chance a flag is wrong, at any number of runs (default 0.05)")


def check_rule_arguments(args: argparse.Namespace) -> None:
    """One-line errors for a ``--factor`` or ``--alpha`` the rule cannot use."""
    if args.factor <= 1:
        raise UserError(f"--factor is {args.factor}; pass a ratio above 1 (e.g. 1.1)")
    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha is {args.alpha}; pass a level between 0 and 1 (e.g. 0.05)")


def _fmt(value: float, pattern: str) -> str:
    return pattern.format(value) if math.isfinite(value) else "-"


def _beyond_wer(row: Mapping[Any, Any]) -> str:
    """"  SIM 0.712  UTMOS 3.91" for the metrics a run scored (nothing otherwise)."""
    parts = [f"  {label} {row[name]:.3f}" for name, label in
             (("sim", "SIM"), ("utmos", "UTMOS"), ("dnsmos_ovrl", "DNSMOS"))
             if math.isfinite(row.get(name, math.nan))]
    return "".join(parts)


def run(args: argparse.Namespace) -> int:
    from bench.analysis.history import (
        STEP_RULES,
        describe_rule,
        flag_step_changes,
        history_table,
    )

    if not args.root.is_dir():
        raise UserError(f"no results folder {args.root}; pass --root DIR")
    check_rule_arguments(args)
    table = history_table(args.root, args.spec)
    if not len(table):
        print(f"no runs with records under {args.root}")
        return 0
    flagged = flag_step_changes(table, factor=args.factor, alpha=args.alpha)
    labels = {rule.metric: rule.label for rule in STEP_RULES}
    runs = list(dict.fromkeys(flagged["run_id"]))
    print(f"{len(runs)} runs, {flagged['cell_id'].nunique()} cells (oldest first); "
          f"{describe_rule(args.factor, args.alpha)}")
    for cell_id, rows in flagged.groupby("cell_id", sort=False):
        print(f"\n{cell_id}  {rows['cell_label'].iloc[-1]}")
        for row in rows.to_dict("records"):
            commit = str(row.get("git_commit") or "-")[:9]
            change = ""
            if math.isfinite(row["ratio"]):
                change = (f"  x{row['ratio']:.3f} [x{row['low']:.3f}, x{row['high']:.3f}] "
                          f"({row['n_pairs']} pairs)")
            for step in row["changes"]:
                if step.step:
                    change += f"  <-- STEP: {labels[step.metric]} {step.step}"
            print(f"  {row['run_id']:<40} {commit:<10} RTF {_fmt(row['rtf_median'], '{:.4g}'):>8}"
                  f"  WER {_fmt(row['corpus_wer'] * 100, '{:.2f} %'):>8}"
                  f"  no speech {_fmt(row['failure_rate'] * 100, '{:.0f} %'):>5}"
                  f"{_beyond_wer(row)}{change}")
    steps = sum(1 for changes in flagged["changes"] for c in changes if c.step)
    print(f"\n{steps} step change{'s' if steps != 1 else ''} flagged")
    resolved = resolution_text(zip(flagged["cell_id"].astype(str), flagged["changes"],
                                   strict=True))
    if resolved:
        print(f"what the runs resolve (median interval half-width over cells, latest pair): "
              f"{resolved}; a change is flagged only once it exceeds its step by about that")
    return 0


def resolution_text(rows: Iterable[tuple[str, Sequence[StepChange]]]) -> str:
    """Per figure, over ``rows`` (cell id, its changes; oldest first), the median over
    cells of the half-width of each cell's latest comparison's interval,
    in the figure's units (RTF a factor, WER points): how far beyond its step a change
    must lie before these runs can flag it (a step smaller than that is not resolved)."""
    from bench.analysis.history import STEP_RULES

    latest: dict[str, dict[str, float]] = {}
    for cell_id, cell in rows:
        for c in cell:
            if math.isfinite(c.low) and math.isfinite(c.high) and c.high > c.low:
                half = (math.sqrt(c.high / c.low) if c.metric == "rtf"
                        else (c.high - c.low) / 2 * (100 if c.metric == "wer_errors" else 1))
                latest.setdefault(c.metric, {})[cell_id] = half
    parts = []
    for rule in STEP_RULES:
        halves = list(latest.get(rule.metric, {}).values())
        if halves:
            half = statistics.median(halves)
            parts.append(f"{rule.label} " + (f"x{half:.3f}" if rule.metric == "rtf" else
                                             f"{half:.2f} points" if rule.metric == "wer_errors"
                                             else f"{half:.3g}"))
    return ", ".join(parts)
