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
