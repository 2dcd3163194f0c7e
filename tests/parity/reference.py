"""Run the reference implementation (``echo-tts==0.1.4`` from PyPI) in a subprocess.

Its package is also called ``echo_tts`` and its ``inference.py`` imports
``echo_tts.model`` by absolute name, so it cannot share a process with this repo's
package. The wheel is fetched with pip (cached under ``.cache/reference``) and unpacked;
a script runs with only the reference on its path and exchanges tensors with the test
through safetensors files in a work folder. Fetching lives in :mod:`bench.perf.reference`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from bench.perf.reference import ReferenceUnavailable, reference_root

__all__ = ["ReferenceUnavailable", "reference_root", "run_reference"]

ROOT = Path(__file__).resolve().parents[2]


def run_reference(script: str, workdir: Path, timeout: float = 900) -> None:
    """Execute ``script`` with the reference importable as ``echo_tts``.

    The script runs with ``workdir`` as its current folder and sees it as the variable
    ``WORK`` (a pathlib.Path). This repo is kept off its path.
    """
    site = reference_root()
    workdir.mkdir(parents=True, exist_ok=True)
    prelude = (
        "from pathlib import Path\nWORK = Path.cwd()\nimport echo_tts\n"
        f"assert Path(echo_tts.__file__).resolve().is_relative_to({str(site.resolve())!r}), "
        "'the reference subprocess imported the wrong echo_tts'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    env["PYTHONNOUSERSITE"] = "1"
    # -I would drop PYTHONPATH too; -P keeps the script's folder off sys.path.
    proc = subprocess.run(
        [sys.executable, "-P", "-c", prelude + textwrap.dedent(script)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"reference script failed:\n{proc.stderr[-4000:]}")
