from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from tests.parity.codec_weights import write_random_codec
from tests.parity.reference import ReferenceUnavailable, reference_root


@pytest.fixture(scope="session")
def reference() -> Path:
    """The unpacked reference package; skips (with the reason) when pip cannot fetch it."""
    try:
        return reference_root()
    except ReferenceUnavailable as err:
        pytest.skip(str(err))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/parity/" in str(item.fspath):
            item.add_marker(pytest.mark.parity)


@pytest.fixture(scope="session")
def random_codec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official-size random codec (:func:`write_random_codec`), written once per test
    run and read by both codec and pipeline parity: 6-7 s of randomising and writing
    it each time. Under pytest-xdist each worker has its own temporary folder inside the
    run's; the codec goes in the run's, written under a lock by whichever worker comes
    first (the others wait, then read it). Read-only for every test."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / "random-s1-dac"
    with open(shared / "random-s1-dac.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (folder / "done").is_file():
                write_random_codec(folder)
                (folder / "done").touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return folder
