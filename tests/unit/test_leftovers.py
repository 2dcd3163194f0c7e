"""No leftovers of moved code in the packages: a section banner with nothing under it
(the code moved to a module of its own and the banner stayed) or an ``if TYPE_CHECKING:``
block that only says ``pass``. A newcomer reads both as a sign of something missing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(p for package in ("bench", "echo_tts") for p in (ROOT / package).rglob("*.py"))
#: A section banner: "# -----... title", or a rule line followed by a "# Title" line.
BANNER = re.compile(r"^# ?-{4,}")
EMPTY_TYPE_CHECKING = re.compile(r"^if TYPE_CHECKING:\n\s+pass\n", re.M)


def empty_banners(text: str) -> list[str]:
    """The banners followed by nothing but blank lines before the next banner or the end."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if not BANNER.match(line):
            continue
        j = i + 1
        if line.strip("# -") == "" and j < len(lines) and lines[j].startswith("# ") \
                and not BANNER.match(lines[j]):
            j += 1  # the two-line form: a rule, then the title
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j == len(lines) or BANNER.match(lines[j]):
            found.append(f"{i + 1}: {line.strip('# -') or lines[i + 1].lstrip('# ')}")
    return found


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_empty_banner_or_type_checking_block(module: Path) -> None:
    text = module.read_text(encoding="utf-8")
    assert not empty_banners(text), f"empty section banners: {empty_banners(text)}"
    assert not EMPTY_TYPE_CHECKING.search(text), "an `if TYPE_CHECKING: pass` block"


def test_the_checks_find_what_they_look_for() -> None:
    text = ("# ------ kept\ndef f(): ...\n\n\n# ------ empty\n\n\n# ------ last\nx = 1\n"
            "# -------\n# Two-line empty\n\n")
    assert empty_banners(text) == ["5: empty", "10: Two-line empty"]
    assert EMPTY_TYPE_CHECKING.search("if TYPE_CHECKING:\n    pass\nimport os\n")
