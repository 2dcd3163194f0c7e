"""``echo-bench gate-replay``: simulated gates over constructed pairs with a known truth
(no model runs): false-FAIL rate, power, and pairs to verdict per case
(:mod:`bench.gate.replay`)."""

from __future__ import annotations

import argparse
import json

from bench.core.errors import UserError
from bench.gate.replay import CASES, Design, replay, to_json
from bench.gate.sweep import load_gate_spec
from bench.spec.shipped import resolve_spec_path

#: Generator seed of the reported figures; the gate's tuning used seeds 1 and 2.
DEFAULT_SEED = 1000


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("gate-replay",
                       help="simulate gates with a known truth: false-FAIL rate, power and "
                            "pairs to verdict")
    p.add_argument("--gates", type=int, default=200, help="simulated gates per case "
                   "(default 200)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"generator seed of the first case (default {DEFAULT_SEED})")
    p.add_argument("--spec", default="gate",
                   help="gate spec whose [gate] thresholds are simulated (default: gate)")
    p.add_argument("--prompts", type=int, default=69,
                   help="prompts in the simulated gate set (default 69, the shipped set)")
    p.add_argument("--seeds", type=int, default=2, help="planned seeds (default 2)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for name, low in (("gates", 1), ("prompts", 2), ("seeds", 1)):
        if getattr(args, name) < low:
            raise UserError(f"--{name} must be at least {low} (got {getattr(args, name)})")
    gate = load_gate_spec(resolve_spec_path(args.spec))
    design = Design(args.prompts, args.seeds, gate.thresholds)
    results = replay(args.gates, args.seed, design)
    if args.json:
        print(json.dumps(to_json(results, design, args.seed), indent=2))
        return 0
    t = design.thresholds
    print(f"gate replay: {args.gates} simulated gates per case, {design.n_prompts} prompts, "
          f"{design.seeds} planned seeds (budget {design.budget_seeds}), a look every "
          f"{t.stage_prompts} prompts; speed factor {t.speed_factor:g}, WER margin "
          f"+{t.wer_margin:g} pts, min_prompts {t.min_prompts}, alpha {t.alpha:g}; "
          f"generator seeds {args.seed}..{args.seed + len(CASES) - 1}")
    print(f"{'case':<14} {'FAIL':>6} {'PASS':>6} {'INCONCL':>8} {'median pairs':>13} "
          f"{'p90 pairs':>10} {'median compute s':>17}")
    for r in results:
        print(f"{r.name:<14} {r.fail_rate:>6.1%} {r.pass_rate:>6.1%} "
              f"{r.inconclusive_rate:>8.1%} {r.median_pairs:>13g} {r.p90_pairs:>10g} "
              f"{r.median_compute_seconds:>17.0f}")
    print("FAIL on 'identical' is the false-FAIL rate; on the others it is the power. "
          "Quality is simulated for corpus WER only (not CER, SIM, UTMOS).")
    return 0
