"""The workflows and shell scripts pass the checkers a reviewer runs on them: actionlint
(pinned in uv.lock; its wheel ships the binary, so it runs offline) over
``.github/workflows/``, and shellcheck over ``.ci/run`` and ``bench/scripts/*.sh`` where
shellcheck is installed (``.ci/run`` installs it). A broken workflow is found here, not
on GitHub; actionlint also knows which action majors run on a deprecated runtime."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
SCRIPTS = [ROOT / ".ci" / "run", *sorted((ROOT / "bench" / "scripts").glob("*.sh"))]


def _actionlint() -> str:
    # The console script sits beside the interpreter running the tests (the locked venv).
    found = shutil.which("actionlint", path=str(Path(sys.executable).parent)) \
        or shutil.which("actionlint")
    assert found, "actionlint is not installed: it comes with the dev extra (uv sync --extra dev)"
    return found


def actionlint_findings(folder: Path) -> list[dict[str, object]]:
    """Every finding of actionlint over the workflow files in ``folder``."""
    files = sorted(str(p) for p in folder.glob("*.y*ml"))
    assert files, f"no workflow files in {folder}"
    done = subprocess.run([_actionlint(), "-format", "{{json .}}", *files],
                          capture_output=True, text=True, timeout=60, check=False)
    # Exit 0: nothing found; 1: findings (as JSON); anything else: actionlint itself failed.
    assert done.returncode in (0, 1), done.stderr
    findings: list[dict[str, object]] = json.loads(done.stdout or "[]")
    return findings


def _describe(findings: list[dict[str, object]]) -> str:
    return "\n".join(f"{Path(str(f['filepath'])).name}:{f['line']}: {f['message']} [{f['kind']}]"
                     for f in findings)


def test_actionlint_finds_nothing_in_the_workflows() -> None:
    findings = actionlint_findings(WORKFLOWS)
    assert not findings, "actionlint:\n" + _describe(findings)


def test_actionlint_fails_on_a_broken_workflow(tmp_path: Path) -> None:
    # A copy of the real workflows with two faults a reviewer's checker must see: an
    # action major on the deprecated node20 runtime, and an expression naming a context
    # that does not exist.
    for path in WORKFLOWS.glob("*.yml"):
        shutil.copy(path, tmp_path / path.name)
    ci = tmp_path / "ci.yml"
    text = ci.read_text(encoding="utf-8")
    checkout = next(line.split("uses: ")[1] for line in text.splitlines()
                    if "uses: actions/checkout@" in line)
    broken = text.replace(checkout, "actions/checkout@v4", 1) + (
        "      - run: echo ${{ matrixx.python }}\n")
    ci.write_text(broken, encoding="utf-8")
    messages = _describe(actionlint_findings(tmp_path))
    assert 'runtime "node20" is deprecated' in messages
    assert 'undefined variable "matrixx"' in messages
    assert all(line.startswith("ci.yml:") for line in messages.splitlines())


def _shellcheck() -> str:
    found = shutil.which("shellcheck")
    if not found:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck; .ci/run "
                    "installs it)")
    return found


def test_shellcheck_finds_nothing_in_the_scripts() -> None:
    assert SCRIPTS[0].is_file() and len(SCRIPTS) > 1
    done = subprocess.run([_shellcheck(), "--format", "gcc", *map(str, SCRIPTS)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, "shellcheck:\n" + done.stdout + done.stderr


def test_shellcheck_fails_on_a_broken_script(tmp_path: Path) -> None:
    script = tmp_path / "broken.sh"
    script.write_text("#!/usr/bin/env bash\nrm -rf $1/build\n", encoding="utf-8")
    done = subprocess.run([_shellcheck(), "--format", "gcc", str(script)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "SC2086" in done.stdout  # the unquoted $1
