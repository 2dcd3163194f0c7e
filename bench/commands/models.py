"""``echo-bench models``: list the scoring models and fill the models folder.

``echo-bench models list`` shows where each model is looked for and whether it is there;
``echo-bench models fetch NAME`` downloads one (the only command here that needs the
network), or copies it from ``--from FILE`` for machines that cannot reach the source.
"""

from __future__ import annotations

import argparse

from bench.core.errors import UserError
from bench.scoring.asr_ct2 import PREFIX as FASTER_WHISPER
from bench.scoring.asr_ct2 import fetch_faster_whisper
from bench.scoring.models import MODEL_FILES, fetch_model, models_dir


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="list or fetch the scoring models (SIM, UTMOS, ASR)")
    p.add_argument("action", choices=("list", "fetch"))
    p.add_argument("name", nargs="?", help=f"model to fetch: {', '.join(MODEL_FILES)}, or "
                   f"{FASTER_WHISPER}<name> (e.g. {FASTER_WHISPER}large-v3)")
    p.add_argument("--models-dir", default=None, help="the models folder (default "
                   "$ECHO_BENCH_MODELS, else ~/.cache/echo-bench/models)")
    p.add_argument("--from", dest="source", default=None,
                   help="copy from this file or URL instead of the published source")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    root = models_dir(args.models_dir)
    if args.action == "list":
        print(f"models folder: {root}")
        for model in MODEL_FILES.values():
            state = "present" if (root / model.filename).is_file() else "missing"
            print(f"  {model.name:<16} {state:<8} {model.filename}  ({model.description}; "
                  f"licence: {model.licence})")
        print("  resemblyzer      bundled  (Resemblyzer package), dnsmos bundled (speechmos package)")
        return 0
    if not args.name:
        raise UserError("name the model to fetch: echo-bench models fetch "
                        f"{'|'.join(MODEL_FILES)}|{FASTER_WHISPER}<name>")
    try:
        if args.name.startswith(FASTER_WHISPER):
            path = fetch_faster_whisper(args.name.removeprefix(FASTER_WHISPER), root)
        elif args.name in MODEL_FILES:
            path = fetch_model(args.name, root, args.source)
        else:
            raise UserError(f"unknown model {args.name!r}; choose {', '.join(MODEL_FILES)} or "
                            f"{FASTER_WHISPER}<name>")
    except OSError as err:
        raise UserError(f"could not fetch {args.name}: {err}; check the network, or pass "
                        "--from FILE with a copy of it") from err
    print(f"fetched {args.name} -> {path}")
    return 0
