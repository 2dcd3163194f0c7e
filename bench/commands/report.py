"""``echo-bench report``: write the HTML report (or Markdown summary) of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.analysis.headline import DEFAULT_WER_BUDGET_POINTS
from bench.core.errors import UserError


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="write a run's HTML report or Markdown summary")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run directory")
    p.add_argument("--baseline", type=Path, metavar="RUN_DIR",
                   help="an earlier run to compare with, cell by cell")
    p.add_argument("--format", dest="fmt", choices=("html", "md"), default="html",
                   help="html (self-contained page, default) or md (short summary)")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="file to write (default RUN_DIR/report.html or RUN_DIR/report.md)")
    p.add_argument("--prices", type=Path, metavar="FILE",
                   help="price file (TOML, shaped like bench/data/gpu_prices.toml); "
                        "default: Modal's per-second prices")
    p.add_argument("--wer-budget", type=float, default=DEFAULT_WER_BUDGET_POINTS,
                   metavar="POINTS",
                   help="WER allowance over the baseline cell for the headline choice, in "
                        f"percentage points (default {DEFAULT_WER_BUDGET_POINTS})")
    p.add_argument("--baseline-cell", metavar="ID",
                   help="cell id to measure speed-ups against (default: 40 steps, "
                        "independent CFG, 640 latents on the same hardware)")
    p.add_argument("--no-audio", action="store_true",
                   help="do not link sample clips (for a report kept away from its run folder)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bench.report import render_run_report

    if not args.run_dir.is_dir():
        raise UserError(f"no run directory {args.run_dir}; list runs with `echo-bench runs`")
    if args.wer_budget < 0:
        raise UserError(f"--wer-budget is {args.wer_budget}; pass 0 or more percentage points")
    path = render_run_report(args.run_dir, out=args.out, baseline=args.baseline, fmt=args.fmt,
                             prices=args.prices, wer_budget_points=args.wer_budget,
                             baseline_cell=args.baseline_cell, audio=not args.no_audio)
    print(path)
    return 0
