"""The GitHub workflows parse, run real echo-bench subcommands and point at real files."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
# Repository files a workflow names, e.g. bench/sweeps/gate.toml (skips ../base/ paths,
# which are the same files in the base branch's checkout).
_REPO_PATH = re.compile(r"(?<![\w./-])((?:bench|results|tests|echo_tts)/[\w./-]+\.(?:toml|py))")


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    # YAML 1.1 reads the key `on` as the boolean True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def run_lines(data: dict[str, Any]) -> list[str]:
    return [step["run"] for job in data["jobs"].values() for step in job["steps"]
            if "run" in step]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "gate.yml", "lock-refresh.yml",
                                           "nightly.yml"}


def test_lock_refresh_re_resolves_on_a_branch_on_a_schedule_and_tests_it() -> None:
    data = load(ROOT / ".github" / "workflows" / "lock-refresh.yml")
    assert data["on"]["schedule"][0]["cron"]
    lines = run_lines(data)
    upgrade = next(i for i, line in enumerate(lines) if "nox -s lock" in line)
    push = next(i for i, line in enumerate(lines) if "git push" in line)
    tests = next(i for i, line in enumerate(lines) if "nox -s tests" in line)
    assert upgrade < push < tests
    assert "lock-refresh" in lines[push] and "main" not in lines[push]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_well_formed(path: Path) -> None:
    data = load(path)
    assert data["name"] and data["on"] and data["jobs"]
    for job in data["jobs"].values():
        assert job["runs-on"] and job["steps"]
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), step


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_echo_bench_commands_parse(path: Path) -> None:
    commands = subcommands()
    for line in run_lines(load(path)):
        if "echo-bench" not in line:
            continue
        words = shlex.split(line.replace("\n", " "))
        argv = words[words.index("echo-bench") + 1:]
        assert argv[0] in commands, f"{path.name}: no subcommand {argv[0]!r}"
        # The arguments must parse too (exit 2 on a misspelt option).
        build_parser().parse_args(argv)
        for match in _REPO_PATH.findall(line):
            assert (ROOT / match).is_file(), f"{path.name} names missing {match}"


def test_gate_workflow_watches_the_production_config() -> None:
    data = load(ROOT / ".github" / "workflows" / "gate.yml")
    watched = data["on"]["pull_request"]["paths"]
    assert watched == ["results/baselines/production.toml"]
    assert all((ROOT / p).is_file() for p in watched)
    text = (ROOT / ".github" / "workflows" / "gate.yml").read_text()
    for needle in ("secrets.MODAL_TOKEN_ID", "secrets.MODAL_TOKEN_SECRET",
                   "GITHUB_STEP_SUMMARY", "--backend modal",
                   "github.event.pull_request.base.sha"):
        assert needle in text


def _steps(name: str) -> list[dict[str, Any]]:
    data = load(ROOT / ".github" / "workflows" / name)
    return [step for job in data["jobs"].values() for step in job["steps"]]


def _echo_bench_argv(step: dict[str, Any]) -> list[str]:
    words = shlex.split(str(step.get("run", "")).replace("\n", " "))
    return words[words.index("echo-bench") + 1:] if "echo-bench" in words else []


def _locked_uv_version() -> str:
    text = (ROOT / "uv.lock").read_text(encoding="utf-8")
    match = re.search(r'\[\[package\]\]\nname = "uv"\nversion = "([^"]+)"', text)
    assert match, "uv.lock pins no uv"
    return match.group(1)


@pytest.mark.parametrize("name", ["nightly.yml", "gate.yml"])
def test_workflow_installs_from_the_lock_with_the_locked_uv(name: str) -> None:
    runs = [str(s.get("run", "")) for s in _steps(name)]
    assert f"python -m pip install uv=={_locked_uv_version()}" in runs
    assert "uv sync --locked" in runs
    assert not any("pip install -e" in r or "pip install ." in r for r in runs)
    # echo-bench runs from the locked environment.
    assert all("uv run --locked echo-bench" in r for r in runs if "echo-bench " in r)


def test_manual_nightly_starts_the_modal_nightly_and_waits_for_nothing() -> None:
    data = load(ROOT / ".github" / "workflows" / "nightly.yml")
    assert data["on"]["workflow_dispatch"]["inputs"]["spec"]["options"] == ["nightly", "weekly"]
    [job] = data["jobs"].values()
    assert job["timeout-minutes"] <= 30  # nothing long runs on the runner
    commands = [_echo_bench_argv(s) for s in job["steps"] if _echo_bench_argv(s)]
    assert commands[0] == ["modal", "deploy"]
    started = {tuple(argv[:4]) for argv in commands[1:]}
    assert started == {("modal", "run-nightly", "--spec", "nightly"),
                       ("modal", "run-nightly", "--spec", "weekly")}
    assert all("--summary" in argv for argv in commands[1:])
    assert not any(argv[0] == "sweep" for argv in commands)


def test_gate_scores_on_modal_and_skips_forks_with_a_reason() -> None:
    data = load(ROOT / ".github" / "workflows" / "gate.yml")
    [job] = data["jobs"].values()
    assert job["env"]["FROM_FORK"] == (
        "${{ github.event.pull_request.head.repo.full_name != github.repository }}")
    skip, *rest = job["steps"]
    assert skip["if"] == "env.FROM_FORK == 'true'"
    assert "fork" in skip["run"] and "GITHUB_STEP_SUMMARY" in skip["run"]
    assert all("env.FROM_FORK != 'true'" in step["if"] for step in rest)
    [gate] = [_echo_bench_argv(s) for s in rest if _echo_bench_argv(s)]
    args = build_parser().parse_args(gate)
    assert args.backend == "modal" and not args.no_score


def test_the_modal_backend_scores_on_the_apps_gpu_transcriber() -> None:
    import contextlib

    from bench.backends import modal_app
    from bench.commands.sweep import make_backend
    from bench.spec.parser import load_spec

    spec = load_spec(ROOT / "bench" / "sweeps" / "gate.toml")
    with contextlib.ExitStack() as stack:
        backend, remote_asr = make_backend(argparse.Namespace(backend="modal", yes=True),
                                           spec, stack)
        assert backend.workers.worker_cls is modal_app.BenchWorker  # type: ignore[attr-defined]
        assert remote_asr is not None  # scoring is sent to modal_app.Transcriber
        local, none = make_backend(argparse.Namespace(backend="local", ignore_gpu=False),
                                   spec, stack)
        assert none is None and local.name == "local"
