"""``echo-bench score``: transcribe a run's audio with Whisper and add WER/CER to its records."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.errors import UserError
from bench.scoring.run_scoring import score_run


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("score", help="score a run's generations with Whisper (resumable)")
    p.add_argument("run_dir", type=Path, help="a run directory (results/runs/<run-id>)")
    p.add_argument("--asr", default=None, help="Whisper model name, checkpoint path or "
                   "random:tiny (default: the run's spec, else large-v3)")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: the run's spec)")
    p.add_argument("--rescore", action="store_true", help="score again even if already scored")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.run_dir.is_dir():
        raise UserError(f"{args.run_dir} is not a folder; pass a run directory from `echo-bench runs`")
    asr, outcome = score_run(args.run_dir, asr=args.asr, device=args.device, progress=True,
                             rescore=args.rescore)
    print(f"scored {outcome.scored} generations with {asr.name} "
          f"({outcome.already} already scored)")
    for reason, count in sorted(outcome.skipped.items()):
        print(f"  {reason}: {count}")
    for key, error in list(outcome.failed.items())[:10]:
        print(f"  failed {key}: {error}")
    if asr.is_random:
        print("note: random-weight ASR; WER figures are not meaningful")
    return 1 if outcome.failed else 0
