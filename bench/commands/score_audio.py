"""``echo-bench score-audio DIR --prompts SET``: score a folder of audio (another TTS
system, ground-truth recordings) with the metrics a sweep uses, as a run of its own."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands.score import parse_mos, print_skipped_and_failed
from bench.scoring.controls import score_audio_folder
from bench.scoring.protocols import PROTOCOLS, get_protocol
from bench.scoring.run_scoring import QualityScorer, make_asr
from bench.scoring.speaker import SPEAKER_ENCODERS
from bench.spec.prompts import load_prompts
from bench.store.layout import DEFAULT_RUNS_ROOT


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("score-audio", help="score a folder of audio named <prompt id>.wav "
                       "against a prompt set (a control row)")
    p.add_argument("folder", type=Path, help="folder of .wav/.flac files named <prompt id>")
    p.add_argument("--prompts", required=True, metavar="SET",
                   help='the prompt set the files speak: "builtin", a named set '
                   "(seed-tts-eval:en, librispeech-pc:test-clean), a meta.lst or a .jsonl")
    p.add_argument("--speakers", choices=("espeak",), default=None,
                   help="give built-in prompts their espeak-ng speakers (as the sweeps do)")
    p.add_argument("--name", default=None, help="label of the audio (default: folder name)")
    p.add_argument("--asr", default="large-v3", help="Whisper model (default large-v3)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--protocol", default=None,
                   help=f"WER protocol: {', '.join(PROTOCOLS)} (default whisper-normalizer)")
    p.add_argument("--sim", choices=("none", *SPEAKER_ENCODERS), default="none",
                   help="speaker encoder for SIM against the prompts' speaker references")
    p.add_argument("--mos", default="none", help="comma-separated MOS metrics, or none")
    p.add_argument("--models-dir", default=None, help="folder of cached scoring models")
    p.add_argument("--out", type=Path, default=DEFAULT_RUNS_ROOT,
                   help=f"folder the scored run goes in (default {DEFAULT_RUNS_ROOT})")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    protocol = get_protocol(args.protocol)  # a typo fails before any model loads
    prompts = load_prompts(args.prompts, speakers=args.speakers)
    asr = make_asr(args.asr, args.device)
    quality = QualityScorer.load(args.sim, parse_mos(args.mos) or [], args.device,
                                 args.models_dir)
    for name, message in quality.missing.items():
        print(f"{name} not scored: {message}")
    run_dir, outcome, without_file = score_audio_folder(args.folder, prompts, args.out, asr,
                                                        protocol, name=args.name,
                                                        quality=quality)
    print(f"run directory: {run_dir}")
    print(f"scored {outcome.scored} files with {asr.name} under {protocol.name} "
          f"({without_file} prompts of the set have no file)")
    print_skipped_and_failed(outcome)
    if quality.missing:
        return 2  # a metric asked for cannot run; the line above says how to fix it
    return 1 if outcome.failed else 0
