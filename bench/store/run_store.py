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

import contextlib
import copy
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from bench.core import faults

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: Where run directories go unless a command is told otherwise.
DEFAULT_RUNS_ROOT = Path("results/runs")
MANIFEST = "manifest.json"
RECORDS = "records.jsonl"
SCORES = "scores.jsonl"
PARQUET = "records.parquet"
AUDIO_DIR = "audio"
LOCK = "lock"
INDEX = "index.jsonl"
INDEX_LOCK = "index.lock"

# Statuses of a record that mean "this generation was attempted and need not run again".
DONE_STATUSES = frozenset({"ok", "failed"})
_SAFE_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
# Long enough to stay readable, short enough that slug + hash fits any file system's
# 255-byte name limit.
_SLUG_CHARS = 80


class StoreError(Exception):
    """A run directory cannot be used as asked; the message says what to do."""


def audio_filename(key: str) -> str:
    """The file name of record ``key``'s WAV (see :meth:`RunStore.audio_path`); also used
    by remote workers that write into a run's audio folder on a Volume."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    slug = _slug(key, _SLUG_CHARS)
    return f"{slug}-{digest}.wav" if slug else f"{digest}.wav"


def record_key(cell_id: str, prompt_id: str, seed: int, repeat: int) -> str:
    """The key of one generation: ``"{cell_id}/{prompt_id}/{seed}/{repeat}"``.

    Cell ids must not contain "/" so the cell of a key is unambiguous (prompt ids may: they
    come from users, and only ever sit between the cell id and the two integers).
    """
    if not cell_id or "/" in cell_id:
        raise ValueError(f"cell id {cell_id!r} must be non-empty and free of '/'")
    return f"{cell_id}/{prompt_id}/{int(seed)}/{int(repeat)}"


def cell_of(key: str) -> str:
    """The cell id of a record key."""
    return key.split("/", 1)[0]


def utc_now() -> str:
    """Current UTC time as ISO 8601 to the second (sorts lexically in time order)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


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
        self._records = _latest(records)
        self._scores = _latest(scores)
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
            run_id = f"{stamp}-{_slug(spec_name, 40) or 'run'}-{secrets.token_hex(3)}"
        elif not _SAFE_RUN_ID.fullmatch(run_id):
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
            _write_json_atomic(path / MANIFEST, manifest)
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
                _repair_jsonl(path / RECORDS), _repair_jsonl(path / SCORES))
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
        _write_json_atomic(self.path / MANIFEST, self._manifest)

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
        return _history_entry(self._manifest, self.path.name)

    # -- records and scores ------------------------------------------------------------

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one generation's record (needs string ``key`` and ``status``); durable on return.

        A record with the key of an earlier one supersedes it (a retried generation).
        """
        self._check_open()
        for name in ("key", "status"):
            if not isinstance(record.get(name), str):
                raise StoreError(f"record has no string {name!r}; build it with the runner")
        stored = _append_line(self._records_file, record, fault="kill_during_record_write")
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
        self._scores[key] = _append_line(self._scores_file, {"key": key, **fields})

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
        """Keys whose latest record has status "ok" or "failed" (a resumed run skips them)."""
        return {r["key"] for r in self.records(with_scores=False) if r["status"] in DONE_STATUSES}

    def write_parquet(self) -> Path:
        """(Re)build records.parquet from the JSONL files; replaced atomically. Returns its path."""
        frame = _frame(self.records(with_scores=True))
        target = self.path / PARQUET
        _write_parquet_atomic(frame, target)
        return target

    # -- audio -------------------------------------------------------------------------

    def audio_path(self, key: str) -> Path:
        """Where the WAV of record ``key`` goes: ``audio/<slug>-<hash>.wav``, inside the run.

        Keys hold user-supplied prompt ids, so the name keeps only [A-Za-z0-9._-] (never a
        path separator, never leading dots) and a hash of the full key keeps distinct keys
        apart after sanitising. The same key always gives the same name.
        """
        audio_dir = (self.path / AUDIO_DIR).resolve()
        path = audio_dir / audio_filename(key)
        # _slug already guarantees this; checked so a future change cannot silently escape.
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
# JSON lines


def _json_default(value: Any) -> Any:
    # numpy scalars (np.float32 timings, np.int64 counts) and paths reach records often.
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _append_line(file: IO[bytes], obj: Mapping[str, Any], fault: str | None = None
                 ) -> dict[str, Any]:
    """Write ``obj`` as one line, then flush and fsync so it survives a crash. Returns the
    object as a reader of the file will see it (JSON types).

    ``fault`` names the fault-injection point of this write (see bench.core.faults)."""
    try:
        line = json.dumps(obj, default=_json_default, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as err:
        raise StoreError(f"cannot store {obj.get('key')!r}: {err}; pass JSON values") from None
    data = line.encode("utf-8")
    if fault is not None:
        faults.torn_write(fault, file, data)
    file.write(data)
    file.flush()
    os.fsync(file.fileno())
    stored: dict[str, Any] = json.loads(line)
    return stored


@dataclass
class _Scan:
    """A JSONL file split into its valid lines and a damaged tail."""

    entries: list[dict[str, Any]]
    valid_bytes: int  # length of the prefix made of whole, valid lines
    total_bytes: int


def _parse_line(raw: bytes, id_field: str = "key") -> dict[str, Any] | None:
    """The JSON object on one line, or None unless it parses and has a string ``id_field``."""
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) and isinstance(obj.get(id_field), str) else None


def _scan_jsonl(path: Path) -> _Scan:
    """Parse ``path``. A final line that is unterminated or unparsable is the tail (a torn
    write); an unparsable line before the last is corruption and raises StoreError."""
    data = path.read_bytes() if path.exists() else b""
    lines = data.split(b"\n")
    # The last piece is "" when the file ends with a newline, else an unterminated line.
    complete, tail = lines[:-1], lines[-1]
    entries: list[dict[str, Any]] = []
    offset = 0
    for number, raw in enumerate(complete, start=1):
        obj = _parse_line(raw)
        if obj is None:
            if number == len(complete) and not tail:
                break  # a torn last line that happens to end in a newline
            raise StoreError(
                f"{path} line {number} is damaged and is not the last line; it cannot be "
                "repaired safely: restore the file or start a new run"
            )
        entries.append(obj)
        offset += len(raw) + 1
    return _Scan(entries, offset, len(data))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Entries of a JSONL file without its torn tail, if any: a reader that does not hold
    the lock may see the runner mid-line. A damaged line before the last raises."""
    return _scan_jsonl(path).entries


def _repair_jsonl(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """Truncate a torn last line. Returns the file's entries and a message saying what was
    removed (None when the file was whole)."""
    scan = _scan_jsonl(path)
    dropped = scan.total_bytes - scan.valid_bytes
    if not dropped:
        return scan.entries, None
    with open(path, "r+b") as f:
        f.truncate(scan.valid_bytes)
        f.flush()
        os.fsync(f.fileno())
    redo = "generation will run again" if path.name == RECORDS else "record will be scored again"
    message = (
        f"{path}: removed a torn last line ({dropped} bytes) left by an interrupted write; "
        f"its {redo}"
    )
    log.warning(message)
    return scan.entries, message


def _remove_stray_temporaries(run_dir: Path) -> str | None:
    """Delete temporary files a killed writer left (we hold the lock: none is live)."""
    stray = [*run_dir.glob(".*.tmp"), *(run_dir / AUDIO_DIR).glob("*.tmp")]
    for path in stray:
        path.unlink(missing_ok=True)
    if not stray:
        return None
    return (f"{run_dir}: removed {len(stray)} temporary file(s) left by an interrupted write "
            f"({', '.join(sorted(p.name for p in stray)[:3])})")


def _latest(entries: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last entry per key, in order of each key's first entry (a retried generation
    stays where it first ran)."""
    return {entry["key"]: entry for entry in entries}


def _merged(run_dir: Path, *, with_scores: bool) -> list[dict[str, Any]]:
    records = list(_latest(_read_jsonl(run_dir / RECORDS)).values())
    if not with_scores:
        return records
    scores = _latest(_read_jsonl(run_dir / SCORES))
    return [{**r, **scores.get(r["key"], {})} for r in records]


# --------------------------------------------------------------------------------------
# Files written whole


def _fsync_dir(path: Path) -> None:
    # A rename is durable only once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_target(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target``, durably
    (file and directory entry synced); on failure it is removed."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(target.parent)


def _write_json_atomic(path: Path, obj: Mapping[str, Any]) -> None:
    with atomic_target(path) as tmp:
        tmp.write_text(
            json.dumps(obj, indent=2, default=_json_default, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file (a manifest); unreadable or not an object is a StoreError."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot read {path}: {err}; restore it or start a new run") from None
    if not isinstance(obj, dict):
        raise StoreError(f"{path} is not a JSON object; restore it or start a new run")
    return obj


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records as a table; nested dicts become dotted columns ("timings.sampling")."""
    import pandas as pd  # deferred: runners and workers that never read tables skip it

    if not records:
        return pd.DataFrame({"key": pd.Series([], dtype=str)})
    return pd.json_normalize(records, sep=".")


def _write_parquet_atomic(frame: pd.DataFrame, target: Path) -> None:
    import pyarrow as pa

    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        try:
            pa.array(frame[column], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            # Mixed value types (a number in one record, text in another) cannot share an
            # Arrow column; keep them as JSON text rather than fail a finished sweep.
            log.warning("%s: column %r has mixed types; stored as JSON text", target, column)
            frame[column] = [
                None if _missing(v) else json.dumps(v, default=_json_default) for v in frame[column]
            ]
    with atomic_target(target) as tmp:
        frame.to_parquet(tmp, index=False)
        faults.after_event("kill_during_parquet")


def _missing(value: Any) -> bool:
    # json_normalize fills fields absent from a record with NaN.
    return value is None or (isinstance(value, float) and math.isnan(value))


def load_records(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Records of a run merged with their latest scores, as a DataFrame (for readers).

    Reads records.parquet when it is newer than both JSONL files, else merges the JSONL
    files (a run still in progress, or scored after it finished). Takes no lock.
    """
    import pandas as pd

    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST).is_file():
        raise StoreError(f"{run_dir} is not a run directory (no {MANIFEST}); pass a run folder")
    parquet = run_dir / PARQUET
    if parquet.exists():
        newest_jsonl = max(
            (
                (run_dir / name).stat().st_mtime_ns
                for name in (RECORDS, SCORES)
                if (run_dir / name).exists()
            ),
            default=0,
        )
        if parquet.stat().st_mtime_ns > newest_jsonl:
            return pd.read_parquet(parquet)
    return _frame(_merged(run_dir, with_scores=True))


# --------------------------------------------------------------------------------------
# History across runs


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
                if not _ends_with_newline(self.path):
                    f.write(b"\n")
                _append_line(f, entry)
            # Closing the lock file releases the flock.

    def runs(self, spec_name: str | None = None) -> list[dict[str, Any]]:
        """Latest entry per run id (optionally of one spec), oldest start first."""
        latest: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for number, raw in enumerate(self.path.read_bytes().splitlines(), start=1):
                if not raw.strip():
                    continue
                entry = _parse_line(raw, id_field="run_id")
                if entry is None:
                    # The index only summarises manifests: a bad line costs one entry (its
                    # run's manifest still holds it), so skip it rather than fail.
                    log.warning("%s line %d is unreadable; skipped", self.path, number)
                    continue
                latest[entry["run_id"]] = entry
        found = [e for e in latest.values() if spec_name is None or e.get("spec_name") == spec_name]
        return sorted(found, key=_start_order)


def _ends_with_newline(path: Path) -> bool:
    """True for an empty file too: there is no partial line to close."""
    if path.stat().st_size == 0:
        return True
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


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
        found.append(_history_entry(m, manifest_path.parent.name))
    return sorted(found, key=_start_order)


def _history_entry(manifest: Mapping[str, Any], folder: str) -> dict[str, Any]:
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


def _slug(text: str, limit: int) -> str:
    """``text`` reduced to [A-Za-z0-9._-], no leading dots or dashes, at most ``limit`` chars."""
    return _UNSAFE_CHARS.sub("_", text).lstrip(".-_")[:limit]
