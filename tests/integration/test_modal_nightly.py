"""The nightly function's body (``modal_app.nightly``) against the Modal stand-in of
tests/modal_standin.py: stopped mid-run and started again on the same input, it
finishes one run on the Volume with every generation recorded once and executed once,
re-attaching to the calls it had spawned; a third start the same day runs nothing.
A GPU container preempted in the middle of a round is restarted on the same input and
continues its group's rounds from the call's journal: every generation recorded once,
with the order fields of one uninterrupted local schedule."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import modal
import pytest

from bench.backends import modal_app, modal_journal
from bench.run.schedule import order_seed, schedule
from bench.run.worker import order_fields, plan
from bench.spec.parser import load_spec
from bench.spec.prompts import load_prompts
from bench.store.layout import audio_filename
from tests.modal_standin import FakeModal, FakeVolume, OrchestratorVolume, Preempted
from tests.tiny import TINY_MODEL_TOML

SPEC = """
name = "nightly-tiny"
""" + TINY_MODEL_TOML + """[prompts]
set = "builtin"
ids = ["en-002", "en-010", "en-027"]
long_text = "truncate"  # one sampler call per prompt at 16 latents, to stay quick
[grid]
gpu = ["L4", "A10G"]
num_steps = [2, 3]
sequence_length = [16]
[measure]
warmup = 0
score = false
[modal]
audio_sample = 0.34
"""
CELLS = 4
# Cells that share a loaded pipeline on one GPU type form a group: one call each.
GROUPS = 2
# The orchestrator commits once when the run exists, once per spawned call (its
# FunctionCall id, for all the cells of its group), once per finished cell and once at
# the end: 1 + 2 + 4 + 1.
COMMITS = 1 + GROUPS + CELLS + 1
# The GPU container's first attempt of each call is stopped on its 4th Volume commit
# (journal commits one per generation here, see the test): its start logged, two
# generations journaled, the third lost mid-round.
PREEMPT_WORKER_AT = 4


@pytest.fixture
def nightly_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    spec_path = tmp_path / "nightly-tiny.toml"
    spec_path.write_text(SPEC, encoding="utf-8")
    volume = FakeVolume(tmp_path / "outputs")
    fake = FakeModal(volume)
    monkeypatch.setattr(modal_app, "OUTPUTS_RUNS", str(volume.mount / "runs"))
    monkeypatch.setattr(modal_app, "BenchWorker", fake.worker_cls())
    monkeypatch.setattr(modal, "FunctionCall", fake.function_call())
    scored: list[str] = []
    monkeypatch.setattr(modal_app, "score_and_report", SimpleNamespace(remote=scored.append))
    app_id = str(modal_app.app.app_id)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

    def report(*, start: datetime, end: datetime, resolution: str) -> list[Any]:
        assert resolution == "h" and start <= end
        return [SimpleNamespace(object_id=app_id, cost=Decimal("0.25"), interval_start=hour,
                                cost_by_resource={"GPU (L4)": Decimal("0.2"),
                                                  "CPU": Decimal("0.05")}),
                SimpleNamespace(object_id="ap-other", cost=Decimal("9"), interval_start=hour,
                                cost_by_resource={})]

    monkeypatch.setattr(modal_app, "billing_report", lambda: report)
    return SimpleNamespace(spec_path=spec_path, volume=volume, fake=fake, scored=scored,
                           monkeypatch=monkeypatch)


def start(env: SimpleNamespace, stop_at: int | None) -> str | None:
    """One attempt of the nightly function (a fresh container) on the same input."""
    view = OrchestratorVolume(env.volume, stop_at)
    env.monkeypatch.setattr(modal_app, "outputs", view)
    try:
        result: str = modal_app.nightly.local(str(env.spec_path))
    except Preempted:
        env.volume.preempt()
        return None
    return result


def expected_keys(spec_path: Path) -> set[str]:
    spec = load_spec(spec_path)
    return {g.key for g in plan(spec.cells, load_prompts(spec.prompts), spec.measure.seeds,
                                spec.measure.repeats)}


def expected_order(spec_path: Path) -> dict[str, dict[str, Any]]:
    """Each key's order fields in one uninterrupted local schedule of the whole spec."""
    spec = load_spec(spec_path)
    work: dict[Any, list[Any]] = {}
    for gen in plan(spec.cells, load_prompts(spec.prompts), spec.measure.seeds,
                    spec.measure.repeats):
        work.setdefault(gen.cell, []).append(gen)
    return {step.gen.key: order_fields(step, group)
            for group in schedule(work, seed=order_seed(spec.hash)) for step in group.steps}


def stored(env: SimpleNamespace, run_id: str) -> list[dict[str, Any]]:
    run_dir = env.volume.committed / "runs" / run_id
    return [json.loads(x) for x in (run_dir / "records.jsonl").read_text().splitlines() if x]


@pytest.mark.parametrize("stop_at", [GROUPS + 3, COMMITS])
def test_preempted_nightly_resumes_and_runs_every_generation_once(
        nightly_env: SimpleNamespace, stop_at: int, capsys: pytest.CaptureFixture[str]) -> None:
    env = nightly_env
    assert start(env, stop_at) is None  # stopped mid-run
    run_id = start(env, None)  # Modal starts the same input again
    env.fake.drain()
    runs_root = env.volume.committed / "runs"
    # index.d/ holds each run's index file (bench.store.history), not a run.
    runs = [p for p in runs_root.iterdir() if p.is_dir() and p.name != "index.d"]
    assert [p.name for p in runs] == [run_id]  # one run on the Volume, not two
    run_dir = runs[0]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    lines = [json.loads(x) for x in (run_dir / "records.jsonl").read_text().splitlines() if x]
    keys = Counter(r["key"] for r in lines)
    assert set(keys) == expected_keys(env.spec_path) and set(keys.values()) == {1}
    # Every generation ran once: the restarted orchestrator re-attached to its calls.
    assert set(env.fake.executed.values()) == {1}
    assert len(env.fake.spawned) == GROUPS
    assert sorted(len(s["cell_ids"]) for s in env.fake.spawned) == [2, 2]
    ledger = json.loads((run_dir / "calls.json").read_text())
    assert len(ledger) == CELLS  # every cell names its group's call
    assert sorted({e["call_id"] for e in ledger.values()}) == sorted(
        s["call_id"] for s in env.fake.spawned)
    if stop_at < COMMITS:
        assert "re-attached" in capsys.readouterr().err
    # Modal GPU names: the alias A10G is sent as Modal's current name, A10.
    assert {s["options"]["gpu"] for s in env.fake.spawned} == {"L4", "A10"}
    # Audio went to the Volume, not through call results, and only what retention kept.
    for record in lines:
        assert "audio_wav_b64" not in record
        wav = run_dir / "audio" / audio_filename(record["key"])
        assert wav.is_file() == (record["audio_kept"] is not None)
        assert (record["audio_path"] is not None) == wav.is_file()
        assert record["queue_seconds"] >= 0 and record["container_started_at"] > 0
    kept = [r for r in lines if r["audio_kept"]]
    assert 0 < len(kept) < len(lines)
    assert env.scored == [run_id]  # scoring was started on the run


def test_completed_nightly_is_not_run_again_the_same_day_and_records_billing(
        nightly_env: SimpleNamespace) -> None:
    env = nightly_env
    run_id = start(env, None)
    env.fake.drain()
    spawned = len(env.fake.spawned)
    manifest = json.loads((env.volume.committed / "runs" / str(run_id) / "manifest.json")
                          .read_text())
    cost = manifest["cost"]
    assert cost["estimate_usd"] > 0 and "estimate" in cost["estimate_basis"]
    assert cost["billed_usd"] == 0.25  # only this app's line of the report
    assert cost["billed_by_resource"] == {"CPU": 0.05, "GPU (L4)": 0.2}
    env.fake = FakeModal(env.volume)  # a later start: nothing left to spawn
    assert start(env, None) == run_id
    assert spawned == GROUPS and not env.fake.spawned
    assert env.scored == [run_id, run_id]  # scoring is finished (resumable) again


@pytest.mark.parametrize("stop_at", [None, GROUPS + 3])
def test_preempted_gpu_container_continues_its_group_in_the_same_rounds(
        nightly_env: SimpleNamespace, stop_at: int | None) -> None:
    env = nightly_env
    # A commit per journaled generation (not batched), so the stop lands mid-round.
    env.monkeypatch.setattr(modal_journal, "COMMIT_EVERY", 1)
    env.fake = FakeModal(env.volume, preempt_worker=PREEMPT_WORKER_AT)
    env.monkeypatch.setattr(modal_app, "BenchWorker", env.fake.worker_cls())
    env.monkeypatch.setattr(modal, "FunctionCall", env.fake.function_call())
    run_id = start(env, stop_at)
    if stop_at is not None:  # the orchestrator was stopped too, and started again
        assert run_id is None
        run_id = start(env, None)
    env.fake.drain()
    assert run_id is not None
    # Every call was preempted once and ran again on the same input (Modal's restart).
    assert len(env.fake.spawned) == GROUPS
    assert set(env.fake.attempts.values()) == {2}
    records = stored(env, run_id)
    keys = Counter(r["key"] for r in records)
    assert set(keys) == expected_keys(env.spec_path) and set(keys.values()) == {1}
    assert all(r["status"] == "ok" for r in records)
    # The group ran interleaved, and the restart kept the rounds and positions of the
    # first attempt: the order fields are those of one uninterrupted local schedule.
    order = expected_order(env.spec_path)
    for record in records:
        assert {f: record[f] for f in order[record["key"]]} == order[record["key"]]
    assert all(r["order_interleaved"] for r in records)
    assert {r["order_group"] for r in records} == {0, 1}
    # order_seq: each record's place in the run, once each, continued across restarts.
    assert sorted(r["order_seq"] for r in records) == list(range(len(records)))
    # The restarted container is a cold one: its generations say so.
    restarted = [r for r in records if r["container_call"] == 0]
    assert restarted and all(r["cold_start_seconds"] > 0 for r in restarted)
    # Journals are removed once their records are stored.
    assert not list((env.volume.committed / "journals").glob("*"))


def test_a_history_aware_nightly_is_checked_against_the_last_full_run_on_the_volume(
        nightly_env: SimpleNamespace) -> None:
    from datetime import timedelta

    from bench.backends.modal_nightly import run_on_volume
    from bench.backends.modal_orchestrator import ModalWorkers
    from bench.spec.history_aware import HISTORY_LOG

    env = nightly_env
    env.spec_path.write_text(SPEC + "[history]\nfirst_batch = 2\n", encoding="utf-8")
    spec = load_spec(env.spec_path)
    view = OrchestratorVolume(env.volume, None)
    root = env.volume.mount / "runs"

    def night(day: int) -> str:
        when = datetime.now(UTC) + timedelta(days=day)
        workers = ModalWorkers(modal_app.BenchWorker, region=None, volume=view)
        run_id, ran = run_on_volume(spec, root=root, volume=view, workers=workers,
                                    now=lambda: when)
        assert ran
        return run_id

    first = night(0)  # no full run yet: tonight is the full one
    assert not (env.volume.committed / "runs" / first / HISTORY_LOG).exists()
    second = night(1)  # a staged run: one execute per look, on the same backend
    env.fake.drain()
    log = json.loads((env.volume.committed / "runs" / second / HISTORY_LOG).read_text())
    assert log["reference"]["run_id"] == first  # committed with the look's decision
    assert log["n_draws"] == 3 and log["stages"][0]["draws"] == 2
    assert log["quality"] == "not compared: not scored during the run"
    assert {r["adaptive_stage"] for r in stored(env, second)} <= {0, 1}
    assert len(stored(env, second)) <= len(stored(env, first))
