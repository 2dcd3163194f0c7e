"""One module per ``echo-bench`` command; each exposes ``add(sub)`` and ``run(args)``."""

from __future__ import annotations

import argparse
import importlib

COMMANDS: tuple[str, ...] = (
    "sweep", "runs", "score", "models", "report", "history", "gate", "profile", "modal", "pull",
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name in COMMANDS:
        importlib.import_module(f"bench.commands.{name}").add(sub)
