"""``echo-bench dashboard``: a static site of every spec's runs over time (no server).

Per spec, an index page lists the step changes (the rule of ``echo-bench history``,
speed and quality) and draws, per GPU, every cell's trends across runs: median RTF,
corpus WER, SIM and MOS with their 95 % intervals, and peak memory, where recorded;
each cell has a page where every point links to its run's report
(:mod:`bench.report.dashboard`). Runs that are unfinished, unreadable or whose folder
holds another spec than the index says are listed as skipped, with the reason.

Each run is summarised once into its folder (``summary.json``), so a new night costs
only that night's summary: open ``<out>/index.html`` in a browser.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands.history import add_rule_arguments, check_rule_arguments
from bench.core.errors import UserError
from bench.store.layout import DEFAULT_RUNS_ROOT

DEFAULT_OUT = Path("results/dashboard")


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dashboard", help="static site of every spec's runs over time, "
                                         "step changes marked and listed")
    p.add_argument("--root", type=Path, default=DEFAULT_RUNS_ROOT,
                   help=f"folder holding run directories (default {DEFAULT_RUNS_ROOT})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"folder to write the site into (default {DEFAULT_OUT})")
    add_rule_arguments(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bench.report.dashboard import build_dashboard

    if not args.root.is_dir():
        raise UserError(f"no results folder {args.root}; pass --root DIR (a folder of runs)")
    check_rule_arguments(args)
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file; pass a folder for the site")
    if args.out.resolve() == args.root.resolve():
        raise UserError(f"--out {args.out} is the results folder; pass another folder")
    site = build_dashboard(args.root, args.out, factor=args.factor, alpha=args.alpha)
    worse = sum(s.direction == "worse" for s in site.steps)
    print(f"{sum(site.runs.values())} runs of {len(site.runs)} spec(s) "
          f"({site.computed} summarised now); {len(site.steps)} step changes "
          f"({worse} worse); {len(site.skipped)} runs skipped")
    for skipped in site.skipped:
        print(f"  skipped {skipped.run_id}: {skipped.reason}")
    print(site.index)
    return 0
