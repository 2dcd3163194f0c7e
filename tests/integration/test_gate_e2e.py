"""The gate end to end on the tiny random model on CPU, through the real CLI.

Baseline 2 steps, candidate 1 step: the candidate is faster (speed PASS, ratio 0.5), and
quality is NOT MEANINGFUL with random weights, so the default gate exits 3 (quality could
not be checked) and says so; a speed-only gate spec re-deciding the recorded run exits 0.

The pipeline's timings are read from the cost clock (tests/cost_clock.py): half the
function evaluations cost exactly half the sampling time, however busy the machine
(issue 22), so one repeat per prompt is enough.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main
from tests.cost_clock import CostClock

GATE_SPEC = """
name = "gate-e2e"
[model]
model = "random:tiny"
device = "cpu"
[prompts]
set = "builtin"
ids = ["en-002", "en-004", "en-027"]
[measure]
warmup = 1
repeats = 1
seeds = [0]
# Scoring with a random ASR costs ~30 s here and cannot be meaningful with random
# weights either; the quality verdict comes from the records' random_weights flag.
score = false
[gate]
# The random codec's decode dominates the total; the sampling time isolates what the
# step count changes.
speed_metric = "t_sampling"
min_prompts = 3
require_quality = {require}
"""

CONFIG = """
[sampler]
num_steps = {steps}
sequence_length = 32
[model]
model = "random:tiny"
codec = "random:tiny"
pca = "random:tiny"
dtype = "float32"
[deploy]
gpu = "A10G"
"""


@pytest.mark.slow
def test_gate_tiny_2_vs_1_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    CostClock().install(monkeypatch)
    spec = tmp_path / "gate.toml"
    spec.write_text(GATE_SPEC.format(require="true"))
    for steps in (2, 1):
        (tmp_path / f"prod{steps}.toml").write_text(CONFIG.format(steps=steps))
    report, verdict_json = tmp_path / "verdict.md", tmp_path / "verdict.json"
    code = main(["gate", "--baseline", str(tmp_path / "prod2.toml"),
                 "--candidate", str(tmp_path / "prod1.toml"), "--spec", str(spec),
                 "--out", str(tmp_path / "runs"), "--ignore-gpu",
                 "--report", str(report), "--json", str(verdict_json)])
    out = capsys.readouterr().out
    verdict = json.loads(verdict_json.read_text())
    checks = {c["name"]: c for c in verdict["checks"]}

    assert code == 3 and verdict["status"] == "INCONCLUSIVE"
    assert checks["speed"]["status"] == "PASS"
    assert checks["speed"]["figures"]["ratio"] == pytest.approx(0.5)
    assert checks["quality"]["status"] == "NOT_MEANINGFUL"
    assert "NOT MEANINGFUL (random weights)" in out
    assert "quality not checked" in verdict["headline"]
    assert checks["memory"]["status"] == "PASS" and "host RSS" in checks["memory"]["summary"]
    assert checks["generations"]["status"] == "PASS"
    assert verdict["n_pairs"] == 3
    assert "NOT MEANINGFUL (random weights)" in report.read_text()

    # Re-decide the recorded run as a speed-only gate: nothing runs again.
    run_dir = verdict["baseline"]["run_dir"]
    speed_only = tmp_path / "speed-only.toml"
    speed_only.write_text(GATE_SPEC.format(require="false"))
    code = main(["gate", "--baseline", f"{run_dir}@{verdict['baseline']['cell_id']}",
                 "--candidate", f"{run_dir}@{verdict['candidate']['cell_id']}",
                 "--spec", str(speed_only)])
    out = capsys.readouterr().out
    assert code == 0
    assert "PASS (speed and memory only; quality NOT CHECKED" in out

    # A report path in a missing folder is refused before anything runs.
    assert main(["gate", "--baseline", run_dir, "--candidate", run_dir, "--spec",
                 str(speed_only), "--json", str(tmp_path / "nope" / "v.json")]) == 2
    assert "folder" in capsys.readouterr().err

    # A run with two cells needs @CELL_ID: bad input, exit 2.
    assert main(["gate", "--baseline", run_dir, "--candidate", run_dir,
                 "--spec", str(speed_only)]) == 2
