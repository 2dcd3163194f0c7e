"""The run directory's names: its files, record keys, audio file names, and StoreError.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path

SCHEMA_VERSION = 1

#: Where run directories go unless a command is told otherwise.
DEFAULT_RUNS_ROOT = Path("results/runs")

MANIFEST = "manifest.json"

RECORDS = "records.jsonl"

SCORES = "scores.jsonl"

PARQUET = "records.parquet"

#: Per-cell figures of a run for history and the dashboard (bench.analysis.run_summary).
SUMMARY = "summary.json"

AUDIO_DIR = "audio"

LOCK = "lock"

INDEX = "index.jsonl"

INDEX_LOCK = "index.lock"

# Per-run index files (``<root>/index.d/<run-id>.jsonl``) where no lock reaches every
# writer (a Modal Volume shared by containers); readers merge them with INDEX.
INDEX_DIR = "index.d"

# Statuses of a record that mean "this generation was attempted and need not run again".
DONE_STATUSES = frozenset({"ok", "failed"})
# ``failure_kind`` of a failed record whose generation was never attempted to an end
# (the remote call running it was lost: cancelled, expired): not done, a resumed run
# runs it again and its new record supersedes this one.
INFRASTRUCTURE_FAILURE = "infrastructure"

SAFE_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")

# Long enough to stay readable, short enough that safe_slug + hash fits any file system's
# 255-byte name limit.
_SLUG_CHARS = 80


class StoreError(Exception):
    """A run directory cannot be used as asked; the message says what to do."""


def audio_filename(key: str) -> str:
    """The file name of record ``key``'s WAV (see :meth:`RunStore.audio_path`); also used
    by remote workers that write into a run's audio folder on a Volume."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    name = safe_slug(key, _SLUG_CHARS)
    return f"{name}-{digest}.wav" if name else f"{digest}.wav"


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


def safe_slug(text: str, limit: int) -> str:
    """``text`` reduced to [A-Za-z0-9._-], no leading dots or dashes, at most ``limit`` chars."""
    return _UNSAFE_CHARS.sub("_", text).lstrip(".-_")[:limit]
