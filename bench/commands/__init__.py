"""One module per ``echo-bench`` command; each exposes ``add(sub)`` and ``run(args)``."""

from __future__ import annotations

import argparse

COMMANDS: tuple[str, ...] = ("sweep",)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    import importlib

    for name in COMMANDS:
        importlib.import_module(f"bench.commands.{name}").add(sub)
