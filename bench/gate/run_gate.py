"""Running a gate: each side a production config (run now, interleaved) or a recorded run
(re-decided), then one verdict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.core.errors import UserError
from bench.gate.sweep import GateSpec, build_sweep
from bench.gate.verdict import GateVerdict, Scorer, Side, decide
from bench.scoring.outcomes import column
from bench.spec.sweep import SweepSpec
from bench.store.layout import DEFAULT_RUNS_ROOT
from bench.store.records import load_records
from echo_tts.production import ProductionConfig


@dataclass(frozen=True)
class ConfigArg:
    """A side given as a production config file."""

    path: Path
    config: ProductionConfig


@dataclass(frozen=True)
class RunArg:
    """A side given as a recorded run directory (``RUN`` or ``RUN@CELL_ID``)."""

    run_dir: Path
    cell_id: str | None


def parse_side(text: str) -> ConfigArg | RunArg:
    """A ``--baseline``/``--candidate`` value: a run directory (with ``@CELL_ID`` when the
    run has several cells) or a production config file."""
    from echo_tts.production import ProductionConfigError

    path_text, _, cell = text.partition("@") if "@" in text else (text, "", "")
    path = Path(path_text)
    if path.is_dir():
        if not (path / "manifest.json").is_file():
            raise UserError(f"{path} is a folder but not a run directory (no manifest.json)")
        return RunArg(path, cell or None)
    if cell:
        raise UserError(f"{text}: @CELL_ID only follows a run directory")
    try:
        return ConfigArg(path, ProductionConfig.from_file(path))
    except ProductionConfigError as exc:
        raise UserError(str(exc)) from None


def _cell_records(records: pd.DataFrame, run_dir: Path, cell_id: str | None,
                  role: str) -> tuple[pd.DataFrame, str]:
    cells = list(dict.fromkeys(column(records, "cell_id")))
    if cell_id is None:
        if len(cells) != 1:
            labels = dict(zip(column(records, "cell_id"), column(records, "cell_label"),
                              strict=True))
            listing = ", ".join(f"{c} ({labels.get(c)})" for c in cells) or "none"
            raise UserError(f"--{role} {run_dir}: the run has {len(cells)} cells; pick one "
                            f"as {run_dir}@CELL_ID from: {listing}")
        cell_id = str(cells[0])
    rows = records[column(records, "cell_id") == cell_id]
    if not len(rows):
        raise UserError(f"--{role} {run_dir}@{cell_id}: no records of that cell; cells: "
                        f"{', '.join(map(str, cells))}")
    return rows, cell_id


def run_gate(baseline: ConfigArg | RunArg, candidate: ConfigArg | RunArg, gate: GateSpec,
             *, backend: Any = None, root: Path = DEFAULT_RUNS_ROOT,
             scorer: Scorer = None, spec: SweepSpec | None = None) -> GateVerdict:
    """Run what has to run (one sweep for the config sides) and decide.

    ``backend`` is a runner backend (needed when a side is a config); ``scorer`` the
    ``after_cell`` hook that scores each cell as it finishes (None: no scoring);
    ``spec`` the sweep of the config sides when the caller already built it.
    """
    from bench.gate.rounds import looks, next_seed, undecided
    from bench.run.runner import Staging, run_sweep
    from bench.spec.prompts import load_prompts

    sides = {"baseline": baseline, "candidate": candidate}
    configs = [s.config for s in sides.values() if isinstance(s, ConfigArg)]
    notes: list[str] = []
    if not configs:
        return _decide_sides(sides, gate, None, None, notes)
    sweep = spec or build_sweep(gate, configs)
    if len(sweep.cells) == 1 and len(configs) == 2:
        notes.append("the candidate's settings equal the baseline's: one cell compared "
                     "with itself")
    t = gate.thresholds
    prompt_ids = [p.id for p in load_prompts(sweep.prompts)]
    added: list[int] = []
    run_dir: Path | None = None
    stops: list[str] = []

    def after_stage(store: Any, stage: int, cells: frozenset[str]) -> frozenset[str]:
        # Scores are in (the scorer runs as each cell's part of the stage finishes).
        verdict = _decide_sides(sides, gate, sweep, store.path, notes)
        if undecided(verdict.checks):
            return cells
        stops.append(f"decided after look {stage + 1} of pass {len(added) + 1}")
        return frozenset()

    while True:
        staging = Staging(tuple(looks(prompt_ids, t.stage_prompts, t.seed, len(added))),
                          after_stage)
        run_dir = run_sweep(sweep, backend, root=root, resume=None if run_dir is None
                            else str(run_dir), after_cell=scorer, extra_seeds=added,
                            staging=staging).run_dir
        if stops:
            break
        verdict = _decide_sides(sides, gate, sweep, run_dir, notes)
        seed = next_seed(sweep, added, len(prompt_ids), t.max_rounds)
        if not undecided(verdict.checks) or seed is None:
            break
        # Undecided after a whole pass: one more seed over every prompt, looked at in
        # stages again. The intervals are valid at every look (bench.gate.anytime).
        added.append(seed)
    more = ([f"undecided after the planned seeds: measured {len(added)} more seed(s) "
             f"({', '.join(map(str, added))}) in interleaved rounds"] if added else [])
    return _decide_sides(sides, gate, sweep, run_dir, [*notes, *more, *stops])


def _decide_sides(sides: Mapping[str, ConfigArg | RunArg], gate: GateSpec,
                  spec: SweepSpec | None, run_dir: Path | None, notes: list[str]
                  ) -> GateVerdict:
    """Load each side's records (the gate's own run for config sides) and decide."""
    frames: dict[str, tuple[pd.DataFrame, Side]] = {}
    if spec is not None and run_dir is not None:
        ids = {c.id: c for c in spec.cells}
        records = load_records(run_dir)
        # Cells keep the configs' order; equal configs collapse into one cell.
        cell_of_config = iter([spec.cells[0].id, spec.cells[-1].id])
        for role, side in sides.items():
            if isinstance(side, ConfigArg):
                cell_id = next(cell_of_config)
                rows = records[column(records, "cell_id") == cell_id]
                frames[role] = (rows, Side(role, ids[cell_id].label, str(side.path), cell_id,
                                           str(run_dir)))
    notes = list(notes)
    for role, side in sides.items():
        if isinstance(side, RunArg):
            rows, cell_id = _cell_records(load_records(side.run_dir), side.run_dir,
                                          side.cell_id, role)
            label = str(column(rows, "cell_label").iloc[0])
            frames[role] = (rows, Side(role, label, f"run {side.run_dir.name}", cell_id,
                                       str(side.run_dir)))
    configs = [s for s in sides.values() if isinstance(s, ConfigArg)]
    if len(configs) < 2 and any(isinstance(s, RunArg) for s in sides.values()):
        hosts = {str(v) for f, _ in frames.values() for v in column(f, "device_name").dropna()}
        if len(hosts) > 1:
            notes.append(f"the sides ran on different hardware ({', '.join(sorted(hosts))}): "
                         "speed is compared across machines")
    (base_rows, base_side), (cand_rows, cand_side) = frames["baseline"], frames["candidate"]
    return decide(base_rows, cand_rows, gate.thresholds, baseline_side=base_side,
                  candidate_side=cand_side, notes=notes)
