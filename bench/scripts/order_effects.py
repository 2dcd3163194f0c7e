"""Measure what run order does to timings, on the tiny random model on this machine's CPU.

Two experiments (issue 15), each printing one JSON line:

* ``first-cell``: two cells doing identical work (they differ only by the inert
  ``truncation_factor`` = unset / 1.0) over prompts that carry speaker clips of several
  lengths. Prints each cell's median stage times in run order and the first/second
  ratio of median total time (1.0 when order does not matter).
* ``busy-gate``: the gate on a baseline of 4 steps against a candidate of 16 steps while
  CPU-burning processes run beside it for the first half of the generations. Prints the
  verdict, the speed ratio and p (the right answer is FAIL: the candidate is ~4x slower).

Usage::

    python -m bench.scripts.order_effects first-cell [--prompts 6] [--repeats 1]
    python -m bench.scripts.order_effects busy-gate [--pairs 10] [--burners N] [--grouped]

Only public APIs are used (run_sweep, run_gate, LocalBackend), so the script measures
older code as well as newer.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from bench.backends.local import LocalBackend
from bench.gate.run_gate import ConfigArg, run_gate
from bench.gate.sweep import load_gate_spec
from bench.run.runner import run_sweep
from bench.run.worker import Generation
from bench.spec.parser import load_spec
from bench.spec.sweep import Cell
from bench.store.records import load_records
from echo_tts.production import ProductionConfig

MODEL = """[model]
model = "random:tiny"
codec = "random:tiny"
pca = "random:tiny"
dtype = "float32"
device = "cpu"
"""

TEXTS = ["Thank you for calling.", "Please hold the door for the next person.",
         "The meeting moved to half past three on Thursday.", "Good morning.",
         "Numbers like 42 and 1999 are read aloud.", "Where did you put the keys?",
         "A quick brown fox jumps over the lazy dog.", "It rained all week in the valley.",
         "Call me when you land.", "The library closes at nine tonight."]


def write_prompts(folder: Path, n: int) -> Path:
    """A JSONL prompt set whose prompts each carry their own speaker clip (0.25-0.55 s)."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        wav = folder / f"spk{i}.wav"
        seconds = 0.25 + 0.1 * (i % 4)
        t = np.arange(int(44100 * seconds)) / 44100
        audio = 0.3 * np.sin(2 * math.pi * (120 + 20 * i) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(wav, audio.astype(np.float32), 44100)
        lines.append(json.dumps({"id": f"p{i}", "text": TEXTS[i % len(TEXTS)],
                                 "speaker_wav": wav.name}))
    path = folder / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def twins_spec(model_toml: str, prompts: Path, *, repeats: int = 1) -> str:
    """A spec of two cells doing identical work: truncation_factor 1.0 is a no-op, so the
    cells differ in id only, and any difference between them is the order they ran in."""
    return f"""name = "twins"
{model_toml}
[prompts]
set = "{prompts}"
[grid]
num_steps = [4]
sequence_length = [64]
truncation_factor = ["unset", 1.0]
[measure]
warmup = 1
repeats = {repeats}
seeds = [0]
score = false
"""


def first_cell(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prompts = write_prompts(folder, args.prompts)
        spec_path = folder / "twins.toml"
        spec_path.write_text(twins_spec(MODEL, prompts, repeats=args.repeats))
        spec = load_spec(spec_path)
        outcome = run_sweep(spec, LocalBackend(), root=folder / "runs", progress=False)
        records = load_records(outcome.run_dir)
    ok = records[records["status"] == "ok"]
    order = list(dict.fromkeys(ok["cell_id"]))  # first-finished cell first
    cells: list[dict[str, Any]] = []
    for cell_id in order:
        rows = ok[ok["cell_id"] == cell_id]
        cells.append({"cell": str(rows["cell_label"].iloc[0]), "n": len(rows),
                      **{f"median_{s}": float(rows[s].median())
                         for s in ("t_total", "t_speaker_encode", "t_decode", "t_sampling")}})
    ratio = cells[0]["median_t_total"] / cells[1]["median_t_total"]
    return {"experiment": "first-cell", "cells": cells, "first_over_second_total": ratio,
            "first_over_second_decode": cells[0]["median_t_decode"] / cells[1]["median_t_decode"]}


def _burn() -> None:  # pragma: no cover - runs in a child process
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2**31


class HalfLoaded:
    """A local backend with CPU burners running until half the generations are recorded
    (``interleave=False``: cell after cell, the order before rounds existed)."""

    name = "local"

    def __init__(self, burners: int, interleave: bool = True) -> None:
        self.inner = (LocalBackend(ignore_gpu=True) if interleave
                      else LocalBackend(ignore_gpu=True, interleave=False))
        self.burners = burners

    def execute(self, spec: Any, work: dict[Cell, list[Generation]],
                sink: Callable[..., None], on_cell_done: Callable[[Cell], None]) -> None:
        total = sum(len(g) for g in work.values())
        # Only the gate's first sweep is disturbed; extra rounds it measures run quietly.
        burners, self.burners = self.burners, 0
        procs = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(burners)]
        for p in procs:
            p.start()
        seen = [0]

        def counting_sink(record: dict[str, Any], audio: Any) -> None:
            sink(record, audio)
            seen[0] += 1
            if seen[0] == total // 2:
                stop(procs)

        try:
            self.inner.execute(spec, work, counting_sink, on_cell_done)
        finally:
            stop(procs)


def stop(procs: list[multiprocessing.Process]) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join()


def busy_gate(args: argparse.Namespace) -> dict[str, Any]:
    ids = [f"en-{i:03d}" for i in range(1, 70)][: args.pairs]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        gate_path = folder / "gate.toml"
        gate_path.write_text(f"""name = "busy-gate"
[model]
device = "cpu"
[prompts]
set = "builtin"
ids = {json.dumps(ids)}
[measure]
warmup = 1
repeats = 1
seeds = [0]
score = false
[gate]
speed_metric = "t_sampling"
require_quality = false
min_prompts = 3
n_boot = 200
""")
        configs = []
        for steps in (4, 16):
            path = folder / f"prod{steps}.toml"
            path.write_text(f"""[sampler]
num_steps = {steps}
sequence_length = 32
[model]
model = "random:tiny"
codec = "random:tiny"
pca = "random:tiny"
dtype = "float32"
""")
            configs.append(ConfigArg(path, ProductionConfig.from_file(path)))
        verdict = run_gate(configs[0], configs[1], load_gate_spec(gate_path),
                           backend=HalfLoaded(args.burners, not args.grouped), root=folder / "runs")
    speed = verdict.check("speed")
    return {"experiment": "busy-gate", "burners": args.burners, "verdict": verdict.status,
            "speed": speed.status, "ratio": speed.figures.get("ratio"),
            "p": speed.figures.get("p_value"), "n_pairs": speed.figures.get("n_pairs"),
            "summary": speed.summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="experiment", required=True)
    a = sub.add_parser("first-cell")
    a.add_argument("--prompts", type=int, default=6)
    a.add_argument("--repeats", type=int, default=1)
    b = sub.add_parser("busy-gate")
    b.add_argument("--pairs", type=int, default=10)
    b.add_argument("--burners", type=int, default=2 * (os.cpu_count() or 1))
    b.add_argument("--grouped", action="store_true",
                   help="run cell after cell instead of in interleaved rounds")
    args = parser.parse_args()
    result = first_cell(args) if args.experiment == "first-cell" else busy_gate(args)
    print(json.dumps(result, default=lambda v: round(v, 4) if isinstance(v, float) else str(v)))


if __name__ == "__main__":
    main()
