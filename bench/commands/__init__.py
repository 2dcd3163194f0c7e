"""One module per ``echo-bench`` command; each exposes ``add(sub)`` and ``run(args)``."""

from __future__ import annotations

import argparse
import importlib

COMMANDS: tuple[str, ...] = (
    "sweep", "runs", "score", "score_audio", "models", "prompt_sets", "report", "history",
    "dashboard", "gate", "profile", "modal", "pull", "adaptive_replay", "gate_replay",
    "nightly_replay",
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name in COMMANDS:
        importlib.import_module(f"bench.commands.{name}").add(sub)
