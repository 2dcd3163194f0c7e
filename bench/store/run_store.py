"""The run directory: records, scores, manifest and audio of one sweep; history across runs.

Layout of ``<root>/<run-id>/``::

    manifest.json    what ran where: spec, environment, timestamps, counts, status
    records.jsonl    one JSON object per generation, appended and fsync'd one at a time
    scores.jsonl     one JSON object per scoring of a record: {"key": ..., <score fields>}
    records.parquet  records merged with their latest score (flattened columns), written
                     at finalize and rebuildable at any time; readers prefer it when fresh
    audio/           WAV files named from record keys (see ``RunStore.audio_path``)
    lock             held (flock) by the one process writing the run; holds its pid

``<root>/index.jsonl`` lists runs (one line per create and per finalize; the last line per
run id wins), so reports and the CI gate can find earlier runs without scanning folders.

The JSONL files are the source of truth: each line is written whole, then flushed and
fsync'd, so a crash loses at most the generation in flight. A crash can still leave a torn
last line; ``RunStore.open`` detects it, says so, and truncates it. Damage anywhere else is
an error, never skipped.
"""

from __future__ import annotations

import copy
import fcntl
import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from bench.store.files import (
    append_line,
    read_json,
    repair_jsonl,
    write_json_atomic,
    write_parquet_atomic,
)
from bench.store.history import HistoryIndex, history_entry
from bench.store.layout import (
    AUDIO_DIR,
    DONE_STATUSES,
    INFRASTRUCTURE_FAILURE,
    LOCK,
    MANIFEST,
    PARQUET,
    RECORDS,
    SAFE_RUN_ID,
    SCHEMA_VERSION,
    SCORES,
    StoreError,
    audio_filename,
    cell_of,
    safe_slug,
    utc_now,
)
from bench.store.records import latest_entries, records_frame

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# One run


class RunStore:
    """Read and write one run directory; holds its lock until ``close``.

    Use ``RunStore.create`` for a new run and ``RunStore.open`` to resume or score one.
    ``repaired`` lists what ``open`` had to fix (torn last lines), one message each.
    """

    def __init__(
        self, path: Path, lock_file: IO[str] | None, manifest: dict[str, Any], repaired: list[str],
        records: list[dict[str, Any]], scores: list[dict[str, Any]],
    ) -> None:
        # Private: go through create() or open(), which take the lock and check the files.
        self.path = path
        self.repaired = repaired
        # None: an unlocked store (a run on a Modal Volume, which has no distributed
        # locking; its one writer is the orchestrator by construction).
        self._lock_file: IO[str] | None = lock_file
        self._locked = lock_file is not None
        self._closed = False
        self._manifest = manifest
        self._records_file = open(path / RECORDS, "ab")  # noqa: SIM115 (lives until close)
        self._scores_file = open(path / SCORES, "ab")  # noqa: SIM115
        # The latest record and score per key, kept in step with every append, so that
        # in-sweep scoring and resumption read memory instead of re-parsing the files
        # after each cell (quadratic over a long sweep). The lock makes this store the
        # files' only writer.
        self._records = latest_entries(records)
        self._scores = latest_entries(scores)
        self._audio_kept = sum(1 for _ in (path / AUDIO_DIR).glob("*.wav"))

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        *,
        run_id: str | None = None,
        spec: Mapping[str, Any],
        spec_name: str,
        spec_hash: str,
        environment: Mapping[str, Any],
        keep_audio: bool = True,
        max_audio_files: int | None = None,
        lock: bool = True,
    ) -> RunStore:
        """Make ``<root>/<run_id>/`` for a new run and lock it.

        ``run_id`` defaults to ``YYYYmmdd-HHMMSS-<spec_name>-<6 hex>`` (UTC). ``keep_audio``
        and ``max_audio_files`` (a cap on WAVs kept, None for no cap) are stored in the
        manifest so a resumed run honours them too. ``lock=False`` skips the flock (and
        the index's) for a folder that has one writer by construction (a Modal Volume).
        """
        if max_audio_files is not None and max_audio_files < 0:
            raise StoreError(f"max_audio_files is {max_audio_files}; pass 0 or more, or None")
        root = Path(root)
        if run_id is None:
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            run_id = f"{stamp}-{safe_slug(spec_name, 40) or 'run'}-{secrets.token_hex(3)}"
        elif not SAFE_RUN_ID.fullmatch(run_id):
            raise StoreError(
                f"run id {run_id!r} is not a plain folder name; use letters, digits, '.', '_' "
                "and '-' (at most 128, not starting with '.' or '-')"
            )
        path = root / run_id
        root.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
        except FileExistsError:
            raise StoreError(
                f"run {path} already exists; open it to resume, or choose another run id"
            ) from None
        lock_file = _acquire_run_lock(path) if lock else None
        try:
            (path / AUDIO_DIR).mkdir()
            (path / RECORDS).touch()
            (path / SCORES).touch()
            manifest = {
                "schema_version": SCHEMA_VERSION,
                "run_id": run_id,
                "spec_name": spec_name,
                "spec_hash": spec_hash,
                "spec": dict(spec),
                "environment": dict(environment),
                "audio": {"keep": keep_audio, "max_files": max_audio_files},
                "started_at": utc_now(),
                "finished_at": None,
                "status": "running",
                "counts": _counts([], {}),
            }
            write_json_atomic(path / MANIFEST, manifest)
            store = cls(path, lock_file, manifest, [], [], [])
        except BaseException:
            if lock_file is not None:
                lock_file.close()
            raise
        HistoryIndex(root, lock=lock).append(store.history_entry())
        return store

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, lock: bool = True) -> RunStore:
        """Lock an existing run to resume or score it, repairing a torn last line
        (``lock=False``: see :meth:`create`).

        Raises StoreError when the folder is not a run, was written by another schema
        version, is locked by another process, or holds a damaged line before the last.
        """
        path = Path(path)
        if not (path / MANIFEST).is_file():
            raise StoreError(
                f"{path} is not a run directory (no {MANIFEST}); pass a folder made by a run"
            )
        lock_file = _acquire_run_lock(path) if lock else None
        try:
            manifest = read_json(path / MANIFEST)
            version = manifest.get("schema_version")
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"{path} was written with store schema {version!r} and this echo-bench "
                    f"reads schema {SCHEMA_VERSION}; use the matching echo-bench version "
                    "or start a new run"
                )
            (path / AUDIO_DIR).mkdir(exist_ok=True)
            (records, torn_records), (scores, torn_scores) = (
                repair_jsonl(path / RECORDS), repair_jsonl(path / SCORES))
            repaired = [m for m in (torn_records, torn_scores, _remove_stray_temporaries(path))
                        if m]
            store = cls(path, lock_file, manifest, repaired, records, scores)
        except BaseException:
            if lock_file is not None:
                lock_file.close()
            raise
        return store

    def close(self) -> None:
        """Release the lock and file handles (idempotent). Does not finalize."""
        if self._closed:
            return
        self._closed = True
        self._records_file.close()
        self._scores_file.close()
        if self._lock_file is not None:
            # Closing the descriptor releases the flock.
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- manifest ----------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return str(self._manifest["run_id"])

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of the manifest as last written."""
        return copy.deepcopy(self._manifest)

    def update_manifest(self, **fields: Any) -> None:
        """Set top-level manifest fields and rewrite it atomically."""
        for name in ("schema_version", "run_id"):
            if name in fields:
                raise StoreError(f"the manifest's {name} is fixed at creation; do not pass it")
        self._check_open()
        self._manifest.update(fields)
        write_json_atomic(self.path / MANIFEST, self._manifest)

    def finalize(self, status: str) -> dict[str, Any]:
        """Record counts, finish time and ``status``; write the parquet; update the index.

        ``status`` is the runner's word for how the run ended (e.g. "complete",
        "interrupted"). Returns the final manifest. The run stays locked until ``close``.
        """
        records = self.records(with_scores=False)
        scored = self._scores
        # Parquet first: a crash between the two steps must not leave a manifest that says
        # "complete" beside a missing or stale table.
        self.write_parquet()
        self.update_manifest(status=status, finished_at=utc_now(), counts=_counts(records, scored))
        HistoryIndex(self.path.parent, lock=self._locked).append(self.history_entry())
        return self.manifest

    def history_entry(self) -> dict[str, Any]:
        """This run's line for the history index."""
        return history_entry(self._manifest, self.path.name)

    # -- records and scores ------------------------------------------------------------

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one generation's record (needs string ``key`` and ``status``); durable on return.

        A record with the key of an earlier one supersedes it (a retried generation).
        """
        self._check_open()
        for name in ("key", "status"):
            if not isinstance(record.get(name), str):
                raise StoreError(f"record has no string {name!r}; build it with the runner")
        stored = append_line(self._records_file, record, fault="kill_during_record_write")
        # dict keeps first-insertion order, so a retried key stays where it first ran.
        self._records[record["key"]] = stored

    def append_score(self, key: str, fields: Mapping[str, Any]) -> None:
        """Append scores of record ``key``; the latest scoring of a key replaces earlier ones."""
        self._check_open()
        if key not in self._records:
            raise StoreError(
                f"no record with key {key!r} in {self.path}; score records of this run"
            )
        if "key" in fields:
            raise StoreError("score fields must not contain 'key'; pass the key separately")
        self._scores[key] = append_line(self._scores_file, {"key": key, **fields})

    def score_of(self, key: str) -> dict[str, Any]:
        """The latest score fields of record ``key`` without the key ({} when never scored),
        so a scorer adding its columns keeps the other scorers' columns."""
        return {k: v for k, v in self._scores.get(key, {}).items() if k != "key"}

    def records(self, with_scores: bool = True, keys: Iterable[str] | None = None
                ) -> list[dict[str, Any]]:
        """Latest record per key, in order of first appearance, merged with its latest score;
        with ``keys``, only those, in their order (unknown keys are skipped).

        Score fields override record fields of the same name.
        """
        if keys is None:
            records = list(self._records.values())
        else:
            records = [self._records[k] for k in dict.fromkeys(keys) if k in self._records]
        if not with_scores:
            return [dict(r) for r in records]
        return [{**r, **self._scores.get(r["key"], {})} for r in records]

    def done_keys(self) -> set[str]:
        """Keys whose latest record has status "ok" or "failed" (a resumed run skips them),
        except failures of the infrastructure (INFRASTRUCTURE_FAILURE), which run again."""
        return {r["key"] for r in self.records(with_scores=False)
                if r["status"] in DONE_STATUSES} - self.lost_keys()

    def lost_keys(self) -> set[str]:
        """Keys whose latest record failed with the infrastructure (INFRASTRUCTURE_FAILURE):
        never attempted to an end, so not done."""
        return {r["key"] for r in self.records(with_scores=False)
                if r["status"] == "failed" and r.get("failure_kind") == INFRASTRUCTURE_FAILURE}

    def write_parquet(self) -> Path:
        """(Re)build records.parquet from the JSONL files; replaced atomically. Returns its path."""
        frame = records_frame(self.records(with_scores=True))
        target = self.path / PARQUET
        write_parquet_atomic(frame, target)
        return target

    # -- audio -------------------------------------------------------------------------

    def audio_path(self, key: str) -> Path:
        """Where the WAV of record ``key`` goes: ``audio/<safe_slug>-<hash>.wav``, inside the run.

        Keys hold user-supplied prompt ids, so the name keeps only [A-Za-z0-9._-] (never a
        path separator, never leading dots) and a hash of the full key keeps distinct keys
        apart after sanitising. The same key always gives the same name.
        """
        audio_dir = (self.path / AUDIO_DIR).resolve()
        path = audio_dir / audio_filename(key)
        # safe_slug already guarantees this; checked so a future change cannot silently escape.
        if path.resolve().parent != audio_dir:
            raise StoreError(f"audio name for key {key!r} escapes {audio_dir}; report this bug")
        return path

    def should_keep_audio(self) -> bool:
        """Whether another WAV may be kept under the run's keep_audio / max_audio_files."""
        audio = self._manifest["audio"]
        cap = audio["max_files"]
        return bool(audio["keep"]) and (cap is None or self._audio_kept < cap)

    def claim_audio_path(self, key: str) -> Path | None:
        """``audio_path(key)`` counted against the cap, or None when no more audio is kept.

        The caller writes the WAV there (soundfile) and records ``relative(path)``.
        """
        path = self.audio_path(key)
        if path.exists():  # a retried generation overwrites its own file: no new slot
            return path
        if not self.should_keep_audio():
            return None
        self._audio_kept += 1
        return path

    def relative(self, path: str | os.PathLike[str]) -> str:
        """``path`` relative to the run folder, POSIX style (for records and reports)."""
        try:
            return Path(path).resolve().relative_to(self.path.resolve()).as_posix()
        except ValueError:
            raise StoreError(f"{path} is outside the run folder {self.path}") from None

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"run {self.path} is closed; open it again to write")


def _acquire_run_lock(path: Path) -> IO[str]:
    """Exclusive, non-blocking flock on ``<run>/lock``, which then holds our pid."""
    lock_file = open(path / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 (held until close)
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "unknown"
        lock_file.close()
        raise StoreError(
            f"run {path} is in use by another process (pid {holder}); "
            "wait for it or pass another --out"
        ) from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"{os.getpid()}\n")
    lock_file.flush()
    return lock_file


def _counts(records: list[dict[str, Any]], scores: Mapping[str, Any]) -> dict[str, int]:
    statuses = [r["status"] for r in records]
    return {
        "records": len(records),
        "ok": statuses.count("ok"),
        "failed": statuses.count("failed"),
        "cells": len({cell_of(r["key"]) for r in records}),
        "scored": sum(1 for r in records if r["key"] in scores),
    }


# --------------------------------------------------------------------------------------
# Temporary files


def _remove_stray_temporaries(run_dir: Path) -> str | None:
    """Delete temporary files a killed writer left (we hold the lock: none is live)."""
    stray = [*run_dir.glob(".*.tmp"), *(run_dir / AUDIO_DIR).glob("*.tmp")]
    for path in stray:
        path.unlink(missing_ok=True)
    if not stray:
        return None
    return (f"{run_dir}: removed {len(stray)} temporary file(s) left by an interrupted write "
            f"({', '.join(sorted(p.name for p in stray)[:3])})")
