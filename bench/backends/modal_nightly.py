"""The nightly (and weekly) run inside Modal: resumable on the outputs Volume.

Modal may stop the orchestrating function and start it again on the same input
(preemption), and a maintainer may start it by hand the same night. Either way the
attempt must continue the night's run, not begin another one:

* The run lives on the Volume from its first moment (created, then committed), so a
  second attempt finds it: the unfinished run of the same spec (same hash) is resumed,
  exactly as a local sweep resumes; a run of the spec already complete today is not
  run again (only its scoring, which is resumable, is finished).
* Every remote call's FunctionCall id is written to ``<run>/calls.json`` (and committed)
  for each cell of its group before anything waits on it; a restarted attempt
  re-attaches to those calls instead of paying for them twice.
* The Volume has no distributed locks, so nothing here takes one: the orchestrator is
  the run's one writer of records, manifest, ledger and the run's own index file
  (``index.d/<run-id>.jsonl``: the nightly and a weekly still running are two
  orchestrators on one Volume, where the last commit of a shared file wins); workers
  only write their own WAV files and their call's journal (``journals/<call_key>/``).
  The orchestrator commits after each cell; workers commit their journal in batches
  and after placing their WAVs.
* Retention (:func:`retain`): runs older than :data:`KEEP_UNPACKED_DAYS` keep their WAVs
  in one ``audio.zip`` (bench.store.packing), and journals no call can still use are
  removed, so the Volume's file count stays bounded.

Plain code over two seams (``volume``: ``commit``/``reload``; ``workers``: see
:class:`~bench.backends.modal_orchestrator.Workers`), so tests run it against a stand-in.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from bench.analysis.nightly_stages import HistoryStages
from bench.backends.modal_journal import JOURNALS
from bench.backends.modal_orchestrator import ModalBackend, Workers
from bench.run.runner import Staging, open_store, run_sweep
from bench.spec.prompts import load_prompts
from bench.spec.sweep import SweepSpec
from bench.store.history import list_runs
from bench.store.packing import pack_audio
from bench.store.run_store import RunStore

LEDGER = "calls.json"
#: Runs on the Volume keep their WAVs as files this many days after they started.
KEEP_UNPACKED_DAYS = 14
#: A journal untouched this long serves no call (a call runs 24 h at most, the nightly
#: re-attaches within its own 24 h limit and retries).
STALE_JOURNAL_DAYS = 4


class Volume(Protocol):
    """What the nightly needs of a ``modal.Volume`` mounted in its container."""

    def commit(self) -> None: ...

    def reload(self) -> None: ...


class FileLedger:
    """``<run>/calls.json``: cell id -> the FunctionCall spawned for its group (id, GPU,
    time, journal key).

    Rewritten atomically and committed on every change: the entry must be on the Volume
    before the orchestrator can be stopped while waiting on that call.
    """

    def __init__(self, path: Path, commit: Callable[[], None]) -> None:
        self.path = path
        self.commit = commit
        self.entries: dict[str, dict[str, Any]] = (
            json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {})

    def get(self, cell_id: str) -> dict[str, Any] | None:
        return self.entries.get(cell_id)

    def put(self, cell_ids: list[str], entry: dict[str, Any]) -> None:
        # All cells of a group in one write: a restart sees the group's call whole or not.
        for cell_id in cell_ids:
            self.entries[cell_id] = entry
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)
        self.commit()


def complete_today(root: Path, spec: SweepSpec, today: str) -> Path | None:
    """A complete run of this exact spec started on UTC date ``today`` (YYYY-MM-DD)."""
    for entry in reversed(list_runs(root, spec.name)):
        if (entry.get("spec_hash") == spec.hash and entry.get("status") == "complete"
                and str(entry.get("started_at") or "").startswith(today)):
            path = root / str(entry.get("path") or entry.get("run_id"))
            if path.is_dir():
                return path
    return None


def run_on_volume(spec: SweepSpec, *, root: Path, volume: Volume, workers: Workers,
                  now: Callable[[], datetime] = lambda: datetime.now(UTC),
                  score_look: Callable[[RunStore], None] | None = None) -> tuple[str, bool]:
    """Run or resume tonight's run of ``spec`` under ``root`` (on ``volume``).

    Returns (run id, whether generations ran in this attempt). Scoring is the caller's,
    except that a ``[history]`` spec's looks call ``score_look(store)`` (WER through the
    remote ASR) before each decision.
    """
    volume.reload()
    done_today = complete_today(root, spec, now().strftime("%Y-%m-%d"))
    if done_today is not None:
        print(f"{spec.name}: {done_today.name} already complete today; not run again")
        return done_today.name, False
    store, resumed = open_store(spec, root, None, False, lock=False)
    run_dir = store.path
    store.close()
    volume.commit()  # the run is on the Volume before the first call is spawned
    print(("resuming " if resumed else "started ") + f"run {run_dir.name}")
    ledger = FileLedger(run_dir / LEDGER, volume.commit)
    backend = ModalBackend(confirm=False, workers=workers, ledger=ledger,
                           audio_dir=str(run_dir / "audio"), orchestrated_in_modal=True)

    def after_cell(store: RunStore, cell: Any, keys: list[str]) -> None:
        volume.commit()

    outcome = run_sweep(spec, backend, root=root, resume=str(run_dir), after_cell=after_cell,
                        progress=False, lock=False,
                        staging=_history_staging(spec, root, volume, now, score_look))
    if backend.estimate is not None:
        _record_estimate(run_dir, backend.estimate.usd, backend.estimate.seconds)
    volume.commit()
    print(f"{run_dir.name}: {outcome.ok} ok, {outcome.failed} failed, {outcome.skipped} done "
          "earlier")
    return run_dir.name, True


def _history_staging(spec: SweepSpec, root: Path, volume: Volume,
                     now: Callable[[], datetime],
                     score_look: Callable[[RunStore], None] | None) -> Staging | None:
    """A ``[history]`` spec's looks (None: no full run to check against, or no
    ``[history]``: tonight runs in full). Each look's log is committed with its decision,
    so a restarted attempt goes on along the same draws."""
    if spec.history is None:
        return None
    found = HistoryStages.prepare(spec, load_prompts(spec.prompts), root, score_look, now)
    if isinstance(found, str):
        print(f"history: {found}; running in full (the audit later nights are checked "
              "against)")
        return None
    print(f"history: checking against {found.reference.path.name}")

    def after_look(store: RunStore, stage: int, cells: frozenset[str]) -> frozenset[str]:
        active = found.after_stage(store, stage, cells)
        volume.commit()
        return active

    return Staging(found.looks, after_look, Staging.draw_of)


def _record_estimate(run_dir: Path, usd: float, seconds: float) -> None:
    """Keep the estimate in the manifest, beside where the billed cost goes (labelled)."""
    with RunStore.open(run_dir, lock=False) as store:
        cost = dict(store.manifest.get("cost") or {})
        cost.update(estimate_usd=round(usd, 4), estimate_gpu_hours=round(seconds / 3600, 4),
                    estimate_basis="estimate: FLOP model and list prices (bench.analysis.prices)")
        store.update_manifest(cost=cost)


@dataclass(frozen=True)
class Retained:
    """What :func:`retain` did."""

    runs_packed: int
    files_packed: int
    journals_removed: int


def retain(root: Path, volume_root: Path, volume: Volume, now: datetime,
           keep_days: int = KEEP_UNPACKED_DAYS) -> Retained:
    """Pack the WAVs of complete runs under ``root`` started more than ``keep_days``
    before ``now``, remove journals untouched for STALE_JOURNAL_DAYS under
    ``volume_root``, and commit once (module docstring)."""
    volume.reload()
    before = (now - timedelta(days=keep_days)).isoformat()
    runs = files = 0
    for entry in list_runs(root):
        if entry.get("status") != "complete" or str(entry.get("started_at") or "") >= before:
            continue
        packed = pack_audio(root / str(entry.get("path") or entry.get("run_id")))
        runs += packed > 0
        files += packed
    stale = (now - timedelta(days=STALE_JOURNAL_DAYS)).timestamp()
    journals = 0
    folder = volume_root / JOURNALS
    for journal in sorted(folder.iterdir()) if folder.is_dir() else []:
        newest = max((p.stat().st_mtime for p in journal.rglob("*")),
                     default=journal.stat().st_mtime)
        if newest < stale:
            shutil.rmtree(journal)
            journals += 1
    if runs or journals:
        volume.commit()
    return Retained(runs, files, journals)
