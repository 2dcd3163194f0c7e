"""``echo-bench gate``: a candidate config against a baseline, with a statistical verdict.

Exit codes: 0 pass, 1 fail, 2 bad input, 3 inconclusive (see :mod:`bench.gate.verdict`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from bench.commands.sweep import CellScorer, make_backend
from bench.core.errors import UserError
from bench.gate.run_gate import ConfigArg, parse_side, run_gate
from bench.gate.sweep import build_sweep, load_gate_spec
from bench.run.runner import DEFAULT_RUNS_ROOT
from bench.spec.shipped import resolve_spec_path

DEFAULT_GATE_SPEC = "gate"


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "gate", help="compare a candidate config with a baseline: exit 0 pass, 1 fail, "
                     "3 inconclusive")
    p.add_argument("--baseline", required=True, metavar="CONFIG_OR_RUN",
                   help="production config TOML, or a run directory (RUN or RUN@CELL_ID)")
    p.add_argument("--candidate", required=True, metavar="CONFIG_OR_RUN",
                   help="production config TOML, or a run directory (RUN or RUN@CELL_ID)")
    p.add_argument("--spec", default=DEFAULT_GATE_SPEC,
                   help="gate spec: prompts, seeds, measurement and the [gate] thresholds "
                        "(default: the shipped gate.toml)")
    p.add_argument("--backend", choices=("local", "modal"), default="local")
    p.add_argument("--out", type=Path, default=DEFAULT_RUNS_ROOT,
                   help=f"folder holding run directories (default {DEFAULT_RUNS_ROOT})")
    p.add_argument("--report", type=Path, metavar="FILE.md",
                   help="write the Markdown verdict here (e.g. $GITHUB_STEP_SUMMARY)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the JSON verdict here")
    p.add_argument("--ignore-gpu", action="store_true",
                   help="local backend: run configs that name a GPU type on this machine")
    p.add_argument("--yes", action="store_true", help="skip confirmations (Modal)")
    p.add_argument("--no-score", action="store_true",
                   help="skip ASR scoring (quality is then not checked)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for option, path in (("--report", args.report), ("--json", args.json)):
        # Checked first: the verdict comes after a whole sweep and must not be lost.
        if path is not None and not path.parent.is_dir():
            raise UserError(f"{option} {path}: folder {path.parent} does not exist; create it "
                            "or write elsewhere")
    gate = load_gate_spec(resolve_spec_path(args.spec))
    baseline, candidate = parse_side(args.baseline), parse_side(args.candidate)
    backend = scorer = spec = None
    with contextlib.ExitStack() as stack:
        if isinstance(baseline, ConfigArg) or isinstance(candidate, ConfigArg):
            configs = [s.config for s in (baseline, candidate) if isinstance(s, ConfigArg)]
            spec = build_sweep(gate, configs)  # validates before anything starts
            # --backend modal: generations and Whisper both run on Modal GPUs; this
            # machine only orchestrates, decides and writes the summary.
            backend, remote_asr = make_backend(args, spec, stack)
            if spec.measure.score and not args.no_score:
                scorer = CellScorer(spec, remote_asr)
        verdict = run_gate(baseline, candidate, gate, backend=backend, root=args.out,
                           scorer=scorer, spec=spec)
    print(verdict.to_text())
    if args.report is not None:
        with open(args.report, "a", encoding="utf-8") as f:  # append: the step summary grows
            f.write(verdict.to_markdown())
    if args.json is not None:
        args.json.write_text(json.dumps(verdict.to_json(), indent=2) + "\n", encoding="utf-8")
    sys.stdout.flush()
    return verdict.exit_code
