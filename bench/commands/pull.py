"""``echo-bench pull [RUN_ID ...]``: fetch runs from the Modal outputs volume.

Runs written by the nightly function live on the ``echo-bench-outputs`` volume under
``runs/<run-id>/``. This copies them into ``--root`` (default ``results/runs``) with
Modal's Volume API (``Volume.from_name(...).listdir`` / ``read_file``), then adds each
to that folder's history index so ``echo-bench report`` / ``history`` / ``gate`` see it.

Resumable: a run is downloaded into ``<root>/.pull-<run-id>/`` (files already there at
the right size are kept) and renamed into place when whole. A run already present
locally is skipped, unless its local copy was still running when pulled (then it is
fetched again) or ``--force`` is given.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from bench.core.errors import UserError
from bench.run.runner import DEFAULT_RUNS_ROOT
from bench.store.files import read_json
from bench.store.history import HistoryIndex
from bench.store.layout import INDEX_DIR, LOCK, MANIFEST
from bench.store.packing import unpack_audio
from bench.store.run_store import RunStore

OUTPUTS_VOLUME = "echo-bench-outputs"  # bench.backends.modal_app.OUTPUTS_VOLUME
RUNS_PREFIX = "runs"  # runs sit at /outputs/runs/<id> in containers = runs/<id> on the volume
FILE = 1  # modal.volume.FileEntryType.FILE
DIRECTORY = 2  # modal.volume.FileEntryType.DIRECTORY


class VolumeReader(Protocol):
    """What pulling needs of a ``modal.Volume``."""

    def listdir(self, path: str, *, recursive: bool = False) -> list[Any]: ...

    def read_file(self, path: str) -> Iterable[bytes]: ...


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pull", help="fetch runs from the Modal outputs volume into results/runs")
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID",
                   help="runs to fetch (default: every run on the volume)")
    p.add_argument("--root", type=Path, default=DEFAULT_RUNS_ROOT,
                   help=f"local folder of run directories (default {DEFAULT_RUNS_ROOT})")
    p.add_argument("--volume", default=OUTPUTS_VOLUME,
                   help=f"Modal volume holding the runs (default {OUTPUTS_VOLUME})")
    p.add_argument("--env", metavar="ENV",
                   help="Modal environment holding the volume (default: your profile's)")
    p.add_argument("--force", action="store_true", help="fetch runs already present again")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import modal
    from modal.exception import NotFoundError

    volume = modal.Volume.from_name(args.volume, environment_name=args.env)
    try:
        pulled = pull_runs(volume, args.root, args.run_ids or None, force=args.force)
    except NotFoundError:
        where = f" in environment {args.env!r}" if args.env else ""
        raise UserError(f"no Modal volume {args.volume!r}{where} (or nothing under {RUNS_PREFIX}/); "
                        "the nightly run creates it: `echo-bench modal run-nightly`") from None
    print(f"pulled {len(pulled)} run(s) into {args.root}" + (f": {', '.join(pulled)}" if pulled else ""))
    return 0


def remote_runs(volume: VolumeReader) -> list[str]:
    """Run ids on the volume, sorted (ids start with a UTC timestamp: oldest first)."""
    entries = volume.listdir(RUNS_PREFIX)
    # index.d/ holds the runs' own index files (bench.store.history), not a run.
    return sorted(Path(e.path).name for e in entries
                  if int(e.type) == DIRECTORY and Path(e.path).name != INDEX_DIR)


def pull_runs(volume: VolumeReader, root: Path, run_ids: list[str] | None = None, *,
              force: bool = False) -> list[str]:
    """Fetch ``run_ids`` (default: all) into ``root``; returns the ids fetched."""
    available = remote_runs(volume)
    wanted = available if run_ids is None else run_ids
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise UserError(f"no run {', '.join(missing)} on the volume; available: "
                        f"{', '.join(available) or 'none'}")
    pulled = []
    for run_id in wanted:
        target = root / run_id
        if target.exists() and not force and not _was_running(target):
            continue
        pull_run(volume, root, run_id)
        pulled.append(run_id)
    return pulled


def pull_run(volume: VolumeReader, root: Path, run_id: str) -> Path:
    """Download one run into ``root/run_id`` and add it to the history index."""
    partial = root / f".pull-{run_id}"
    prefix = f"{RUNS_PREFIX}/{run_id}"
    for entry in volume.listdir(prefix, recursive=True):
        if int(entry.type) != FILE or Path(entry.path).name == LOCK:
            continue  # a lock belongs to the writer's machine
        relative = Path(entry.path).relative_to(prefix)
        if ".." in relative.parts:
            raise UserError(f"volume entry {entry.path!r} escapes its run folder")
        local = partial / relative
        if local.is_file() and local.stat().st_size == entry.size:
            continue  # fetched by an earlier, interrupted pull
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + ".part")
        with tmp.open("wb") as f:
            for chunk in volume.read_file(entry.path):
                f.write(chunk)
        tmp.replace(local)
    if not (partial / MANIFEST).is_file():
        raise UserError(f"{prefix} on the volume has no {MANIFEST}; not a run")
    target = root / run_id
    if target.exists():
        shutil.rmtree(target)
    partial.replace(target)
    unpack_audio(target)  # an old run on the Volume keeps its WAVs packed
    with RunStore.open(target) as store:
        HistoryIndex(root).append(store.history_entry())
    return target


def _was_running(run_dir: Path) -> bool:
    manifest = run_dir / MANIFEST
    return manifest.is_file() and read_json(manifest).get("status") == "running"
