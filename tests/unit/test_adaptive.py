"""Adaptive sweeps: the [adaptive] table, the stopping policy on constructed runs whose
right answer is known, the staged runner, and the replay command."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bench.analysis.adaptive import Comparisons, PolicySettings, decide
from bench.analysis.adaptive_replay import replay, simulate
from bench.analysis.cells import summarize_cells
from bench.analysis.evidence import Evidence, cell_summary, evidence
from bench.analysis.headline import (
    DEFAULT_WER_BUDGET_POINTS,
    choose_baselines,
    headline,
    pick_headline,
)
from bench.cli import main
from bench.run.runner import Staging, run_sweep
from bench.spec.adaptive import DEFAULT_WER_BUDGET, min_first_batch, stage_batches
from bench.spec.parser import parse_spec
from bench.spec.sweep import SpecError
from bench.store.records import load_records
from tests.adaptive_runs import TrueCell, constructed_records, write_run

SPEC = """
name = "t"
[model]
model = "random:tiny"
codec = "random:tiny"
pca = "random:tiny"
dtype = "float32"
device = "cpu"
[prompts]
set = "builtin"
limit = 8
[grid]
num_steps = [2, 4]
cfg_mode = ["independent", "none"]
[measure]
warmup = 0
asr = "random:tiny"
"""

FAST = PolicySettings()
FRONTIER = PolicySettings(goal="frontier")


def choices(ev: Evidence, budget: float = 0.5, *, among: set[str] | None = None
            ) -> dict[str, str]:
    """hardware -> the headline's choice (the one way: bench.analysis.headline)."""
    _, _, picked = pick_headline(cell_summary(ev), ev, budget, among=among)
    return {c.hardware: c.cell_id for c in picked}


def clear_cells() -> list[TrueCell]:
    """Baseline (40 steps), a good fast cell, a bad fast cell, a slow good one."""
    return [
        TrueCell("base", 40, "independent", 0.48, 0.03),
        TrueCell("fast-good", 30, "alternating", 0.24, 0.03),
        TrueCell("fast-bad", 16, "joint", 0.13, 0.30),
        TrueCell("slow", 40, "alternating", 0.32, 0.15),
    ]


# --------------------------------------------------------------------------- spec


def test_first_batch_floor_follows_the_confidence() -> None:
    # 1 - 2 * 0.5**n must reach the level: 6 prompts at 95 %, 5 at 90 %, 8 at 99 %.
    assert [min_first_batch(c) for c in (0.9, 0.95, 0.99)] == [5, 6, 8]
    assert DEFAULT_WER_BUDGET == DEFAULT_WER_BUDGET_POINTS


def test_adaptive_table_is_parsed() -> None:
    spec = parse_spec(SPEC + "[adaptive]\nfirst_batch = 6\nbatch = 2\nmax_usd = 1.5\n",
                      base_dir=".", name="t")
    assert spec.adaptive is not None
    assert (spec.adaptive.first_batch, spec.adaptive.batch, spec.adaptive.max_usd) == (6, 2, 1.5)
    assert spec.adaptive.goal == "headline"
    headline_only = parse_spec(SPEC + "[adaptive]\nfirst_batch = 6\nmax_usd = 1\n"
                               "goal = 'headline'\n", base_dir=".", name="t")
    assert headline_only.adaptive is not None and headline_only.adaptive.goal == "headline"
    assert parse_spec(SPEC, base_dir=".", name="t").adaptive is None


@pytest.mark.parametrize(("table", "words"), [
    ("first_batch = 6", ["needs a budget", "max_gpu_hours", "max_usd"]),
    ("first_batch = 3\nmax_usd = 1", ["adaptive.first_batch = 3", "first_batch >= 6"]),
    ("first_batch = 4\nconfidence = 0.99\nmax_usd = 1", ["first_batch >= 8"]),
    ("first_batch = 9\nmax_usd = 1", ["prompts.limit = 8"]),
    ("first_batch = 6\nmax_usd = -1", ["adaptive.max_usd"]),
    ("frist_batch = 6\nmax_usd = 1", ["unknown key 'frist_batch'"]),
    ("first_batch = 6\nmax_usd = 1\ngoal = 'pareto'", ["adaptive.goal", "'headline'"]),
])
def test_bad_adaptive_tables_are_one_line_errors(table: str, words: list[str]) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(SPEC + "[adaptive]\n" + table + "\n", base_dir=".", name="t")
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_cli_rejects_adaptive_spec_without_budget(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC + "[adaptive]\nfirst_batch = 6\n")
    assert main(["sweep", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("echo-bench: error:") and "budget" in err[0]
    # --adaptive on a spec without the table names the fix.
    spec.write_text(SPEC)
    assert main(["sweep", str(spec), "--dry-run", "--adaptive"]) == 2
    assert "[adaptive]" in capsys.readouterr().err


def test_stage_batches_cover_every_prompt_once_in_a_seeded_order() -> None:
    ids = [f"p{k}" for k in range(14)]
    stages = stage_batches(ids, 6, 3, seed=1)
    assert [len(s) for s in stages] == [6, 3, 3, 2]
    assert sorted(p for s in stages for p in s) == sorted(ids)
    assert stages == stage_batches(ids, 6, 3, seed=1)
    assert stages != stage_batches(ids, 6, 3, seed=2)


# --------------------------------------------------------------------------- policy


def frame(cells: list[TrueCell], n_prompts: int, seed: int = 0, **kw: Any) -> pd.DataFrame:
    return pd.DataFrame(constructed_records(cells, n_prompts=n_prompts, seed=seed, **kw))


def test_light_summary_agrees_with_summarize_cells() -> None:
    records = frame(clear_cells(), 8)
    records.loc[0, ["status", "error"]] = ["failed", "boom"]  # a failure counts
    records.loc[1, "audio_silent"] = True  # silence counts as no speech
    full = summarize_cells(records, n_boot=1)
    light = cell_summary(evidence(records))
    # summarize_cells takes its decision figures from cell_summary: check the one rule
    # against the per-record path (speech RTFs, and the bootstrap summary's point figure).
    from bench.analysis.cells import _cell_quality, _quantile, speech_rtfs
    from bench.scoring.outcomes import quality_scores

    for cid, group in records.groupby("cell_id", sort=False):
        ok = group[group["status"] == "ok"]
        assert light.loc[cid, "rtf_median"] == pytest.approx(_quantile(speech_rtfs(ok), 0.5))
        rated, scores = quality_scores(group, scored=True)
        by_records = _cell_quality(rated, scores, True, n_boot=1, seed=0)["corpus_wer"]
        assert light.loc[cid, "corpus_wer"] == pytest.approx(by_records)
    for column in ("rtf_median", "corpus_wer"):
        assert np.allclose(light[column].to_numpy(float), full[column].to_numpy(float))
    for column in ("n_ok", "n_failed", "quality", "hardware"):
        assert list(light[column]) == list(full[column])
    pick = {c.hardware: c.cell_id for c in headline(light, choose_baselines(light), 0.5)}
    assert pick == {c.hardware: c.cell_id for c in headline(full, choose_baselines(full), 0.5)}


def test_paired_differences_are_antisymmetric_and_zero_against_itself() -> None:
    ev = evidence(frame(clear_cells(), 8))
    comp = Comparisons(ev, FAST)
    d, back = comp.diff("base", "slow", "WER"), comp.diff("slow", "base", "WER")
    assert d.estimate == pytest.approx(-back.estimate)
    assert (d.low, d.high) == pytest.approx((-back.high, -back.low))
    same = comp.diff("base", "base", "RTF")
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)


def test_intervals_are_confidence_sequences_about_the_whole_prompt_set() -> None:
    ev = evidence(frame(clear_cells(), 12, seeds=(0, 1)))
    order = [f"p{k:03d}" for k in range(12)]
    population = Comparisons(ev, FAST, order=order)  # prompts' population at large
    quarter = Comparisons(ev, FAST, n_prompts=48, order=order)  # 12 of a 48-prompt set seen
    whole = Comparisons(ev, FAST, n_prompts=12, order=order)  # the whole set seen
    for metric in ("RTF", "WER"):
        p, q, w = (c.diff("base", "slow", metric) for c in (population, quarter, whole))
        assert p.estimate == q.estimate == w.estimate
        assert (w.low, w.high) == (w.estimate, w.estimate)  # the full run's figure, known
        assert p.low < q.low <= q.high < p.high  # a finite set narrows it
    # The interval is the core's over per-prompt sums in the draw order.
    from bench.analysis.sequential import confidence_sequence

    units = ev.units.set_index(["cell_id", "prompt_id"])
    diff = (units.loc["slow", "wer_num"] - units.loc["base", "wer_num"]).groupby(level=0).sum()
    words = units.loc["base", "wer_den"].groupby(level=0).sum()
    core = confidence_sequence(diff.reindex(order).to_numpy()[:, None],
                               words.reindex(order).to_numpy()[:, None], 48)
    q = quarter.diff("base", "slow", "WER")
    assert (q.estimate, q.low, q.high) == pytest.approx(
        (core.estimate[0], core.low[0], core.high[0]))


def test_clear_run_stops_dominated_and_out_of_budget_cells_after_a_few_prompts() -> None:
    records = frame(clear_cells(), 12, seeds=(0, 1))
    first = records[records["prompt_id"].isin([f"p{k:03d}" for k in range(8)])]
    decision = decide(first, FRONTIER, n_prompts=12)
    assert decision.cells["fast-bad"].active is False
    assert "WER budget" in decision.cells["fast-bad"].detail
    assert decision.cells["slow"].active is False
    assert decision.cells["slow"].reason == "dominated"
    assert decision.cells["slow"].by in ("fast-good", "base")
    assert "RTF x" in decision.cells["slow"].detail and "WER" in decision.cells["slow"].detail
    # The likely choice and the baseline it is held to run on.
    assert decision.cells["fast-good"].active and decision.cells["base"].active


def test_random_weights_decide_on_speed_alone() -> None:
    records = frame(clear_cells(), 8, meaningful=False)
    decision = decide(records, FAST, n_prompts=8)
    assert decision.speed_only and "speed alone" in decision.note
    # On speed alone the fastest cell is the choice, whatever its WER.
    assert decision.choices == {"A10G": "fast-bad"}
    assert decision.active == set()


def test_replay_of_a_clear_run_spends_less_and_agrees() -> None:
    records = frame(clear_cells(), 24, seeds=(0, 1))
    for settings in (FAST, FRONTIER):
        summary = replay(records, first_batch=6, batch=3, settings=settings, n_replays=6)
        assert summary.full_headline == {"A10G": "fast-good"}
        assert all(summary.headline_same) and summary.shares(summary.as_good) == {"A10G": 1.0}
        assert all(summary.frontier_same) or settings.goal == "headline"
        assert max(summary.fractions) < 1.0 and max(summary.compute_fractions) < 1.0


def test_the_headline_goal_stops_what_cannot_be_chosen_whatever_its_frontier_place() -> None:
    # "precise" is slower than "fast-good" and half a point better on WER: whether it is on the
    # frontier takes many prompts to tell, so the frontier goal keeps running it; it can
    # never be the choice (surely slower than a cell surely within the budget), so the
    # headline goal stops it after the first batch.
    cells = [TrueCell("base", 40, "independent", 0.48, 0.12),
             TrueCell("fast-good", 30, "alternating", 0.24, 0.03),
             TrueCell("fast-bad", 16, "joint", 0.13, 0.30),
             TrueCell("precise", 40, "alternating", 0.40, 0.025)]
    records = frame(cells, 24, seeds=(0, 1))
    prompts = list(dict.fromkeys(records["prompt_id"]))
    for r in range(3):
        batches = stage_batches(prompts, 6, 3, seed=r)
        runs = {goal: simulate(records, batches, replace(FAST, goal=goal))
                for goal in ("frontier", "headline")}
        ran = {goal: records[sim.ran].groupby("cell_id").size() for goal, sim in runs.items()}
        assert ran["headline"]["precise"] < ran["frontier"]["precise"], f"order {r}"
        assert sum(ran["headline"]) < sum(ran["frontier"])
        stopped = runs["headline"].decisions[-1].cells["precise"]
        assert stopped.reason == "slower than the choice" and stopped.by == "fast-good"
        assert "RTF x" in stopped.detail
        assert runs["headline"].decisions[-1].cells["fast-bad"].reason == "out of the WER budget"
        for sim in runs.values():
            assert choices(evidence(records[sim.ran]),
                           among=sim.decisions[-1].in_contention()) == {
                "A10G": "fast-good"}


def test_a_cell_that_looks_good_on_few_prompts_is_not_chosen() -> None:
    # "lucky" is the fastest cell and perfect on 80 % of prompts, but says 60 % of its
    # words wrong on the rest: often flawless on a first batch, far out of budget in all.
    cells = [*clear_cells(), TrueCell("lucky", 12, "joint", 0.10, 0.0, lucky=True,
                                      bad_share=0.2, bad_p_err=0.6)]
    records = frame(cells, 24, seed=3)
    prompts = list(dict.fromkeys(records["prompt_id"]))
    fooled = 0
    for r in range(12):
        batches = stage_batches(prompts, 6, 3, seed=r)
        first = records[records["prompt_id"].isin(batches[0])]
        fooled += choices(evidence(first)) == {"A10G": "lucky"}
        for goal in ("frontier", "headline"):
            sim = simulate(records, batches, replace(FAST, goal=goal))
            assert choices(evidence(records[sim.ran]),
                           among=sim.decisions[-1].in_contention()) == {
                "A10G": "fast-good"}, f"order {r}, {goal}"
    assert fooled > 0  # the first batch alone does mislead: the test can fail


# --------------------------------------------------------------------------- runner


class FakeBackend:
    """Records without a model: each generation's RTF follows its step count."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[set[str]] = []

    def execute(self, spec: Any, work: Any, sink: Any, on_cell_done: Any) -> None:
        self.calls.append({c.id for c in work})
        for cell, gens in work.items():
            for g in gens:
                t = 0.1 * cell.sampler.num_steps
                sink({"key": g.key, "cell_id": cell.id, "cell_label": cell.label,
                      "prompt_id": g.prompt.id, "seed": g.seed, "repeat": g.repeat,
                      "status": "ok", "t_total": t, "audio_seconds": 1.0, "rtf": t,
                      "device_name": "cpu", "num_steps": cell.sampler.num_steps}, None)
            on_cell_done(cell)


def test_staged_run_tags_stages_and_runs_later_stages_for_active_cells_only(
        tmp_path: Path) -> None:
    spec = parse_spec(SPEC + "[adaptive]\nfirst_batch = 6\nbatch = 1\nmax_usd = 1\n",
                      base_dir=".", name="t")
    keep = spec.cells[0].id
    asked: list[tuple[int, frozenset[str]]] = []

    def after(store: Any, stage: int, cells: frozenset[str]) -> frozenset[str]:
        asked.append((stage, cells))
        return frozenset({keep})

    staging = Staging(tuple(stage_batches([f"en-{k:03d}" for k in range(1, 9)], 6, 1, 0)),
                      after)
    backend = FakeBackend()
    outcome = run_sweep(spec, backend, root=tmp_path, staging=staging, progress=False)
    records = load_records(outcome.run_dir)
    assert [s for s, _ in asked] == [0, 1, 2]
    assert backend.calls[1:] == [{keep}, {keep}]
    later = records[records["adaptive_stage"] > 0]
    assert set(later["cell_id"]) == {keep} and len(later) == 2
    assert (records.groupby("cell_id").size().to_dict()
            == {c.id: (8 if c.id == keep else 6) for c in spec.cells})
    assert outcome.total == len(records)


# --------------------------------------------------------------------------- command


def test_replay_command_reports_the_three_figures(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = write_run(tmp_path, "clear", constructed_records(clear_cells(), n_prompts=12))
    assert main(["adaptive-replay", str(run_dir), "--replays", "3"]) == 0
    out = capsys.readouterr().out
    assert "(a) compute seconds spent" in out and "(b) choice as good as the full run's" in out
    assert "(c) headline exactly the full run's" in out and "replays: 3" in out
    assert "(c') how firmly the full run's prompts support its headline on A10G: same choice" \
        in out
    assert "(d) frontier set same as the full run's" in out
    assert main(["adaptive-replay", str(run_dir), "--first-batch", "2"]) == 2


def test_adaptive_sweep_logs_decisions_and_the_report_shows_stopped_cells(
        tmp_path: Path) -> None:
    from bench.analysis.run_analysis import analyze_run
    from bench.commands.adaptive_sweep import AdaptiveStages
    from bench.report.markdown import render_markdown
    from bench.spec.prompts import load_prompts

    # 2 vs 8 steps without noise: the 8-step cells are surely slower after the first batch.
    spec = parse_spec(SPEC.replace("[2, 4]", "[2, 8]")
                      + "[adaptive]\nfirst_batch = 6\nbatch = 1\nmax_usd = 1\n",
                      base_dir=".", name="t")
    stages = AdaptiveStages(spec, load_prompts(spec.prompts), None)
    outcome = run_sweep(spec, FakeBackend(), root=tmp_path, staging=stages.staging(),
                        progress=False)
    assert stages.log["stop"] is not None and stages.log["stages"][0]["stage"] == 0
    report = render_markdown(analyze_run(outcome.run_dir, n_boot=50))
    section = report[report.index("## Stopped early"):]
    slow = [c for c in spec.cells if c.sampler.num_steps == 8]
    for cell in slow:
        assert cell.id in section
    assert "stopped after stage 0" in section and "RTF x" in section
    assert "speed alone" in section


def test_a_cell_stopped_on_easy_prompts_is_held_to_the_baselines_wer_on_those_prompts(
        tmp_path: Path) -> None:
    from bench.analysis.run_analysis import analyze_run

    # As an adaptive run leaves it: "fast" ran only the 6 easy prompts (1 error in 20
    # words each); the baseline ran all 12, flawless on the easy ones and 4 errors in 20
    # on each hard one. Against the baseline's 10 % over every prompt, fast's 5 % looks
    # within budget; on the prompts it ran the baseline made no error: 5 points over.
    records = constructed_records([TrueCell("base", 40, "independent", 0.48, 0.0),
                                   TrueCell("fast", 30, "alternating", 0.24, 0.0)],
                                  n_prompts=12)
    records = [r for r in records if r["cell_id"] == "base" or int(r["prompt_id"][1:]) < 6]
    for r in records:
        errors = (1 if r["cell_id"] == "fast" else 4 if int(r["prompt_id"][1:]) >= 6 else 0)
        r.update(substitutions=errors, hits=20 - errors, wer=errors / 20)
    table = pd.DataFrame(records)
    cells = cell_summary(evidence(table))
    unpaired = headline(cells, choose_baselines(cells), 0.5)
    assert [c.cell_id for c in unpaired] == ["fast"]  # unpaired: the wrong answer
    assert choices(evidence(table)) == {"A10G": "base"}
    analysis = analyze_run(write_run(tmp_path, "partial", records), n_boot=50)
    assert [c.cell_id for c in analysis.choices] == ["base"]
    assert analysis.cells.loc["fast", "baseline_wer_paired"] == 0.0
    assert analysis.cells.loc["base", "baseline_wer_paired"] == pytest.approx(0.1)


# --------------------------------------------------------------------------- regret


def test_replay_json_judges_choices_against_the_run_and_its_truth(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from tests.constructed_runs import constructed_run

    records, truth = constructed_run("grid", 12, seed=5)
    keep = {c for c in truth if c.startswith("H100")}  # one GPU keeps it quick
    run_dir = write_run(tmp_path, "truth", [r for r in records if r["cell_id"] in keep])
    (run_dir / "truth.json").write_text(json.dumps({c: truth[c] for c in keep}))
    assert main(["adaptive-replay", str(run_dir), "--replays", "2", "--wer-budget", "3",
                 "--truth", str(run_dir / "truth.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("replays", "seconds", "compute_spent_mean", "compute_spent_p90", "choices",
                "as_good", "as_good_truth", "full_as_good_truth", "resamples_as_good_truth"):
        assert key in out, key
    assert out["replays"] == 2 and len(out["choices"]) == 2
    assert set(out["as_good"]) == set(out["as_good_truth"]) == {"H100"}
    assert 0.0 < out["compute_spent_mean"] <= out["compute_spent_p90"] <= 1.0
    (tmp_path / "bad.json").write_text('{"x": {"wer": 1}}')
    assert main(["adaptive-replay", str(run_dir), "--truth", str(tmp_path / "bad.json")]) == 2
    assert "not a map of cell id" in capsys.readouterr().err
    assert main(["adaptive-replay", str(run_dir), "--truth", str(tmp_path / "none.json")]) == 2


def test_as_good_is_within_the_budget_and_the_speed_tolerance_of_the_best() -> None:
    from bench.analysis.regret import CellTruth, truth_yardstick

    truth = {"base": CellTruth(0.030, 1.00, "A10G"), "fast-bad": CellTruth(0.040, 0.30, "A10G"),
             "edge": CellTruth(0.0349, 0.50, "A10G"), "near": CellTruth(0.031, 0.52, "A10G"),
             "slower": CellTruth(0.030, 0.60, "A10G"),
             "failing": CellTruth(0.030, 0.20, "A10G", usable=False)}
    stick = truth_yardstick(truth, {"A10G": "base"}, 0.5, speed_only=False)
    assert stick.best["A10G"] == 0.50  # the fastest usable cell within base + 0.5 points
    assert [c for c in truth if stick.as_good("A10G", c)] == ["edge", "near"]  # 0.52 <= 0.525
    assert not stick.as_good("A10G", "")  # no choice where a good one exists
    speed = truth_yardstick(truth, {"A10G": "base"}, 0.5, speed_only=True)
    assert [c for c in truth if speed.as_good("A10G", c)] == ["fast-bad"]


def test_the_headline_says_what_the_run_resolves_against_the_budget() -> None:
    ev = evidence(frame(clear_cells(), 12, seeds=(0, 1)))
    _, _, picked = pick_headline(cell_summary(ev), ev, 0.5)
    assert "at its 12 prompts the run resolves a paired WER difference of about ±" in picked[0].note
    assert "the 0.5-point budget is not decided by the run; it needs about" in picked[0].note
    _, _, wide = pick_headline(cell_summary(ev), ev, 60.0)
    assert "needs about" not in wide[0].note
