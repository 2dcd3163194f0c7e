"""``echo-bench score``: transcribe a run's audio (WER/CER) and add the quality metrics the
spec or the options ask for (SIM, UTMOS, DNSMOS) to its records.

With ``--protocol`` the transcripts a run already holds are re-scored under that WER
protocol first, without loading the ASR; the ASR runs only for generations that have no
transcript yet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.core.errors import UserError
from bench.scoring.asr import ASR
from bench.scoring.controls import control_dirs, prompts_of_run, score_control
from bench.scoring.protocols import PROTOCOLS, get_protocol
from bench.scoring.quality import MOS_METRICS, QualityOutcome
from bench.scoring.rescore import rescore_protocol
from bench.scoring.run_scoring import QualityScorer, ScoringOutcome, score_run
from bench.scoring.speaker import SPEAKER_ENCODERS
from bench.store.run_store import RunStore


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("score", help="score a run's generations: WER, SIM, MOS (resumable)")
    p.add_argument("run_dir", type=Path, help="a run directory (results/runs/<run-id>)")
    p.add_argument("--asr", default=None, help="Whisper model name, checkpoint path, "
                   "random:tiny, or faster-whisper:<name or CTranslate2 folder> "
                   "(default: the run's spec, else large-v3)")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: the run's spec)")
    p.add_argument("--sim", choices=("none", *SPEAKER_ENCODERS), default=None,
                   help="speaker encoder for SIM (default: the run's spec, else none)")
    p.add_argument("--mos", default=None, help=f"comma-separated MOS metrics from "
                   f"{', '.join(MOS_METRICS)}, or none (default: the run's spec)")
    p.add_argument("--models-dir", default=None, help="folder of cached scoring models "
                   "(default $ECHO_BENCH_MODELS, else ~/.cache/echo-bench/models)")
    p.add_argument("--rescore", action="store_true", help="score again even if already scored")
    p.add_argument("--protocol", default=None,
                   help=f"WER protocol: {', '.join(PROTOCOLS)} (default: the run's spec, else "
                   "whisper-normalizer); stored transcripts are re-scored without the ASR")
    p.add_argument("--control", action="store_true",
                   help="also score the prompt set's own recordings as a ground-truth control "
                   "row (<run>/controls/ground-truth)")
    p.set_defaults(handler=run)


def parse_mos(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [] if text.strip() == "none" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MOS_METRICS]
    if unknown:
        raise UserError(f"--mos: unknown metric {', '.join(unknown)}; choose from "
                        f"{', '.join(MOS_METRICS)} (comma-separated) or none")
    return names


def print_quality(outcome: QualityOutcome, missing: dict[str, str]) -> None:
    """One line per metric: scored and skipped counts; one line per missing model."""
    for name in sorted({*outcome.scored, *outcome.skipped, *outcome.already} - set(missing)):
        skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(outcome.skipped.get(name, {}).items()))
        print(f"{name}: scored {outcome.scored.get(name, 0)} ({outcome.already.get(name, 0)} "
              f"already){'; not scored: ' + skipped if skipped else ''}")
    for name, message in missing.items():
        print(f"{name} not scored: {message}")


def run(args: argparse.Namespace) -> int:
    if not args.run_dir.is_dir():
        raise UserError(f"{args.run_dir} is not a folder; pass a run directory from `echo-bench runs`")
    if args.protocol is not None and not args.rescore and args.asr is None:
        protocol = get_protocol(args.protocol)
        untranscribed = 0
        # The control rows are re-scored too, so they stay comparable with the cells.
        for folder in [args.run_dir, *control_dirs(args.run_dir)]:
            with RunStore.open(folder) as store:
                done = rescore_protocol(store, protocol)
                store.write_parquet()
            untranscribed += done.untranscribed
            print(f"re-scored {done.rescored} generations of {folder.name} under "
                  f"{protocol.name} from stored transcripts, no ASR run ({done.already} "
                  "already under it)")
        if untranscribed == 0 and not args.control:
            return 0
        if untranscribed:
            print(f"{untranscribed} generations have no transcript yet; running the ASR")
    asr, outcome, quality, quality_outcome = score_run(
        args.run_dir, asr=args.asr, device=args.device, progress=True, rescore=args.rescore,
        sim=args.sim, mos=parse_mos(args.mos), models_root=args.models_dir,
        protocol=args.protocol)
    print(f"scored {outcome.scored} generations with {asr.name} "
          f"({outcome.already} already scored)")
    print_skipped_and_failed(outcome)
    failed = len(outcome.failed)
    if args.control:
        failed += _control(args.run_dir, asr, args.protocol, quality)
    if asr.is_random:
        print("note: random-weight ASR; WER figures are not meaningful")
    if quality.note:
        print(quality.note)
    print_quality(quality_outcome, quality.missing)
    if quality.missing:
        return 2  # a metric asked for cannot run: bad input, the line above says how to fix it
    return 1 if failed else 0


def _control(run_dir: Path, asr: ASR, protocol: str | None, quality: QualityScorer) -> int:
    """Score the ground-truth control of ``run_dir``; returns the number of failures."""
    with RunStore.open(run_dir) as store:
        manifest = store.manifest
    wer_protocol = get_protocol(protocol or manifest.get("spec", {}).get("measure", {})
                                .get("wer_protocol"))
    done = score_control(run_dir, prompts_of_run(manifest), asr, wer_protocol, quality)
    if done is None:
        print("control: the prompt set has no ground-truth recordings; no control row")
        return 0
    control_dir, outcome = done
    print(f"control: {outcome.scored} ground-truth recordings scored in {control_dir}")
    return len(outcome.failed)


def print_skipped_and_failed(outcome: ScoringOutcome) -> None:
    """One line per reason generations were skipped, then the first ten failures."""
    for reason, count in sorted(outcome.skipped.items()):
        print(f"  {reason}: {count}")
    for key, error in list(outcome.failed.items())[:10]:
        print(f"  failed {key}: {error}")
