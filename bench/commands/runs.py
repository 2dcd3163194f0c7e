"""``echo-bench runs``: list the runs under a results folder, oldest first."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.core.errors import UserError
from bench.store.layout import DEFAULT_RUNS_ROOT


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("runs", help="list runs (id, spec, status, start, commit, counts)")
    p.add_argument("--root", type=Path, default=DEFAULT_RUNS_ROOT,
                   help=f"folder holding run directories (default {DEFAULT_RUNS_ROOT})")
    p.add_argument("--spec", metavar="NAME", help="only runs of this spec name")
    p.set_defaults(handler=run)


def format_counts(counts: Mapping[str, Any] | None) -> str:
    """``"48 ok, 0 failed, 16 cells, 0 scored"`` from a manifest's counts (or "-")."""
    if not counts:
        return "-"
    return (f"{counts.get('ok', 0)} ok, {counts.get('failed', 0)} failed, "
            f"{counts.get('cells', 0)} cells, {counts.get('scored', 0)} scored")


def run(args: argparse.Namespace) -> int:
    from bench.store.history import list_runs

    root: Path = args.root
    if not root.is_dir():
        raise UserError(f"no results folder {root}; pass --root DIR (where `echo-bench sweep "
                        "--out DIR` wrote its runs)")
    runs = list_runs(root, args.spec)
    if not runs:
        which = f" of spec {args.spec!r}" if args.spec else ""
        print(f"no runs{which} under {root}")
        return 0
    header = f"{'run id':<40} {'spec':<12} {'status':<11} {'started (UTC)':<25} {'commit':<10} counts"
    print(header)
    for entry in runs:
        commit = str(entry.get("git_commit") or "-")[:9]
        print(f"{entry.get('run_id')!s:<40} {entry.get('spec_name')!s:<12} "
              f"{entry.get('status')!s:<11} {entry.get('started_at') or '-':<25} {commit:<10} "
              f"{format_counts(entry.get('counts'))}")
    return 0
