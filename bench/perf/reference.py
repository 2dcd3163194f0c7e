"""The reference implementation (``echo-tts==0.1.4`` from PyPI), as a yardstick only.

Used by the parity tests and the profile benchmark to compare ours against it; nothing
in a sweep runs it. The wheel is fetched with pip into ``.cache/reference`` (or
``ECHO_REFERENCE_CACHE``) and unpacked. Its package is also named ``echo_tts``, and its
``inference.py`` imports ``echo_tts.model`` by absolute name, so :func:`load_reference`
briefly points ``sys.modules['echo_tts*']`` at the reference modules while they execute
and restores ours afterwards (modules already holding references keep working).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

REFERENCE_REQUIREMENT = "echo-tts==0.1.4"
ROOT = Path(__file__).resolve().parents[2]  # the repository root (bench/perf/reference.py)


class ReferenceUnavailable(RuntimeError):
    """The reference wheel could not be fetched (the message says why)."""


def cache_dir() -> Path:
    return Path(os.environ.get("ECHO_REFERENCE_CACHE", ROOT / ".cache" / "reference"))


def reference_root() -> Path:
    """A folder whose ``echo_tts`` package is the reference implementation."""
    unpacked = cache_dir() / "site"
    if (unpacked / "echo_tts" / "inference.py").is_file():
        return unpacked
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob("echo_tts-0.1.4-*.whl")):
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             "--disable-pip-version-check", "-d", str(wheels), REFERENCE_REQUIREMENT],
            capture_output=True, text=True, timeout=300,
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise ReferenceUnavailable(f"pip could not download {REFERENCE_REQUIREMENT}: {last}")
    wheel = next(wheels.glob("echo_tts-0.1.4-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(unpacked)
    return unpacked


def _exec(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_reference() -> types.SimpleNamespace:
    """The reference's model, autoencoder and inference modules, loaded as ``echo_ref.*``."""
    root = reference_root() / "echo_tts"
    saved = {k: sys.modules.get(k) for k in ("echo_tts", "echo_tts.model", "echo_tts.autoencoder")}
    try:
        package = types.ModuleType("echo_ref")
        package.__path__ = [str(root)]
        sys.modules["echo_ref"] = package
        model = _exec("echo_ref.model", root / "model.py")
        autoencoder = _exec("echo_ref.autoencoder", root / "autoencoder.py")
        sys.modules["echo_tts"] = package
        sys.modules["echo_tts.model"] = model
        sys.modules["echo_tts.autoencoder"] = autoencoder
        inference = _exec("echo_ref.inference", root / "inference.py")
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
    return types.SimpleNamespace(model=model, autoencoder=autoencoder, inference=inference)
