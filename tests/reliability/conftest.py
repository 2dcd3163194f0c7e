"""Shared pieces of the reliability campaign: size, tallies, tiny specs, CLI runners.

The normal ``pytest`` run executes a reduced campaign; ``ECHO_BENCH_RELIABILITY_FULL=1``
(``nox -s reliability``) runs the full one. Every module counts what it tried in a
``tally`` and writes it to ``$ECHO_BENCH_RELIABILITY_OUT/<module>.json`` (default: the
pytest temporary folder), so the README's figures come from an actual run
(``python -m tests.reliability.summary DIR`` turns them into the table).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.cli import main
from tests.tiny import TINY_MODEL_TOML

FULL = os.environ.get("ECHO_BENCH_RELIABILITY_FULL") == "1"
OUT_ENV = "ECHO_BENCH_RELIABILITY_OUT"
REPO = Path(__file__).resolve().parents[2]


def size(ci: int, full: int) -> int:
    """How many of something to try: ``ci`` in the normal test run, ``full`` under nox."""
    return full if FULL else ci


# Package scope: torn down after the last reliability test, so the shared cache does not
# leak into the test packages that run after this one.
@pytest.fixture(scope="package", autouse=True)
def shared_transcript_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One transcript cache for the session (subprocesses inherit it): the tiny sweeps
    produce the same audio again and again, and random-weight Whisper is the slow part."""
    old = os.environ.get("ECHO_BENCH_TRANSCRIPT_CACHE")
    os.environ["ECHO_BENCH_TRANSCRIPT_CACHE"] = str(tmp_path_factory.mktemp("transcripts"))
    yield
    if old is None:
        os.environ.pop("ECHO_BENCH_TRANSCRIPT_CACHE", None)
    else:
        os.environ["ECHO_BENCH_TRANSCRIPT_CACHE"] = old


@pytest.fixture(scope="session")
def tally_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get(OUT_ENV)
    folder = Path(configured) if configured else tmp_path_factory.mktemp("reliability")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest, tally_dir: Path) -> Iterator[Counter[str]]:
    """Counts of what this module tried; written as JSON when the module ends."""
    counts: Counter[str] = Counter()
    yield counts
    name = request.module.__name__.rsplit(".", 1)[-1]
    payload = {"module": name, "full": FULL, "counts": dict(sorted(counts.items()))}
    (tally_dir / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")


# ---------------------------------------------------------------------------- specs

SPEC = """
name = "{name}"
""" + TINY_MODEL_TOML + """[prompts]
set = "{prompts}"
{ids}
[grid]
num_steps = {steps}
cfg_mode = ["none"]
sequence_length = [16]
[measure]
warmup = 0
repeats = 1
seeds = {seeds}
score = {score}
asr = "random:tiny"
asr_device = "cpu"
"""


def write_spec(folder: Path, *, name: str = "rel", steps: list[int] | None = None,
               seeds: list[int] | None = None, prompts: str = "builtin",
               ids: list[str] | None = None, score: bool = True) -> Path:
    """A tiny sweep: one cell per entry of ``steps`` (num_steps, so labels differ),
    the given prompts (default: two short built-in ones) and seeds."""
    folder.mkdir(parents=True, exist_ok=True)
    if prompts == "builtin" and ids is None:
        # Two short texts: each fits one 16-latent chunk, so a generation takes well
        # under a second on 2 CPU cores.
        prompts = str(folder / "short.jsonl")
        Path(prompts).write_text('{"id": "p1", "text": "Hi."}\n{"id": "p2", "text": "Yes."}\n')
    text = SPEC.format(
        name=name, prompts=prompts, steps=json.dumps(steps or [1, 2]),
        seeds=json.dumps(seeds or [0]), score=str(score).lower(),
        ids="" if ids is None else f"ids = {json.dumps(ids)}")
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------- running


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def one_line_error(self) -> bool:
        """Exit 2, exactly one stderr line, the CLI's prefix, no traceback."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        return (self.code == 2 and len(lines) == 1
                and lines[0].startswith("echo-bench: error:") and "Traceback" not in self.err)


def cli(*argv: str) -> CliResult:
    """``echo-bench ARGV`` in this process (stdout/stderr captured, exceptions propagate)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return CliResult(code, out.getvalue(), err.getvalue())


def cli_subprocess(*argv: str, env: dict[str, str] | None = None,
                   timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``echo-bench ARGV`` in a fresh interpreter (for kills and clean environments)."""
    return subprocess.run([sys.executable, "-m", "bench.cli", *argv], cwd=REPO,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def run_dir(root: Path) -> Path:
    (run,) = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run


def raw_lines(run: Path, name: str = "records.jsonl") -> list[dict[str, object]]:
    """Every line of a JSONL file (not deduplicated): each must parse."""
    return [json.loads(line) for line in (run / name).read_text().splitlines() if line.strip()]
