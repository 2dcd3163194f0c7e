"""``echo-bench prompt-sets``: list the standard prompt sets and fill their cache."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.spec.prompt_sets import NAMED_SETS, install, set_folder, sets_root


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("prompt-sets", help="list the standard prompt sets; install one into "
                       "the set cache (a folder, or a mounted Modal Volume)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("list", help="each set, where it is looked for, and whether it is there")
    inst = verbs.add_parser("install", help="copy or unpack a downloaded set into the cache")
    inst.add_argument("name", choices=sorted(NAMED_SETS))
    inst.add_argument("--from", dest="sources", type=Path, action="append", default=[],
                      metavar="PATH", help="downloaded archive, folder or list file (repeat)")
    inst.add_argument("--download", action="store_true",
                      help="fetch the set's public files (LibriSpeech-PC only)")
    inst.add_argument("--root", type=Path, default=None,
                      help="set cache (default $ECHO_BENCH_PROMPT_SETS or "
                      "~/.cache/echo-bench/prompt-sets)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.verb == "list":
        for name in NAMED_SETS:
            folder = set_folder(name)
            print(f"{name}: {folder} ({'present' if folder.is_dir() else 'not installed'})")
        print(f"set cache: {sets_root()} (ECHO_BENCH_PROMPT_SETS overrides)")
        return 0
    prompts = install(args.name, args.sources, download=args.download, root=args.root)
    with_gt = sum(p.ground_truth_wav is not None for p in prompts)
    print(f"installed {args.name} in {set_folder(args.name, args.root)}: {len(prompts)} "
          f"prompts, {with_gt} with ground-truth recordings")
    return 0
