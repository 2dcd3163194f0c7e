"""Run order does not decide timings: interleaved rounds, warm-up of every shape, cached
speakers, on the tiny random model on the CPU (issue 15).

The timings here are read from a cost clock (tests/cost_clock.py), which moves only by
a fixed price per operation the pipeline performs, so each property is exact on any
machine, however busy (issue 22). The wall-clock experiments they stand for are
benchmarks that print their figures: ``python -m bench.scripts.order_effects first-cell``
and ``busy-gate [--grouped]``.

* A candidate sampling 4x the NFE of the baseline FAILs the gate's speed check even when
  a neighbour makes every operation 5x dearer for the first half of its generations: in
  interleaved rounds each pair shares the load. Run cell after cell
  (``LocalBackend(interleave=False)``), the same load skews the ratio 5x.
* Two cells doing identical work (they differ only by the inert truncation_factor = 1.0)
  over prompts with speaker clips of several lengths pay the same whichever runs first.
  Before warm-up covered every shape and every speaker, the first cell paid the speaker
  encodes and first-shape costs: its median total was many times the second's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.backends.local import LocalBackend
from bench.gate.run_gate import ConfigArg, run_gate
from bench.gate.sweep import load_gate_spec
from bench.gate.verdict import GateVerdict
from bench.run.runner import run_sweep
from bench.scripts.order_effects import twins_spec, write_prompts
from bench.spec.parser import load_spec
from bench.spec.sweep import SweepSpec
from bench.store.records import load_records
from echo_tts.production import ProductionConfig
from tests.cost_clock import CostClock
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


class _Counting:
    """The local backend (interleaved or cell after cell), telling the cost clock when
    each record is handed over; with ``busy_until_half`` the clock's load is 5 (a busy
    neighbour) until half the first sweep's generations are recorded, then 1."""

    name = "local"

    def __init__(self, clock: CostClock, *, interleave: bool = True,
                 busy_until_half: bool = False) -> None:
        self.clock = clock
        self.inner = LocalBackend(ignore_gpu=True, interleave=interleave)
        self.busy = busy_until_half

    def execute(self, spec, work, sink, on_cell_done):  # type: ignore[no-untyped-def]
        total = sum(len(g) for g in work.values())
        busy, self.busy = self.busy, False  # extra gate rounds run quietly
        self.clock.load = 5.0 if busy else 1.0
        seen = [0]

        def counting(record, audio):  # type: ignore[no-untyped-def]
            sink(record, audio)
            self.clock.count_record()
            seen[0] += 1
            if seen[0] == total // 2:
                self.clock.load = 1.0

        self.inner.execute(spec, work, counting, on_cell_done)


def _busy_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, interleave: bool
               ) -> tuple[GateVerdict, pd.DataFrame]:
    """The gate on 1 step (baseline) against 4 (candidate), the first half of its
    generations beside a neighbour that makes every operation 5x dearer. (On the cost
    clock 1 step against 4 is the same 4x as the benchmark's 4 against 16, at a quarter
    of the tiny model's real work.)"""
    ids = [f"en-{i:03d}" for i in range(1, 7)]
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
""")
    sides = []
    for steps in (1, 4):
        path = tmp_path / f"prod{steps}.toml"
        path.write_text(CONFIG.format(steps=steps))
        sides.append(ConfigArg(path, ProductionConfig.from_file(path)))
    clock = CostClock().install(monkeypatch)
    backend = _Counting(clock, interleave=interleave, busy_until_half=True)
    verdict = run_gate(sides[0], sides[1], load_gate_spec(gate_path), backend=backend,
                       root=tmp_path / "runs")
    assert verdict.baseline is not None
    return verdict, load_records(verdict.baseline.run_dir)


@pytest.mark.slow
def test_4x_the_nfe_fails_the_gate_beside_a_busy_neighbour(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    verdict, records = _busy_gate(tmp_path, monkeypatch, interleave=True)
    speed = verdict.check("speed")
    assert speed.status == "FAIL", speed.summary
    # Every round holds one generation of each cell, so each pair shares the neighbour's
    # load and the ratio is the NFE ratio (the pair straddling the switch aside).
    assert speed.figures["ratio"] == pytest.approx(4.0, rel=0.01)
    assert records["order_interleaved"].all()
    per_round = records.groupby(["order_round", "seed"])["cell_id"].nunique()
    assert (per_round == 2).all()


@pytest.mark.slow
def test_cell_after_cell_the_busy_neighbour_hides_the_4x(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why rounds exist: the same load on the cell that runs first (whichever that is)
    skews the comparison by 5x, so the gate no longer reads 4x."""
    verdict, records = _busy_gate(tmp_path, monkeypatch, interleave=False)
    assert not records["order_interleaved"].any()
    ratio = verdict.check("speed").figures["ratio"]
    assert ratio == pytest.approx(4.0 / 5.0, rel=0.01) or ratio == pytest.approx(4.0 * 5.0,
                                                                                rel=0.01)


def _twins(tmp_path: Path, clock: CostClock, n_prompts: int) -> pd.DataFrame:
    prompts = write_prompts(tmp_path, n_prompts)
    spec_path = tmp_path / "twins.toml"
    spec_path.write_text(twins_spec(TINY_MODEL_TOML, prompts))
    outcome = run_sweep(load_spec(spec_path), _Counting(clock), root=tmp_path / "runs",
                        progress=False)
    records = load_records(outcome.run_dir)
    assert (records["status"] == "ok").all()
    return records


@pytest.mark.slow
def test_identical_cells_pay_alike_whatever_their_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted on the cost clock (tests/cost_clock.py), not timed: what each generation
    pays is exact, so the first cell must pay exactly what the second does. The wall-clock
    ratio is a benchmark: ``python -m bench.scripts.order_effects first-cell``."""
    clock = CostClock().install(monkeypatch)
    records = _twins(tmp_path, clock, n_prompts=3)
    cells = list(dict.fromkeys(records["cell_id"]))
    assert len(cells) == 2
    # Every speaker clip was encoded once, before timing began, for both cells alike.
    assert records["speaker_cached"].all()
    encodes = clock.paid("speaker_encode")
    assert len(encodes) == 3 and not clock.paid("speaker_encode", after_first_record=True)
    # Every shape a timed generation meets was met in warm-up: no first-shape cost (kernel
    # plans, compiled graphs) lands inside a timing. (Shapes differ here: the clips have
    # several lengths, so warm-up had to cover each.)
    assert len(clock.paid("condition", cold=True)) > 1
    assert not clock.paid(cold=True, after_first_record=True)
    # So the two cells' timings are the same figures, whichever ran first.
    per_cell = records.groupby("cell_id")[["t_total", "t_speaker_encode", "t_decode"]]
    assert per_cell.sum().loc[cells[0]].tolist() == per_cell.sum().loc[cells[1]].tolist()
    medians = per_cell.median()
    assert medians.loc[cells[0], "t_total"] == medians.loc[cells[1], "t_total"] > 0
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


def tiny_unscored_spec(folder: Path, name: str, prompt_ids: list[str],
                       steps: list[int]) -> SweepSpec:
    """The tiny random model over built-in prompts, one cell per step count (16 latents,
    seed 0, no warm-up, no scoring): the cells share one pipeline, so they interleave."""
    path = folder / f"{name}.toml"
    path.write_text(f"""name = "{name}"
{TINY_MODEL_TOML}
[prompts]
set = "builtin"
ids = {json.dumps(prompt_ids)}
long_text = "truncate"
[grid]
num_steps = {json.dumps(steps)}
sequence_length = [16]
[measure]
warmup = 0
seeds = [0]
score = false
""")
    return load_spec(path)


def test_a_resumed_interleaved_sweep_runs_exactly_the_missing_generations(
        tmp_path: Path) -> None:
    spec = tiny_unscored_spec(tmp_path, "resume", ["en-001", "en-002", "en-003"], [2, 3])
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


def test_in_sweep_scoring_waits_for_the_groups_last_timed_generation(tmp_path: Path) -> None:
    # after_cell (in-sweep scoring) loads models whose thread pools spin on after each
    # call: run between the last round's generations, it slowed the cells still to come.
    spec = tiny_unscored_spec(tmp_path, "hook", ["en-001", "en-002"], [2, 3, 4])
    stored_at_call: list[int] = []

    def after_cell(store, cell, keys):  # type: ignore[no-untyped-def]
        stored_at_call.append(len(list(store.records(with_scores=False))))

    outcome = run_sweep(spec, LocalBackend(), root=tmp_path / "runs", progress=False,
                        after_cell=after_cell)
    assert outcome.ok == 6
    # Every cell's hook ran, each after all six generations of the group were timed.
    assert stored_at_call == [6, 6, 6]
