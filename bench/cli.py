"""The ``echo-bench`` command line.

Exit codes: 0 done, 1 some generations/checks failed, 2 bad input (a one-line message,
no traceback), 3 inconclusive (gate), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from bench.core.errors import UserError
from bench.scoring.asr import ASRError
from bench.scoring.models import ModelMissingError
from bench.spec.gpus import GpuError
from bench.spec.prompt_files import PromptError
from bench.spec.sweep import SpecError
from bench.store.layout import StoreError
from echo_tts.audio import AudioError
from echo_tts.autoencoder import DEFAULT_CODEC_REPO
from echo_tts.errors import first_line
from echo_tts.production import ProductionConfigError
from echo_tts.text import TextTooLongError
from echo_tts.weights import DEFAULT_MODEL_REPO, WeightsError

Handler = Callable[[argparse.Namespace], int]

# Bad input, one type per layer that reads it: the CLI prints the one-line message and
# exits 2. The CLI is the only place that knows them all, so no layer imports upward.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError, WeightsError, TextTooLongError, ProductionConfigError, SpecError, PromptError,
    StoreError, ASRError, ModelMissingError, AudioError, GpuError,
)


def _add_synth(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("synth", help="generate one utterance and print stage timings and RTF")
    p.add_argument("text", help="text to speak (long text is split into chunks)")
    p.add_argument("-o", "--output", default="out.wav", help="WAV file to write (default out.wav)")
    p.add_argument("--speaker", help="speaker reference WAV/FLAC for voice cloning")
    p.add_argument("--steps", type=int, default=40, help="diffusion steps (default 40)")
    p.add_argument("--cfg-mode", default="independent",
                   help="independent | alternating | joint | none (default independent)")
    p.add_argument("--sequence-length", type=int, default=640, help="latents per chunk (<= 640)")
    p.add_argument("--model", default=DEFAULT_MODEL_REPO,
                   help="DiT weights: folder, HF repo id or random:<preset>")
    p.add_argument("--codec", default=DEFAULT_CODEC_REPO,
                   help="codec weights: folder, HF repo id or random:<preset>")
    p.add_argument("--pca", default=None, help="PCA state source (default: the model's)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--dtype", default=None, help="model dtype: float32, bfloat16 (default: "
                   "bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-chunks", type=int, default=1,
                   help="chunks of a long text per sampler call (default 1)")
    p.add_argument("--no-chunk", action="store_true",
                   help="refuse text that does not fit one sequence instead of splitting it")
    p.set_defaults(handler=_lazy("bench.commands.synth", "run"))


def _lazy(module: str, name: str) -> Handler:
    """Import a command's module only when it runs (keeps `--help` fast)."""

    def handler(args: argparse.Namespace) -> int:
        import importlib

        function: Handler = getattr(importlib.import_module(module), name)
        return function(args)

    return handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="echo-bench",
        description="Benchmark and quality harness for the Echo-TTS sampler. "
                    "Without a command, runs the embedded smoke sweep and writes its report.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_synth(sub)
    from bench import commands

    commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["sweep", *(argv or [])])
    try:
        code: int = args.handler(args)
    except USER_ERRORS as err:
        message = first_line(err)
        print(f"echo-bench: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("echo-bench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return code


__all__ = ["UserError", "main"]

if __name__ == "__main__":
    sys.exit(main())
