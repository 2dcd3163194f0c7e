"""A Modal call's journal: what one ``run_cells`` call has finished, kept on the outputs
Volume so that a restart of the same input continues instead of starting over.

Modal may stop a GPU container at any moment (preemption) and start the same input
again; a call now runs a whole group of cells (hours on the weekly grid), so losing it
all would be expensive, and running a generation twice must never record it twice.
The container appends each finished generation's record to
``<volume>/journals/<call_key>/records.jsonl`` (fsynced, then the Volume committed) and
keeps its WAV beside it (``wav/``); an attempt first reads the journal and runs only the
steps it lacks, and its result is the journal's records plus its own, each key once.

``call_key`` is chosen by the orchestrator per spawned call, so a restart of the same
input finds the journal and a new call (a resumed sweep) starts an empty one. The
orchestrator removes the journal once it has stored the call's records (Modal's Volume
API); the container never does, so an attempt stopped after finishing but before its
result was delivered still finds everything on restart.

Commits are batched: one per :data:`COMMIT_EVERY` journaled generations or
:data:`COMMIT_SECONDS` of work, whichever comes first (and one at the end of the call).
Modal bills the GPU while a commit runs and a commit's latency grows with the Volume's
file count, so a commit per generation cost GPU time on every generation; a restart now
runs again at most the generations of one batch.

Each start of the input (a container beginning the call) also appends a line to
``attempts.jsonl`` and commits, before any generation: the orchestrator counts them to
stop a crash loop (:mod:`bench.backends.modal_watch`), since Modal restarts a crashing
container without end and does not tell the caller.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.core.errors import UserError
from bench.store.files import atomic_target
from bench.store.layout import audio_filename

#: Folder of the journals on the outputs Volume (relative to its root).
JOURNALS = "journals"
#: One line per container start of the call, in its journal folder.
ATTEMPTS = "attempts.jsonl"
#: A journal commit after this many generations or seconds, whichever comes first.
COMMIT_EVERY = 8
COMMIT_SECONDS = 60.0
_CALL_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def journal_path(call_key: str) -> str:
    """The journal folder of ``call_key``, relative to the Volume's root."""
    if not _CALL_KEY.fullmatch(call_key):
        # It becomes a path on a shared Volume: never let it climb out of journals/.
        raise UserError(f"bad call key {call_key!r}: expected 1-64 letters, digits, - or _")
    return f"{JOURNALS}/{call_key}"


def attempts_path(call_key: str) -> str:
    """The call's container-start log, relative to the Volume's root."""
    return f"{journal_path(call_key)}/{ATTEMPTS}"


def count_lines(data: bytes) -> int:
    """Whole lines in a start log (a torn last line is a start too: it began)."""
    return len([line for line in data.splitlines() if line.strip()])


class CallJournal:
    """The journal of one call under ``volume_root`` (see the module docstring)."""

    def __init__(self, volume_root: Path, call_key: str,
                 commit: Callable[[], None] | None = None, *,
                 every: int | None = None, seconds: float | None = None) -> None:
        self.relative = journal_path(call_key)
        self.folder = volume_root / self.relative
        self.lines = self.folder / "records.jsonl"
        self.commit = commit
        # Read at construction, not import: tests that stop a container at a given
        # commit set the module's figures.
        self.every = every if every is not None else COMMIT_EVERY
        self.seconds = seconds if seconds is not None else COMMIT_SECONDS
        self.uncommitted = 0
        self.committed_at = time.monotonic()

    def flush(self) -> None:
        """Commit what was journaled since the last commit (the end of a call)."""
        if self.commit is not None and self.uncommitted:
            self.commit()
        self.uncommitted = 0
        self.committed_at = time.monotonic()

    def records(self) -> list[dict[str, Any]]:
        """The records earlier attempts finished, in the order they ran. A torn last line
        (the container stopped mid-write) is cut off: that generation runs again."""
        if not self.lines.is_file():
            return []
        data = self.lines.read_bytes()
        records: list[dict[str, Any]] = []
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good += len(line)
        if good < len(data):
            with self.lines.open("r+b") as f:
                f.truncate(good)
        return records

    def begin_attempt(self, container_id: str) -> None:
        """Log this container's start of the call and commit it, so a crash in the first
        generation still counts (see the module docstring)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        line = {"container_id": container_id, "started_at": time.time()}
        with (self.folder / ATTEMPTS).open("ab") as f:
            f.write(json.dumps(line).encode("utf-8") + b"\n")
            f.flush()
            os.fsync(f.fileno())
        if self.commit is not None:
            self.commit()

    def add(self, record: dict[str, Any], wav: bytes | None) -> None:
        """Keep ``record`` (and its WAV) durably: the WAV first, so a record in the journal
        always has its audio; the Volume is committed once a batch is full (module
        docstring), so a restart sees both."""
        if wav is not None:
            path = self.wav(record["key"])
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_target(path) as tmp:
                tmp.write_bytes(wav)
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.lines.open("ab") as f:
            f.write(json.dumps(record).encode("utf-8") + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.uncommitted += 1
        if (self.uncommitted >= self.every
                or time.monotonic() - self.committed_at >= self.seconds):
            self.flush()

    def wav(self, key: str) -> Path:
        """Where the WAV of record ``key`` is kept (it may not exist)."""
        return self.folder / "wav" / audio_filename(key)

    def relative_wav(self, key: str) -> str:
        """:meth:`wav` relative to the Volume's root (what the orchestrator reads)."""
        return f"{self.relative}/wav/{audio_filename(key)}"
