"""Developer sessions. `nox` alone runs the tests; `nox -s lint typecheck` for the checks;
`nox -s reliability` for the full fault and bad-input campaign; `nox -s lock` to update
the lock. Every session's environment is installed from uv.lock, nothing re-resolves."""

from __future__ import annotations

import shutil

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


def uv() -> str:
    """The uv binary: the one the dev extra installs beside nox, else uv on PATH."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except ImportError:
        found = shutil.which("uv")
        if found is None:
            raise SystemExit("uv not found: install it with `pip install uv==0.13.9`") from None
        return found


def install(session: nox.Session) -> None:
    """Make the session's virtualenv exactly the lock (project editable, dev extra)."""
    session.run_install(
        uv(), "sync", "--locked", "--extra", "dev", external=True,
        env={"UV_PROJECT_ENVIRONMENT": str(session.virtualenv.location)},
    )


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite (unit, integration, parity against echo-tts==0.1.4)."""
    install(session)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the whole tree."""
    install(session)
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


@nox.session(python=False)
def lock(session: nox.Session) -> None:
    """Re-resolve uv.lock to the newest releases pyproject.toml's ranges allow.

    Commit pyproject.toml and uv.lock together; run the tests on the new lock first
    (`nox -s tests`, which installs from it).
    """
    session.run(uv(), "lock", "--upgrade", external=True)


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
