"""``echo-bench nightly-replay LAST TONIGHT``: replay two full runs of the same spec
through the history-aware nightly (:mod:`bench.analysis.nightly_replay`): what tonight's
run would have spent and which cells it flags, against the full comparison's flags."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.analysis.nightly import NightSettings, comparable
from bench.analysis.nightly_replay import replay_nights
from bench.analysis.steps import StepSizes
from bench.core.errors import UserError
from bench.spec.history_aware import DEFAULT_BATCH, DEFAULT_FIRST_BATCH
from bench.store.records import load_records


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("nightly-replay",
                       help="replay two full runs of one spec through the history-aware "
                            "nightly: compute spent and cells flagged")
    p.add_argument("last", type=Path, help="last night's run directory (a full run)")
    p.add_argument("tonight", type=Path, help="tonight's run directory (a full run)")
    p.add_argument("--replays", type=int, default=100, help="prompt orders (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first order (then +1 ...)")
    p.add_argument("--first-batch", type=int, default=DEFAULT_FIRST_BATCH,
                   help="draws (a prompt and a seed) every cell runs first (default "
                        f"{DEFAULT_FIRST_BATCH})")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                   help=f"draws per later look (default {DEFAULT_BATCH})")
    sizes = StepSizes()
    p.add_argument("--speed-step", type=float, default=sizes.speed_factor,
                   help=f"speed step factor (default {sizes.speed_factor:g})")
    p.add_argument("--wer-step", type=float, default=sizes.wer_points,
                   help=f"corpus WER step in points (default {sizes.wer_points:g})")
    p.add_argument("--json", action="store_true", help="print a JSON object instead")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.replays < 1:
        raise UserError(f"--replays must be at least 1 (got {args.replays})")
    if args.first_batch < 2 or args.batch < 1:
        raise UserError("--first-batch must be at least 2 (an interval needs two draws) "
                        "and --batch at least 1")
    if not args.speed_step > 1 or not args.wer_step > 0:
        raise UserError("--speed-step must be above 1 (e.g. 1.1) and --wer-step above 0")
    last, tonight = load_records(args.last), load_records(args.tonight)
    for name, records in (("LAST", last), ("TONIGHT", tonight)):
        if "adaptive_stage" in records.columns and records["adaptive_stage"].notna().any():
            raise UserError(f"{name} {getattr(args, name.lower())} is a staged run: replay "
                            "two full runs (sweep with --no-adaptive)")
    why = comparable(last, tonight)
    if why is not None:
        raise UserError(f"{args.last} and {args.tonight} cannot be paired: {why}; pass two "
                        "full runs of the same spec")
    sizes = StepSizes(speed_factor=args.speed_step, wer_points=args.wer_step)
    settings = NightSettings(sizes=sizes, first_batch=args.first_batch, batch=args.batch)
    result = replay_nights(last, tonight, replays=args.replays, seed=args.seed,
                           settings=settings)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    print(f"nightly replay: {args.tonight} against {args.last}; steps: speed x"
          f"{sizes.speed_factor:g}, corpus WER {sizes.wer_points:g} pts, SIM {sizes.sim:g}, "
          f"UTMOS {sizes.mos:g}; a step flagged at {settings.confidence:.0%}, no regression "
          f"at {settings.none_confidence:.0%}; first {settings.first_batch} draws (a prompt "
          f"and a seed), then {settings.batch} per look")
    for line in result.lines():
        print(line)
    return 0
