"""Load the reference implementation into this process under the name ``echo_ref``.

Benchmarks compare ours and the reference side by side in one process. The reference's
``inference.py`` imports ``echo_tts.model`` by absolute name, so while its files execute,
``sys.modules['echo_tts*']`` briefly points at the reference modules; our own entries
are restored afterwards (modules that already hold references to them keep working).
Tests do not use this: they run the reference in a subprocess (tests/parity/reference.py).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

from tests.parity.reference import reference_root


def _exec(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_reference() -> types.SimpleNamespace:
    """The reference's model, autoencoder and inference modules."""
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
