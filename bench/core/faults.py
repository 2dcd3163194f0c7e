"""Fault injection for the reliability campaign (``tests/reliability``); off by default.

Faults are named in the environment variable ``ECHO_BENCH_FAULTS`` as a comma-separated
list of ``name`` or ``name:argument``. When the variable is unset (every real run), each
hook costs one dictionary lookup and does nothing. The hooks sit where real failures
happen, so a test drives the real code paths (subprocess or in-process) without mocks:

====================================  ================================================
``kill_after_record:N``               SIGKILL this process right after its Nth record
                                      is durably appended (between records)
``kill_during_record_write[:N]``      on the Nth record write (default 1): write half
                                      the line's bytes, fsync, SIGKILL (a torn line)
``kill_during_parquet``               SIGKILL after records.parquet's temporary file is
                                      written, before it replaces the old one
``kill_during_scoring:N``             SIGKILL right after the Nth score line is appended
``raise_in_generation:SUBSTR``        generations of cells whose label contains SUBSTR
                                      raise a RuntimeError
``oom:SUBSTR``                        same, with a CUDA-out-of-memory-shaped message
``nan_latents:SUBSTR``                those cells produce all-NaN audio
``silent_audio:SUBSTR``               those cells produce all-zero audio
``fail_scoring_file:SUBSTR``          transcribing an audio file whose name contains
                                      SUBSTR raises a RuntimeError
``disk_full_on_audio[:SUBSTR]``       writing a WAV whose file name contains SUBSTR
                                      raises OSError(ENOSPC)
====================================  ================================================

An empty argument matches everything. Counters (the N above) count in this process only,
so a resumed run starts again from zero.
"""

from __future__ import annotations

import errno
import os
import signal
from typing import IO

ENV = "ECHO_BENCH_FAULTS"

KNOWN = frozenset({
    "kill_after_record", "kill_during_record_write", "kill_during_parquet",
    "kill_during_scoring", "raise_in_generation", "oom", "nan_latents", "silent_audio",
    "fail_scoring_file", "disk_full_on_audio",
})

_counts: dict[str, int] = {}
_parsed: tuple[str, dict[str, str]] | None = None


class InjectedFault(RuntimeError):
    """Raised by a fault hook; its message says it was injected, so no one hunts for it."""


def _faults() -> dict[str, str]:
    """name -> argument of the configured faults (parsed once per value of the variable)."""
    global _parsed
    text = os.environ.get(ENV, "")
    if _parsed is None or _parsed[0] != text:
        table: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, argument = item.partition(":")
            if name not in KNOWN:
                # A typo would silently test nothing; fail loudly instead.
                raise ValueError(f"{ENV}: unknown fault {name!r}; known: {', '.join(sorted(KNOWN))}")
            table[name] = argument
        _parsed = (text, table)
    return _parsed[1]


def argument(name: str) -> str | None:
    """The argument of fault ``name`` ("" when given without one), or None when it is off."""
    if ENV not in os.environ:  # the fast path of every real run
        return None
    return _faults().get(name)


def matches(name: str, subject: str) -> bool:
    """Whether fault ``name`` is on and its argument is a substring of ``subject``."""
    arg = argument(name)
    return arg is not None and arg in subject


def _nth(name: str) -> bool:
    """Count one event of ``name``; True on the configured Nth one (the first by default)."""
    arg = argument(name)
    if arg is None:
        return False
    _counts[name] = _counts.get(name, 0) + 1
    return _counts[name] == (int(arg) if arg else 1)


def kill() -> None:
    """Die at once, as a power cut or the OOM killer would: no cleanup, no finally."""
    os.kill(os.getpid(), signal.SIGKILL)


def after_event(name: str) -> None:
    """Kill the process on the Nth event of a ``kill_after_*``/``kill_during_*`` fault."""
    if _nth(name):
        kill()


def torn_write(name: str, file: IO[bytes], data: bytes) -> None:
    """On the Nth write of fault ``name``, write half of ``data`` durably, then die."""
    if _nth(name):
        file.write(data[: max(1, len(data) // 2)])
        file.flush()
        os.fsync(file.fileno())
        kill()


def generation(label: str) -> None:
    """Raise the configured exception for a generation of the cell labelled ``label``."""
    if matches("oom", label):
        # Plain RuntimeError, as torch raises it, so the record looks like a real OOM.
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (injected fault)")
    if matches("raise_in_generation", label):
        raise InjectedFault(f"injected fault in generation of cell [{label}]")


def audio_write(name: str, path: os.PathLike[str] | str) -> None:
    """Raise ENOSPC for a WAV whose file name matches ``disk_full_on_audio``."""
    if matches("disk_full_on_audio", name):
        raise OSError(errno.ENOSPC, "No space left on device (injected fault)", str(path))


def transcription(name: str) -> None:
    """Raise for an audio file whose name matches ``fail_scoring_file``."""
    if matches("fail_scoring_file", name):
        raise InjectedFault(f"injected fault: cannot transcribe {name}")
