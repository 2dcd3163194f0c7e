"""Developer sessions. `nox` alone runs the tests; `nox -s lint typecheck` for the checks;
`nox -s reliability` for the full fault and bad-input campaign."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


def install(session: nox.Session) -> None:
    session.install("-e", ".[dev]")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite (unit, integration, parity against echo-tts==0.1.4)."""
    install(session)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the whole tree."""
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy over echo_tts and bench."""
    install(session)
    session.run("mypy")


@nox.session(python=PYTHON)
def smoke(session: nox.Session) -> None:
    """The README's main job: the embedded smoke sweep on CPU, ending in a report."""
    install(session)
    session.run("echo-bench", "sweep", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """pytest-benchmark microbenchmarks; saves results and compares with the previous run."""
    install(session)
    session.run(
        "python", "-m", "pytest", "tests/benchmarks", "-p", "no:cacheprovider",
        "--benchmark-enable", "--benchmark-autosave", "--benchmark-compare",
        "--benchmark-compare-fail=median:15%", "-o", "norecursedirs=", *session.posargs,
    )


@nox.session(python=PYTHON)
def example_report(session: nox.Session) -> None:
    """Regenerate results/example-report/ from a fresh smoke sweep."""
    import tempfile
    from pathlib import Path

    install(session)
    runs = Path(tempfile.mkdtemp(prefix="example-runs-"))
    session.run("echo-bench", "sweep", "--out", str(runs), "--new", "--no-report")
    run = sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))[-1]
    session.run("echo-bench", "report", str(run), "--out",
                "results/example-report/report.html", "--no-audio")
    session.run("echo-bench", "report", str(run), "--format", "md", "--out",
                "results/example-report/index.md")


@nox.session(python=PYTHON)
def reliability(session: nox.Session) -> None:
    """The fault and bad-input campaign at full size (CI runs it reduced, inside `tests`);
    prints the figures table from the tallies it wrote."""
    install(session)
    out = session.create_tmp() + "/reliability"
    env = {"ECHO_BENCH_RELIABILITY_FULL": "1", "ECHO_BENCH_RELIABILITY_OUT": out}
    session.run("python", "-m", "pytest", "tests/reliability", "-p", "no:cacheprovider",
                *session.posargs, env=env)
    session.run("python", "-m", "tests.reliability.summary", out)
