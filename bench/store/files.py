"""Durable files: fsynced JSONL appends, torn-line detection and repair, atomic replacement
(write a temporary, fsync, rename, fsync the folder) of JSON and parquet files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bench.core import faults
from bench.store.layout import RECORDS, StoreError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def _json_default(value: Any) -> Any:
    # numpy scalars (np.float32 timings, np.int64 counts) and paths reach records often.
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def append_line(file: IO[bytes], obj: Mapping[str, Any], fault: str | None = None
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


def parse_line(raw: bytes, id_field: str = "key") -> dict[str, Any] | None:
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
        obj = parse_line(raw)
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


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Entries of a JSONL file without its torn tail, if any: a reader that does not hold
    the lock may see the runner mid-line. A damaged line before the last raises."""
    return _scan_jsonl(path).entries


def repair_jsonl(path: Path) -> tuple[list[dict[str, Any]], str | None]:
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


def write_json_atomic(path: Path, obj: Mapping[str, Any]) -> None:
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


def write_parquet_atomic(frame: pd.DataFrame, target: Path) -> None:
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


def ends_with_newline(path: Path) -> bool:
    """True for an empty file too: there is no partial line to close."""
    if path.stat().st_size == 0:
        return True
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _missing(value: Any) -> bool:
    # json_normalize fills fields absent from a record with NaN.
    return value is None or (isinstance(value, float) and math.isnan(value))
