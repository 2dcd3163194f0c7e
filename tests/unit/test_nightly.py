"""The history-aware nightly: on constructed pairs of nights
(:mod:`bench.scripts.nightly_runs`) an unchanged night flags nothing and stops most cells
early, a planted slowdown or WER step is flagged as the full comparison flags it; the
draws' order and looks; the command's JSON and its refusal of runs that do not pair; and
the staged run itself, checked against the last full run, with its log."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.analysis.nightly import NightSettings, TwinMatrix, comparable, twin_table
from bench.analysis.nightly_replay import replay_nights
from bench.analysis.nightly_stages import HistoryStages, find_reference
from bench.analysis.run_analysis import analyze_run
from bench.cli import main
from bench.report.markdown import render_markdown
from bench.run.runner import run_sweep
from bench.scripts.nightly_runs import (
    SLOW_PLANT,
    WER_PLANT,
    night_pair,
    nightly_shape,
    plant_cell,
    write_pair,
)
from bench.spec.history_aware import HISTORY_LOG, draw_order, looks
from bench.spec.parser import parse_spec
from bench.spec.prompts import load_prompts
from bench.spec.sweep import SpecError
from bench.store.files import read_json
from bench.store.records import records_frame
from tests.tiny import TINY_MODEL_TOML

SHAPE = nightly_shape(gpus=("A10G", "L4", "A100-80GB"))  # 12 cells, 24 prompts, 2 seeds


def frames(seed: int, case: str) -> tuple[Any, Any]:
    last, tonight = night_pair(seed, case, SHAPE)
    return records_frame(last), records_frame(tonight)


def test_an_unchanged_night_flags_nothing_and_spends_little() -> None:
    out = replay_nights(*frames(5, "same"), replays=5, seed=0)
    assert out.full_flags == [] and not any(out.flagged.values())
    # Every cell ran the first 3 of 48 draws; most stopped within a few more.
    assert 3 / 48 <= out.compute_spent_mean < 0.5
    assert out.agreement == 1.0


@pytest.mark.parametrize(("case", "plant"), [("slower", SLOW_PLANT), ("wer", WER_PLANT)])
def test_a_planted_change_is_flagged_like_the_full_comparison(case: str, plant: Any) -> None:
    cell = plant_cell(plant)
    out = replay_nights(*frames(6, case), replays=5, seed=0)
    assert out.full_flags == [cell]
    assert out.flagged[cell] >= 0.8
    assert sum(v for c, v in out.flagged.items() if c != cell) == 0  # no other cell
    metric = "speed" if case == "slower" else "wer"
    assert out.full[cell].metrics[metric].state == "step"
    assert out.full[cell].metrics[metric].direction == "up"


def test_a_cell_judged_on_every_draw_gets_the_full_runs_figure() -> None:
    last, tonight = frames(7, "slower")
    matrix = TwinMatrix.of(twin_table(last, tonight))
    cell = plant_cell(SLOW_PLANT)
    every = matrix.judge(range(len(matrix.draws)), [matrix.cells.index(cell)],
                         NightSettings())[cell].metrics["speed"]
    mine = tonight[tonight["cell_id"] == cell].sort_values("key")
    theirs = last[last["cell_id"] == cell].sort_values("key")
    ratio = math.exp(np.mean(np.log(mine["rtf"].to_numpy() / theirs["rtf"].to_numpy())))
    assert every.low == every.high == pytest.approx(every.estimate) == pytest.approx(ratio)


def test_draw_order_and_looks() -> None:
    draws = [f"p{k}/{s}" for k in range(5) for s in (0, 1)]
    one = draw_order(draws, 0, "2026-12-06")
    assert sorted(one) == sorted(draws)
    assert one == draw_order(list(reversed(draws)), 0, "2026-12-06")  # records' order
    assert one != draw_order(draws, 0, "2026-12-07")  # another night, other draws first
    assert looks(one, 3, 2) == [tuple(one[:3]), tuple(one[3:5]), tuple(one[5:7]),
                                tuple(one[7:9]), tuple(one[9:])]


def test_pairing_needs_a_twin_for_every_generation() -> None:
    last, tonight = frames(8, "same")
    assert comparable(last, tonight) is None
    twins = twin_table(last, tonight)
    assert len(twins) == len(tonight) and set(twins["draw"]) == {
        f"{p}/{s}" for p in SHAPE.prompts for s in SHAPE.seeds}
    other = tonight.assign(seed=tonight["seed"] + 5)
    assert "no twin in the reference run" in (comparable(last, other) or "")


def test_nightly_replay_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = nightly_shape(gpus=("L4",), n_prompts=12)
    last, tonight = write_pair(tmp_path, 8, "slower", small)
    assert main(["nightly-replay", str(last), str(tonight), "--replays", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    cell = plant_cell(SLOW_PLANT)
    assert out["replays"] == 3 and out["full_flags"] == [cell]
    assert out["flagged"][cell] == 1.0 and 0 < out["compute_spent_mean"] < 1
    other = write_pair(tmp_path / "other", 8, "same", nightly_shape(gpus=("A10G",),
                                                                    n_prompts=3))[0]
    assert main(["nightly-replay", str(other), str(tonight)]) == 2
    assert "cannot be paired" in capsys.readouterr().err


# ----------------------------------------------------------------- the staged run

SPEC = """
name = "h"
""" + TINY_MODEL_TOML + """[prompts]
set = "builtin"
limit = 12
[grid]
num_steps = [2, 4, 8]
[measure]
warmup = 0
seeds = [0, 1]
[history]
first_batch = 3
"""


class NightBackend:
    """Records without a model: each generation's compute seconds follow its step count
    (``slower`` times more for the cells in ``slow``) with 2 % noise drawn per night."""

    name = "fake"

    def __init__(self, night: int, slow: frozenset[str] = frozenset(), slower: float = 1.0
                 ) -> None:
        self.rng = np.random.default_rng(night)
        self.slow, self.slower = slow, slower
        self.ran = 0

    def execute(self, spec: Any, work: Any, sink: Any, on_cell_done: Any) -> None:
        for cell, gens in work.items():
            for g in gens:
                t = (0.1 * cell.sampler.num_steps * (self.slower if cell.id in self.slow
                                                     else 1.0)
                     * math.exp(self.rng.normal(0.0, 0.02)))
                self.ran += 1
                sink({"key": g.key, "cell_id": cell.id, "cell_label": cell.label,
                      "prompt_id": g.prompt.id, "seed": g.seed, "repeat": g.repeat,
                      "status": "ok", "t_total": t, "audio_seconds": 1.0, "rtf": t,
                      "device_name": "cpu", "num_steps": cell.sampler.num_steps}, None)
            on_cell_done(cell)


def night(when: str) -> Any:
    return lambda: datetime.fromisoformat(when).replace(tzinfo=UTC)


def test_a_history_aware_run_is_checked_against_the_last_full_run(tmp_path: Path) -> None:
    spec = parse_spec(SPEC, base_dir=".", name="h")
    prompts = load_prompts(spec.prompts)
    full = len(spec.cells) * len(prompts) * 2
    # No full run yet: tonight runs in full, and says why.
    why = HistoryStages.prepare(spec, prompts, tmp_path, None, now=night("2026-12-01"))
    assert isinstance(why, str) and "no complete full run of h" in why
    first = run_sweep(spec, NightBackend(0), root=tmp_path, progress=False)
    assert first.ok == full
    # The next night: checked against it; the slowed cell is flagged, the rest stop early.
    slow = spec.cells[1].id
    stages = HistoryStages.prepare(spec, prompts, tmp_path, None, now=night("2026-12-02"))
    assert isinstance(stages, HistoryStages)
    assert stages.reference.path == first.run_dir
    backend = NightBackend(1, frozenset({slow}), slower=1.5)
    second = run_sweep(spec, backend, root=tmp_path, staging=stages.staging(), progress=False,
                       new=True)
    assert backend.ran < full  # the point of it
    log = read_json(second.run_dir / HISTORY_LOG)
    assert log["reference"]["run_id"] == first.run_dir.name
    assert log["cells"][slow]["state"] == "step"
    assert log["cells"][slow]["metrics"]["speed"]["direction"] == "up"
    assert {c for c, v in log["cells"].items() if v["state"] == "step"} == {slow}
    assert log["quality"].startswith("not compared") and log["stop"] is not None
    report = render_markdown(analyze_run(second.run_dir, n_boot=20))
    section = report[report.index("## Checked against the last full run"):]
    assert first.run_dir.name in section
    row = next(line for line in section.splitlines() if f"`{slow}`" in line)
    assert "| step |" in row and "RTF x 1.5" in row
    assert "## Stopped early" not in report  # not an adaptive run
    # A history-aware run is partial: it is never the reference of a later night, and a
    # full run older than full_every_days (7) is not either.
    assert isinstance(HistoryStages.prepare(spec, prompts, tmp_path, None,
                                            now=night("2026-12-03")), HistoryStages)
    assert isinstance(find_reference(spec, prompts, tmp_path,
                                     datetime(2026, 12, 20, tzinfo=UTC)), str)


def test_history_and_adaptive_do_not_mix() -> None:
    with pytest.raises(SpecError, match=r"\[adaptive\] or \[history\], not both"):
        parse_spec(SPEC + "[adaptive]\nfirst_batch = 6\nmax_usd = 1\n", base_dir=".", name="h")
    with pytest.raises(SpecError, match=r"history\.first_batch must be an integer >= 2"):
        parse_spec(SPEC.replace("first_batch = 3", "first_batch = 1"), base_dir=".", name="h")
