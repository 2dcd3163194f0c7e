from __future__ import annotations

from pathlib import Path

import pytest

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
