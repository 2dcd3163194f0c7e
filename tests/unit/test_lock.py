"""The committed lock: in step with pyproject.toml, used by every install, torch pair held."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from uv import find_uv_bin

ROOT = Path(__file__).resolve().parents[2]
LOCK = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# Everything that installs an environment, and so must install it from the lock.
INSTALLERS = [ROOT / ".ci" / "run", ROOT / "README.md", ROOT / "noxfile.py",
              *sorted((ROOT / ".github" / "workflows").glob("*.yml"))]


def locked_version(name: str) -> str:
    versions = {p["version"] for p in LOCK["package"] if p["name"] == name}
    assert len(versions) == 1, (name, versions)
    return versions.pop()


def uv_check(project: Path, offline: bool = True) -> subprocess.CompletedProcess[str]:
    """uv's own check. A lock in step is confirmed offline, from the lock alone; telling
    that a lock is stale makes uv resolve again, which reads the package index."""
    args = [find_uv_bin(), "lock", "--check", *(["--offline"] if offline else [])]
    return subprocess.run(args, cwd=project, capture_output=True, text=True, timeout=300)


def test_the_lock_is_in_step_with_pyproject() -> None:
    result = uv_check(ROOT)
    assert result.returncode == 0, result.stderr


def test_a_stale_lock_is_refused_with_uvs_message(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    text = (tmp_path / "pyproject.toml").read_text(encoding="utf-8")
    stale = re.sub(r'\n\s*"tqdm[^\n]*', "", text, count=1)
    assert stale != text
    (tmp_path / "pyproject.toml").write_text(stale, encoding="utf-8")
    result = uv_check(tmp_path, offline=False)
    assert result.returncode != 0, "uv accepted a lock that no longer matches pyproject.toml"
    if "needs to be updated" not in result.stderr and "network" in result.stderr.lower():
        pytest.skip("the package index cannot be reached, so uv cannot re-resolve: "
                    + result.stderr.strip().splitlines()[-1])
    assert "needs to be updated" in result.stderr


def test_torch_and_torchaudio_are_pinned_as_a_pair() -> None:
    deps = PYPROJECT["project"]["dependencies"]
    assert "torch==2.11.0" in deps and "torchaudio==2.11.0" in deps
    assert locked_version("torch") == locked_version("torchaudio") == "2.11.0"


def test_the_statistics_libraries_are_declared() -> None:
    names = {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower()
             for d in PYPROJECT["project"]["dependencies"]}
    assert {"scipy", "numpy", "jiwer"} <= names


@pytest.mark.parametrize("path", INSTALLERS, ids=lambda p: p.name)
def test_every_installer_uses_the_lock_and_the_locked_uv(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    uv = locked_version("uv")
    # No install that re-resolves (pip install -e ., session.install of a range).
    assert not re.search(r"pip install[^\n]*-e\b", text), path.name
    assert not re.search(r"session\.install\(", text), path.name
    if "uv==" in text or "UV_VERSION=" in text:
        assert set(re.findall(r"uv==([\w.]+)|UV_VERSION=([\w.]+)", text)) <= {(uv, ""), ("", uv)}
    installs = any(word in text for word in ("uv sync", '"sync"', "nox -s"))
    assert installs, f"{path.name} installs nothing from the lock"
    if "uv sync" in text or '"sync"' in text:
        assert "--locked" in text, path.name
