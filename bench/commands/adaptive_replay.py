"""``echo-bench adaptive-replay RUN``: replay a full run's records through the adaptive
policy and report what it would have spent and whether it reaches the same answer."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.analysis.adaptive import PolicySettings
from bench.analysis.adaptive_replay import Budget, replay
from bench.analysis.prices import load_prices
from bench.analysis.regret import load_truth
from bench.core.errors import UserError
from bench.spec.adaptive import DEFAULT_BATCH, DEFAULT_WER_BUDGET, GOALS, min_first_batch
from bench.store.files import read_json
from bench.store.layout import MANIFEST
from bench.store.records import load_records


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("adaptive-replay",
                       help="replay a full run through the adaptive policy: generations spent, "
                            "headline and frontier agreement over N prompt orders")
    p.add_argument("run", type=Path, help="a run directory (a full, non-adaptive run)")
    p.add_argument("--replays", type=int, default=100, help="prompt orders to try (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first order (then +1 ...)")
    p.add_argument("--first-batch", type=int, default=None,
                   help="prompts every cell runs first (default: the run's [adaptive], else the "
                        "minimum the confidence allows)")
    p.add_argument("--batch", type=int, default=None,
                   help=f"prompts per later stage (default: the run's [adaptive], else "
                        f"{DEFAULT_BATCH})")
    p.add_argument("--confidence", type=float, default=None, help="default 0.95")
    p.add_argument("--wer-budget", type=float, default=None,
                   help=f"WER points over the baseline (default {DEFAULT_WER_BUDGET})")
    p.add_argument("--goal", choices=GOALS, default=None,
                   help="what must be decided before a cell stops (default: the run's "
                        "[adaptive], else frontier)")
    p.add_argument("--max-usd", type=float, default=None, help="budget (default: none)")
    p.add_argument("--max-gpu-hours", type=float, default=None, help="budget (default: none)")
    p.add_argument("--truth", type=Path, default=None,
                   help="a constructed run's truth.json: also judge each choice against the "
                        "truth (true WER within the budget, true RTF within 5%% of the best)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.replays < 1:
        raise UserError(f"--replays must be at least 1 (got {args.replays})")
    records = load_records(args.run)
    if not len(records) or "cell_id" not in records.columns:
        raise UserError(f"run {args.run} has no records to replay")
    manifest = read_json(args.run / MANIFEST)
    stored = ((manifest.get("spec") or {}).get("adaptive") or {})
    if "adaptive_stage" in records.columns and records["adaptive_stage"].notna().any():
        raise UserError(f"run {args.run} is itself adaptive: replay a full run (sweep it with "
                        "--no-adaptive) so every cell has every prompt")
    confidence = args.confidence or stored.get("confidence") or 0.95
    if not 0.5 < confidence < 1.0:
        raise UserError(f"--confidence must be between 0.5 and 1 (got {confidence})")
    need = min_first_batch(confidence)
    first = args.first_batch or stored.get("first_batch") or need
    if first < need:
        raise UserError(f"--first-batch {first} is below {need}, the fewest prompts an "
                        f"interval at {confidence:g} can rest on")
    batch = args.batch or stored.get("batch") or DEFAULT_BATCH
    wer_budget = (args.wer_budget if args.wer_budget is not None
                  else stored.get("wer_budget", DEFAULT_WER_BUDGET))
    goal = args.goal or stored.get("goal") or GOALS[0]
    cores = (manifest.get("environment") or {}).get("cpu_count")
    budget = None
    if args.max_usd is not None or args.max_gpu_hours is not None:
        budget = Budget(load_prices(), cores if isinstance(cores, int) else None,
                        args.max_gpu_hours, args.max_usd)
    truth = load_truth(args.truth) if args.truth is not None else None
    summary = replay(records, first_batch=first, batch=batch,
                     settings=PolicySettings(confidence=confidence, wer_budget_points=wer_budget,
                                             goal=goal),
                     n_replays=args.replays, seed=args.seed, budget=budget, truth=truth)
    if args.json:
        print(json.dumps(summary.to_json(), indent=1, default=_plain))
        return 0
    print(f"adaptive replay of {args.run}")
    for line in summary.lines():
        print(line)
    return 0


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers (json's fallback)."""
    return value.item() if hasattr(value, "item") else str(value)
