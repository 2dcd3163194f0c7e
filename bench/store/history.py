"""The history index of runs (results/runs/index.jsonl): appended under a lock, listed
newest first, filtered by spec.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.store.files import append_line, ends_with_newline, parse_line, read_json
from bench.store.layout import INDEX, INDEX_LOCK, MANIFEST, StoreError

log = logging.getLogger(__name__)


class HistoryIndex:
    """``<root>/index.jsonl``: one line per run event, appended under ``index.lock``.

    Several runs may finish at once (one per GPU type); the exclusive flock serialises
    their appends so none is lost or interleaved.
    """

    def __init__(self, root: str | os.PathLike[str], *, lock: bool = True) -> None:
        self.root = Path(root)
        self.path = self.root / INDEX
        self.lock = lock  # False on a Modal Volume (one writer, no distributed locks)

    def append(self, entry: Mapping[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            if self.lock:
                lock = stack.enter_context(open(self.root / INDEX_LOCK, "a", encoding="utf-8"))
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # blocking: appends take ms
            with open(self.path, "ab") as f:
                # A writer killed mid-line leaves no newline; start on a fresh line so our
                # entry stays whole (the fragment becomes one unreadable, skipped line).
                if not ends_with_newline(self.path):
                    f.write(b"\n")
                append_line(f, entry)
            # Closing the lock file releases the flock.

    def runs(self, spec_name: str | None = None) -> list[dict[str, Any]]:
        """Latest entry per run id (optionally of one spec), oldest start first."""
        latest: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for number, raw in enumerate(self.path.read_bytes().splitlines(), start=1):
                if not raw.strip():
                    continue
                entry = parse_line(raw, id_field="run_id")
                if entry is None:
                    # The index only summarises manifests: a bad line costs one entry (its
                    # run's manifest still holds it), so skip it rather than fail.
                    log.warning("%s line %d is unreadable; skipped", self.path, number)
                    continue
                latest[entry["run_id"]] = entry
        found = [e for e in latest.values() if spec_name is None or e.get("spec_name") == spec_name]
        return sorted(found, key=_start_order)


def list_runs(root: str | os.PathLike[str], spec_name: str | None = None) -> list[dict[str, Any]]:
    """Runs under ``root`` from its index, or by reading each run's manifest if it has none."""
    root = Path(root)
    index = HistoryIndex(root)
    if index.path.exists():
        return index.runs(spec_name)
    found = []
    for manifest_path in sorted(root.glob(f"*/{MANIFEST}")):
        try:
            m = read_json(manifest_path)
        except StoreError as err:
            log.warning("%s", err)
            continue
        if spec_name is not None and m.get("spec_name") != spec_name:
            continue
        found.append(history_entry(m, manifest_path.parent.name))
    return sorted(found, key=_start_order)


def history_entry(manifest: Mapping[str, Any], folder: str) -> dict[str, Any]:
    return {
        "run_id": manifest.get("run_id"),
        "spec_name": manifest.get("spec_name"),
        "spec_hash": manifest.get("spec_hash"),
        "git_commit": (manifest.get("environment") or {}).get("git_commit"),
        "started_at": manifest.get("started_at"),
        "finished_at": manifest.get("finished_at"),
        "status": manifest.get("status"),
        "counts": manifest.get("counts"),
        # Relative to the index's folder, so a results tree can be moved or copied whole.
        "path": folder,
    }


def _start_order(entry: Mapping[str, Any]) -> tuple[str, str]:
    return (entry.get("started_at") or "", str(entry.get("run_id")))
