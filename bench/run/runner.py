"""Runs a sweep: spec -> generations -> a backend -> records in the run store.

The runner owns the store; backends only produce records. Every record is appended (and
fsynced) the moment it arrives, so an interrupted sweep loses at most the generation in
flight. Re-running the same spec finds the unfinished run and skips what is done.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor
from tqdm import tqdm

from bench.core import faults
from bench.run.measure import capture_environment
from bench.run.worker import Generation, plan
from bench.spec.prompt_files import Prompt
from bench.spec.prompts import load_prompts
from bench.spec.sweep import Cell, SweepSpec, spec_to_dict
from bench.store.files import atomic_target
from bench.store.history import list_runs
from bench.store.layout import DEFAULT_RUNS_ROOT, StoreError
from bench.store.run_store import RunStore
from echo_tts.audio import wav_bytes

UNFINISHED = {"running", "interrupted"}

RecordSink = Callable[[dict[str, Any], Tensor | bytes | None], None]
CellHook = Callable[[Cell], None]


class Backend(Protocol):
    """Executes generations and hands each record (and its audio) to ``sink``."""

    name: str

    def execute(self, spec: SweepSpec, work: dict[Cell, list[Generation]], sink: RecordSink,
                on_cell_done: CellHook) -> None: ...


@dataclass(frozen=True)
class Staging:
    """A staged sweep's stages (an adaptive sweep, ``bench.spec.adaptive``, or a
    history-aware one, ``bench.spec.history_aware``): ``batches`` are the units each stage
    adds, a unit being what ``unit_of`` names a generation by (default its prompt id);
    after a stage ran, ``after_stage(store, stage, cells_run)`` returns the cell ids that
    go on to the next one (empty: stop). Stage s runs, for those cells, every unit of
    stages 0..s they lack, so a cell let back in catches up. Decisions are the caller's
    (the policy sits above this layer); the runner only runs them."""

    batches: tuple[tuple[str, ...], ...]
    after_stage: Callable[[RunStore, int, frozenset[str]], frozenset[str]]
    unit_of: Callable[[Generation], str] = field(default=lambda g: g.prompt.id)

    @staticmethod
    def draw_of(generation: Generation) -> str:
        """A generation's ``prompt/seed``: the unit of a history-aware run (its repeats,
        timing only, go with it)."""
        return f"{generation.prompt.id}/{generation.seed}"

    def work(self, work: dict[Cell, list[Generation]], stage: int, cells: frozenset[str]
             ) -> dict[Cell, list[Generation]]:
        """The part of ``work`` stage ``stage`` runs for ``cells``."""
        allowed = {u for batch in self.batches[:stage + 1] for u in batch}
        out = {cell: [g for g in gens if self.unit_of(g) in allowed]
               for cell, gens in work.items() if cell.id in cells}
        return {cell: gens for cell, gens in out.items() if gens}


@dataclass
class SweepOutcome:
    run_dir: Path
    total: int
    skipped: int
    ok: int = 0
    failed: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # cell label -> first error
    resumed: bool = False

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def find_unfinished(root: Path, spec: SweepSpec) -> Path | None:
    """The latest unfinished run of this exact spec (same hash) under ``root``, if any."""
    candidates = [r for r in list_runs(root, spec.name)
                  if r.get("spec_hash") == spec.hash and r.get("status") in UNFINISHED]
    if not candidates:
        return None
    path = root / str(candidates[-1]["path"])
    return path if path.is_dir() else None


def open_store(spec: SweepSpec, root: Path, resume: str | None, new: bool, *,
               lock: bool = True) -> tuple[RunStore, bool]:
    """Create a run, or open the one to resume (explicit, or the unfinished run of this spec).
    ``lock=False``: no flock (a run on a Modal Volume, see :meth:`RunStore.create`)."""
    target: Path | None = None
    if resume:
        target = Path(resume) if Path(resume).is_dir() else root / resume
        if not target.is_dir():
            raise StoreError(f"no run {resume!r} (looked in {root}); pass a run folder or id "
                             "from `echo-bench runs`")
    elif not new:
        target = find_unfinished(root, spec)
    if target is not None:
        store = RunStore.open(target, lock=lock)
        if store.manifest.get("spec_hash") != spec.hash:
            store.close()
            raise StoreError(f"run {target.name} was made from a different spec (hash "
                             f"{store.manifest.get('spec_hash')}, now {spec.hash}); start a new "
                             "run with --new or restore the spec")
        return store, True
    store = RunStore.create(
        root, spec=spec_to_dict(spec), spec_name=spec.name, spec_hash=spec.hash,
        environment=capture_environment(spec.hash), keep_audio=spec.measure.keep_audio,
        max_audio_files=spec.measure.max_audio_files, lock=lock)
    return store, False


def pending_work(spec: SweepSpec, prompts: list[Prompt], done: set[str],
                 extra_seeds: Sequence[int] = ()) -> tuple[dict[Cell, list[Generation]], int]:
    """Generations still to run, grouped by cell (cells in spec order), and the total
    (on the spec's seeds plus ``extra_seeds``)."""
    seeds = list(dict.fromkeys([*spec.measure.seeds, *extra_seeds]))
    everything = plan(spec.cells, prompts, seeds, spec.measure.repeats)
    work: dict[Cell, list[Generation]] = {}
    for gen in everything:
        if gen.key not in done:
            work.setdefault(gen.cell, []).append(gen)
    return work, len(everything)


def run_sweep(spec: SweepSpec, backend: Backend, *, root: Path = DEFAULT_RUNS_ROOT,
              resume: str | None = None, new: bool = False,
              after_cell: Callable[[RunStore, Cell, list[str]], None] | None = None,
              before_finalize: Callable[[RunStore], None] | None = None,
              progress: bool = True, extra_seeds: Sequence[int] = (),
              lock: bool = True, staging: Staging | None = None) -> SweepOutcome:
    """Run (or resume) a sweep; returns counts and the failures by cell.

    ``extra_seeds`` measure more prompt/seed pairs than the spec plans (the gate's extra
    rounds when its speed check is inconclusive); the manifest lists them.

    ``after_cell(store, cell, keys)`` runs as each cell finishes (in-sweep scoring);
    ``before_finalize(store)`` once all generations are done (catch-up work such as
    scoring what an interrupted earlier attempt left unscored).

    ``staging``: run in stages (an adaptive sweep); each record carries
    ``adaptive_stage``, the stage it ran in, and ``total`` counts what the stages ran.
    """
    prompts = load_prompts(spec.prompts)
    store, resumed = open_store(spec, root, resume, new, lock=lock)
    with store:
        for message in store.repaired:
            print(f"repaired: {message}", file=sys.stderr)
        # Seeds an earlier call added stay part of the run: a resume finishes them too.
        extra = list(dict.fromkeys([*(store.manifest.get("extra_seeds") or []), *extra_seeds]))
        if extra_seeds:
            store.update_manifest(extra_seeds=extra)
        work, total = pending_work(spec, prompts, store.done_keys(), extra)
        todo = sum(len(g) for g in work.values())
        outcome = SweepOutcome(store.path, total, total - todo, resumed=resumed)
        if resumed:
            print(f"resuming {store.path}: {total - todo} of {total} generations already done")
        store.update_manifest(status="running", backend=backend.name)
        bars: list[tqdm[Any]] = []

        def progress_bar() -> tqdm[Any]:
            # Made on the first record, so whatever the backend prints or raises before
            # (model loading, a cost estimate, a bad-weights error) is not mixed with it.
            if not bars:
                bars.append(tqdm(total=total, initial=total - todo, unit="gen",
                                 disable=not progress, desc=spec.name, dynamic_ncols=True,
                                 file=sys.stderr))
            return bars[0]
        # Keys recorded per cell, handed to after_cell when the backend says a cell is done.
        keys_by_cell: dict[str, list[str]] = {}
        # Each record's place in the whole run, continued across resumes.
        seq = [1 + max((int(r.get("order_seq", -1)) for r in store.records(with_scores=False)),
                       default=-1)]

        stage_now: list[int] = []  # the stage running, when staged

        def sink(record: dict[str, Any], audio: Tensor | bytes | None) -> None:
            record = {**record, "order_seq": seq[0]}
            if stage_now:
                record["adaptive_stage"] = stage_now[0]
            seq[0] += 1
            if record["status"] == "ok" and audio is not None:
                path = store.claim_audio_path(record["key"])
                if path is not None:
                    try:
                        write_audio(path, audio)
                        record["audio_path"] = store.relative(path)
                    except OSError as err:
                        # A full disk or a failing volume loses this output, not the
                        # sweep: record the failure (it will run again on resume) and go on.
                        record = failed_audio_record(record, err)
            store.append(record)
            keys_by_cell.setdefault(record["cell_id"], []).append(record["key"])
            faults.after_event("kill_after_record")
            if record["status"] == "ok":
                outcome.ok += 1
            else:
                outcome.failed += 1
                outcome.failures.setdefault(record.get("cell_label", record["cell_id"]),
                                            str(record.get("error")))
            progress_bar().update(1)

        def on_cell_done(cell: Cell) -> None:
            progress_bar().set_postfix_str(f"cell {cell.label}")
            keys = keys_by_cell.pop(cell.id, [])
            if after_cell is not None:
                after_cell(store, cell, keys)

        status = "interrupted"
        try:
            if staging is None:
                backend.execute(spec, work, sink, on_cell_done)
            else:
                run_stages(staging, work, outcome, lambda w: backend.execute(
                    spec, w, sink, on_cell_done), stage_now, store, spec.cells)
            if before_finalize is not None:
                before_finalize(store)
            # Generations lost with a remote call are not done: the run stays resumable.
            status = "interrupted" if store.lost_keys() else "complete"
        finally:
            for bar in bars:
                bar.close()
            store.finalize(status)
    return outcome


def run_stages(staging: Staging, work: dict[Cell, list[Generation]], outcome: SweepOutcome,
               execute: Callable[[dict[Cell, list[Generation]]], None], stage_now: list[int],
               store: RunStore, spec_cells: Sequence[Cell]) -> None:
    """Run ``work`` stage by stage, asking ``staging.after_stage`` which cells go on. A
    resumed run decides again from its records, so it takes the same path."""
    cells = frozenset(c.id for c in spec_cells)
    planned = outcome.skipped
    for stage in range(len(staging.batches)):
        part = staging.work(work, stage, cells)
        planned += sum(len(g) for g in part.values())
        stage_now[:] = [stage]
        if part:
            execute(part)
        for cell, gens in part.items():  # what ran is no longer pending
            ran = set(gens)
            work[cell] = [g for g in work[cell] if g not in ran]
        cells = staging.after_stage(store, stage, cells)
        if not cells:
            break
    outcome.total = planned


def write_audio(path: Path, audio: Tensor | bytes) -> None:
    """Write a WAV (float audio [1, T] at 44.1 kHz, or the bytes of a WAV file) atomically.

    On failure (OSError: disk full, I/O error) no partial file is left behind; on success
    the file is on disk before the record that names it is appended.
    """
    faults.audio_write(path.name, path)
    data = audio if isinstance(audio, bytes) else wav_bytes(audio)
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


def failed_audio_record(record: dict[str, Any], err: OSError) -> dict[str, Any]:
    """``record`` (a generation that ran) turned into a failure to store its audio."""
    reason = f"[Errno {err.errno}] {err.strerror}" if err.errno else str(err)
    return {**record, "status": "failed", "error": f"{type(err).__name__}: {reason}"[:500],
            "error_type": type(err).__name__, "error_phase": "write-audio",
            "error_where": "runner.write_audio", "audio_path": None}

