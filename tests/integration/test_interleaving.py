"""Run order does not decide timings: interleaved rounds, warm-up of every shape, cached
speakers, on the tiny random model on the CPU (issue 15).

* A candidate sampling 4x the NFE of the baseline FAILs the gate's speed check even with
  CPU-burning processes beside the gate for the first half of its generations. Run cell
  after cell (``LocalBackend(interleave=False)``), the burners slow only the baseline and
  the same comparison comes out PASS or INCONCLUSIVE (bench/scripts/order_effects.py
  busy-gate --grouped shows it).
* Two cells doing identical work (they differ only by the inert truncation_factor = 1.0)
  over prompts with speaker clips of several lengths have the same median times whichever
  runs first. Before warm-up covered every shape and every speaker, the first cell paid
  the speaker encodes and first-shape costs: its median total was many times the second's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from bench.backends.local import LocalBackend
from bench.gate.run_gate import ConfigArg, run_gate
from bench.gate.sweep import load_gate_spec
from bench.run.runner import run_sweep
from bench.scripts.order_effects import HalfLoaded, write_prompts
from bench.spec.parser import load_spec
from bench.store.records import load_records
from echo_tts.production import ProductionConfig
from tests.tiny import TINY_MODEL_TOML

CONFIG = """[sampler]
num_steps = {steps}
sequence_length = 32
[model]
model = "random:tiny"
codec = "random:tiny"
pca = "random:tiny"
dtype = "float32"
"""


@pytest.mark.slow
def test_4x_the_nfe_fails_the_gate_beside_a_busy_neighbour(tmp_path: Path) -> None:
    ids = [f"en-{i:03d}" for i in range(1, 11)]
    gate_path = tmp_path / "gate.toml"
    gate_path.write_text(f"""name = "busy"
[model]
device = "cpu"
[prompts]
set = "builtin"
ids = {json.dumps(ids)}
[measure]
warmup = 1
seeds = [0]
score = false
[gate]
# The sampler is what the step count changes; the tiny codec's decode would dilute it.
speed_metric = "t_sampling"
require_quality = false
min_prompts = 3
n_boot = 200
""")
    sides = []
    for steps in (4, 16):
        path = tmp_path / f"prod{steps}.toml"
        path.write_text(CONFIG.format(steps=steps))
        sides.append(ConfigArg(path, ProductionConfig.from_file(path)))
    # Burners outnumber the cores twice over, so the first half runs several times
    # slower than the second: cell after cell, that alone would hide a 4x slowdown.
    backend = HalfLoaded(burners=2 * max(2, len(os.sched_getaffinity(0))))
    verdict = run_gate(sides[0], sides[1], load_gate_spec(gate_path), backend=backend,
                       root=tmp_path / "runs")
    speed = verdict.check("speed")
    assert speed.status == "FAIL", speed.summary
    assert speed.figures["ratio"] > 2
    assert verdict.baseline is not None
    records = load_records(verdict.baseline.run_dir)
    # The two cells alternated: every round holds one generation of each.
    assert records["order_interleaved"].all()
    per_round = records.groupby(["order_round", "seed"])["cell_id"].nunique()
    assert (per_round == 2).all()


def _twins(tmp_path: Path, n_prompts: int) -> pd.DataFrame:
    prompts = write_prompts(tmp_path, n_prompts)
    spec_path = tmp_path / "twins.toml"
    spec_path.write_text(f"""name = "twins"
{TINY_MODEL_TOML}
[prompts]
set = "{prompts}"
[grid]
num_steps = [4]
sequence_length = [64]
truncation_factor = ["unset", 1.0]
[measure]
warmup = 1
seeds = [0]
score = false
""")
    outcome = run_sweep(load_spec(spec_path), LocalBackend(), root=tmp_path / "runs",
                        progress=False)
    records = load_records(outcome.run_dir)
    assert (records["status"] == "ok").all()
    return records


@pytest.mark.slow
def test_identical_cells_time_alike_whatever_their_order(tmp_path: Path) -> None:
    records = _twins(tmp_path, n_prompts=4)
    cells = list(dict.fromkeys(records["cell_id"]))
    assert len(cells) == 2
    # Every speaker was encoded before timing began, in both cells alike.
    assert records["speaker_cached"].all()
    medians = records.groupby("cell_id")[["t_total", "t_speaker_encode", "t_decode"]].median()
    ratio = medians.loc[cells[0], "t_total"] / medians.loc[cells[1], "t_total"]
    # The old order made this 1.3x to 20x and more (speaker encodes, first shapes); what is
    # left is the shared machine's noise, which rounds spread over both cells.
    assert 1 / 1.3 < ratio < 1.3, medians
    # The order is recorded: a sequence number per record, rounds of both cells.
    assert sorted(records["order_seq"]) == list(range(len(records)))
    assert set(records["order_position"]) == {0, 1}


class _StopAfter:
    """The local backend, interrupted (as by Ctrl-C) after ``n`` records."""

    name = "local"

    def __init__(self, n: int) -> None:
        self.n = n

    def execute(self, spec, work, sink, on_cell_done):  # type: ignore[no-untyped-def]
        seen = [0]

        def counting(record, audio):  # type: ignore[no-untyped-def]
            sink(record, audio)
            seen[0] += 1
            if seen[0] == self.n:
                raise KeyboardInterrupt

        LocalBackend().execute(spec, work, counting, on_cell_done)


def test_a_resumed_interleaved_sweep_runs_exactly_the_missing_generations(
        tmp_path: Path) -> None:
    spec_path = tmp_path / "resume.toml"
    spec_path.write_text(f"""name = "resume"
{TINY_MODEL_TOML}
[prompts]
set = "builtin"
ids = ["en-001", "en-002", "en-003"]
long_text = "truncate"
[grid]
num_steps = [2, 3]
sequence_length = [16]
[measure]
warmup = 0
seeds = [0]
score = false
""")
    spec = load_spec(spec_path)
    done_cells: list[str] = []

    def after_cell(store, cell, keys):  # type: ignore[no-untyped-def]
        # Fired once the cell's last generation is recorded: all its keys are stored.
        done_cells.append(cell.id)
        stored = {r["key"] for r in store.records() if r["cell_id"] == cell.id}
        assert keys and set(keys) <= stored and len(stored) == 3

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, _StopAfter(3), root=tmp_path / "runs", progress=False)
    first = load_records(next((tmp_path / "runs").glob("*resume*")))
    assert len(first) == 3 and done_cells == []  # mid-round: no cell was complete
    outcome = run_sweep(spec, LocalBackend(), root=tmp_path / "runs", progress=False,
                        after_cell=after_cell)
    assert outcome.resumed and outcome.skipped == 3 and outcome.ok == 3
    records = load_records(outcome.run_dir)
    assert len(records) == 6 and records["key"].is_unique
    assert sorted(records["order_seq"]) == list(range(6))
    assert records["order_interleaved"].all()
    assert sorted(done_cells) == sorted(c.id for c in spec.cells)
