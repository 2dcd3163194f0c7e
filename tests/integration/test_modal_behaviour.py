"""The unattended nightly against Modal as Modal behaves (tests/modal_behaviour.py):
crash-looping and hung calls are bounded, a call gone on re-attach is run again, two
orchestrators on one Volume lose no index entry, billing read right after a run is
provisional and filled in later, chunk workers run on the mapped GPU in the worker's
region. Each test failed on the code before issue 35 (the closing note quotes how)."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import modal
import pytest

from bench.backends import modal_app, modal_journal, modal_orchestrator
from bench.backends.modal_cells import encode_payload, model_params
from bench.backends.modal_nightly import retain, run_on_volume
from bench.backends.modal_orchestrator import ModalWorkers
from bench.backends.modal_parallel import run_chunk
from bench.report import render_run_report
from bench.run.worker import Worker, plan
from bench.spec.parser import load_spec
from bench.spec.prompts import load_prompts
from bench.spec.sweep import SweepSpec
from bench.store.history import list_runs
from bench.store.packing import unpack_audio
from bench.store.run_store import RunStore
from tests.modal_behaviour import (
    FUNCTION_TIMEOUT_S,
    BehavingModal,
    LaggingBilling,
    SharedVolume,
    SimClock,
)
from tests.modal_standin import FakeModal, FakeVolume, OrchestratorVolume, Preempted
from tests.tiny import TINY_MODEL_TOML

SPEC = """
name = "{name}"
""" + TINY_MODEL_TOML + """[prompts]
set = "builtin"
ids = ["en-002", "en-010"]
long_text = "truncate"
[grid]
gpu = {gpus}
num_steps = [2, 3]
sequence_length = [16]
[measure]
warmup = 0
score = false
"""
# Container starts of one call the orchestrator lets a crash loop make: its bound
# (bench.backends.modal_watch.MAX_CONTAINER_STARTS, 4) plus the one start that may
# happen between two polls.
STARTS_BOUND = 5


def write_spec(tmp_path: Path, name: str = "nightly-tiny", gpus: str = '["L4", "A10G"]'
               ) -> SweepSpec:
    path = tmp_path / f"{name}.toml"
    path.write_text(SPEC.format(name=name, gpus=gpus), encoding="utf-8")
    return load_spec(path)


def stored(root: Path, run_id: str) -> list[dict[str, Any]]:
    lines = (root / run_id / "records.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if x]


def expected_keys(spec: SweepSpec) -> set[str]:
    return {g.key for g in plan(spec.cells, load_prompts(spec.prompts), spec.measure.seeds,
                                spec.measure.repeats)}


def a10_cells(spec: SweepSpec) -> set[str]:
    return {c.id for c in spec.cells if c.gpu == "A10G"}


def workers_of(fake: FakeModal, volume: Any) -> ModalWorkers:
    return ModalWorkers(fake.worker_cls(), volume=volume, function_call=fake.function_call())


# ---- 1. crash loops and hung calls are bounded


@pytest.mark.parametrize("trouble", ["crash_loop", "hang"])
def test_a_crash_looping_or_hung_group_is_stopped_and_the_nightly_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trouble: str) -> None:
    spec = write_spec(tmp_path)
    volume = FakeVolume(tmp_path / "outputs")
    clock = SimClock()
    # The orchestrator's wall clock is the stand-in's simulated one.
    monkeypatch.setattr(modal_orchestrator, "time", SimpleNamespace(time=clock))
    fake = BehavingModal(volume, clock=clock, **{trouble: a10_cells(spec)})
    began = clock()
    run_id, _ = run_on_volume(spec, root=volume.mount / "runs", volume=volume,
                              workers=workers_of(fake, volume))
    fake.drain()
    records = stored(volume.committed / "runs", run_id)
    assert Counter(r["key"] for r in records) == Counter(expected_keys(spec))
    bad = [r for r in records if r["cell_id"] in a10_cells(spec)]
    good = [r for r in records if r["cell_id"] not in a10_cells(spec)]
    assert good and all(r["status"] == "ok" for r in good)  # the nightly went on
    [a10_call] = [s["call_id"] for s in fake.spawned if s["options"]["gpu"] == "A10"]
    if trouble == "crash_loop":
        # Modal would start the crashing container again until the 24 h timeout.
        assert fake.attempts[a10_call] <= STARTS_BOUND
        assert all("crash loop" in str(r["error"]) for r in bad)
    else:
        assert all("deadline" in str(r["error"]) for r in bad)
    assert bad and all(r["status"] == "failed" for r in bad)
    # Stopped long before Modal's 24 h function timeout would have ended it.
    assert clock() - began < FUNCTION_TIMEOUT_S / 4
    assert fake.states[a10_call].cancelled.is_set()  # and no GPU time goes on after
    manifest = json.loads((volume.committed / "runs" / run_id / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    # The report says why the group failed.
    report = render_run_report(volume.mount / "runs" / run_id, fmt="md", audio=False)
    assert ("crash loop" if trouble == "crash_loop" else "deadline") in report.read_text()


# ---- 2. a call gone on re-attach is run again, not recorded failed


@pytest.mark.parametrize("gone", ["cancelled", "expired"])
def test_a_reattach_that_finds_its_call_gone_runs_the_group_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gone: str) -> None:
    spec = write_spec(tmp_path)
    volume = FakeVolume(tmp_path / "outputs")
    root = volume.mount / "runs"
    fake = BehavingModal(volume, paused={"A10"})  # the A10 call waits for capacity
    workers = workers_of(fake, volume)
    # Commits: the run (1), the two calls' ledger entries (2, 3), the first L4 cell
    # stored (4): the orchestrator is stopped there with the A10 call in flight.
    with pytest.raises(Preempted):
        run_on_volume(spec, root=root, volume=OrchestratorVolume(volume, 4), workers=workers)
    volume.preempt()
    [a10_call] = [s["call_id"] for s in fake.spawned if s["options"]["gpu"] == "A10"]
    if gone == "cancelled":
        fake.parent_died()  # Modal cancels the children of the stopped input
    else:
        fake.resume("A10")
        fake.states[a10_call].future.exception()  # type: ignore[union-attr]  # it ran
        fake.expire(a10_call)  # and its output is gone by the time we ask
    run_id, _ = run_on_volume(spec, root=root, volume=OrchestratorVolume(volume, None),
                              workers=workers)
    fake.drain()
    records = stored(volume.committed / "runs", run_id)
    assert Counter(r["key"] for r in records) == Counter(expected_keys(spec))
    assert [r for r in records if r["status"] != "ok"] == []
    # The A10 group ran again, on the same journal: nothing it finished ran twice.
    assert len([s for s in fake.spawned if s["options"]["gpu"] == "A10"]) == 2
    assert set(fake.executed.values()) == {1}


def test_a_group_lost_twice_is_not_done_and_a_resume_runs_it(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    volume = FakeVolume(tmp_path / "outputs")
    root = volume.mount / "runs"
    fake = BehavingModal(volume, expire_on={"A10"})  # A10 outputs are gone, every time
    run_id, _ = run_on_volume(spec, root=root, volume=volume, workers=workers_of(fake, volume))
    with RunStore.open(root / run_id, lock=False) as store:
        lost = [r for r in store.records() if r["status"] == "failed"]
        assert lost and {r["failure_kind"] for r in lost} == {"infrastructure"}
        assert not {r["key"] for r in lost} & store.done_keys()  # not done
    fake.expire_on.clear()
    run_on_volume(spec, root=root, volume=volume, workers=workers_of(fake, volume))
    fake.drain()
    with RunStore.open(root / run_id, lock=False) as store:
        assert {r["status"] for r in store.records()} == {"ok"}  # they ran again
        assert store.done_keys() == expected_keys(spec)


# ---- 3. two orchestrators on one Volume


def test_two_orchestrators_on_one_volume_lose_no_run_from_the_index(tmp_path: Path) -> None:
    shared = SharedVolume(tmp_path / "volume")
    nightly = write_spec(tmp_path, "nightly-tiny", '["L4"]')
    weekly = write_spec(tmp_path, "weekly-tiny", '["L4"]')
    ran: dict[str, str] = {}

    def weekly_runs() -> None:  # Sunday's weekly, still running at Monday's 03:00
        view = shared.view("weekly")
        fake = FakeModal(view)  # type: ignore[arg-type]
        ran["weekly"], _ = run_on_volume(weekly, root=view.mount / "runs", volume=view,
                                         workers=workers_of(fake, view))
        fake.drain()

    class Nightly:
        """The nightly's container: the weekly commits while it runs."""

        def __init__(self) -> None:
            self.view = shared.view("nightly")
            self.commits = 0

        def commit(self) -> None:
            self.commits += 1
            if self.commits == 2:
                weekly_runs()
            self.view.commit()

        def reload(self) -> None:
            self.view.reload()

        def read_file(self, path: str) -> Any:
            return self.view.read_file(path)

        def remove_file(self, path: str, recursive: bool = False) -> None:
            self.view.remove_file(path, recursive)

    orchestrator = Nightly()
    fake = FakeModal(orchestrator.view)  # type: ignore[arg-type]
    ran["nightly"], _ = run_on_volume(nightly, root=orchestrator.view.mount / "runs",
                                      volume=orchestrator, workers=workers_of(fake, orchestrator))
    fake.drain()
    runs = {e["run_id"]: e for e in list_runs(shared.committed / "runs")}
    assert set(runs) == set(ran.values())
    assert {e["status"] for e in runs.values()} == {"complete"}


# ---- 4. billing read when final


def test_billing_right_after_the_run_is_provisional_and_filled_in_once_final(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec_path = tmp_path / "nightly-tiny.toml"
    spec_path.write_text(SPEC.format(name="nightly-tiny", gpus='["L4"]'), encoding="utf-8")
    volume = FakeVolume(tmp_path / "outputs")
    fake = FakeModal(volume)
    monkeypatch.setattr(modal_app, "OUTPUTS_RUNS", str(volume.mount / "runs"))
    monkeypatch.setattr(modal_app, "BenchWorker", fake.worker_cls())
    monkeypatch.setattr(modal_app, "outputs", volume)
    monkeypatch.setattr(modal, "FunctionCall", fake.function_call())
    monkeypatch.setattr(modal_app, "score_and_report", SimpleNamespace(remote=lambda run: None))
    clock = SimClock(time.time())
    billing = LaggingBilling(clock, lag_s=3 * 3600)
    monkeypatch.setattr(modal_app, "billing_report", lambda: billing)
    app_id = str(modal_app.app.app_id)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0).timestamp()
    billing.use(hour, app_id, "0.30")  # the run's hour (it ends inside it)
    billing.use(hour, "ap-other", "5")  # another app: never counted
    run_id = modal_app.nightly.local(str(spec_path))
    fake.drain()
    manifest_path = volume.committed / "runs" / run_id / "manifest.json"
    cost = json.loads(manifest_path.read_text())["cost"]
    # Right after the run, Modal's report lacks the run's (partial, late) hour: the
    # figure, if any, is marked provisional, never stored as the bill.
    assert cost["billed_status"] == "provisional"
    # A day after its last hour ended, that hour is complete and settled: `echo-bench
    # modal billing RUN` (the deployed `billing` function) fills it in.
    clock.advance(26 * 3600)
    later = datetime.fromtimestamp(clock(), UTC)
    modal_app.record_billing(run_id, now=later)
    cost = json.loads(manifest_path.read_text())["cost"]
    assert cost["billed_status"] == "final"
    assert cost["billed_usd"] == 0.30
    assert "rounded down" in cost["billed_basis"] and app_id in cost["billed_basis"]
    assert billing.calls[-1]["end"] > datetime.fromisoformat(
        json.loads(manifest_path.read_text())["finished_at"])


# ---- 5. chunk workers on the worker's GPU and region


def test_chunk_workers_run_on_the_mapped_gpu_in_the_workers_region(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec_path = tmp_path / "chunks.toml"
    spec_path.write_text("""
name = "chunks"
""" + TINY_MODEL_TOML + """[prompts]
set = "builtin"
ids = ["en-002"]
long_text = "chunk"
[grid]
gpu = ["A10G"]
num_steps = [2]
sequence_length = [32]
chunk_workers = [2]
[measure]
warmup = 0
score = false
[modal]
region = "us-east"
""", encoding="utf-8")
    spec = load_spec(spec_path)
    chunk_side = Worker(spec.model, long_text="chunk")  # what a chunk container loads
    options: list[dict[str, Any]] = []

    class ChunkCall:
        def __init__(self, request: str) -> None:
            self.request = request

        def get(self) -> dict[str, Any]:
            return run_chunk(chunk_side, self.request, tmp_path)

    class ChunkWorkerCls:  # the app's ChunkWorker (a modal.Cls), recording its options
        @staticmethod
        def with_options(**given: Any) -> Any:
            options.append(given)
            handle = SimpleNamespace(run_chunk=SimpleNamespace(spawn=ChunkCall))
            return lambda *, params: handle

    volume = FakeVolume(tmp_path / "outputs")
    monkeypatch.setattr(modal_app, "outputs", volume)
    monkeypatch.setattr(modal_app, "OUTPUTS_DIR", str(volume.mount))
    monkeypatch.setattr(modal_app, "ChunkWorker", ChunkWorkerCls)
    monkeypatch.setenv("MODAL_TASK_ID", "ta-test")  # in a container: chunks fan out
    payload = encode_payload(spec, load_prompts(spec.prompts))
    worker = cast(Any, modal_app.BenchWorker)(params=model_params(spec.model, "chunk"))
    records = worker.run_cells.local(payload, [spec.cells[0].id], [], time.time(), 0, "c-1")
    assert [r["status"] for r in records] == ["ok"], records[0].get("error")
    assert records[0]["chunk_parallel_mode"] == "containers"
    assert len(options) == len(records[0]["chunk_seconds"]) >= 1  # one spawn per chunk
    # Modal's name for the card (A10G is Modal's A10), in the region the spec pins.
    assert options == [{"gpu": "A10", "region": "us-east"}] * len(options)


# ---- 7. the outputs Volume stays bounded


def _files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("every", [1, modal_journal.COMMIT_EVERY])
def test_volume_commits_are_batched_and_old_runs_packed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        every: int) -> None:
    # A constructed nightly: 2 GPU types x 2 cells x 3 prompts, every WAV kept.
    path = tmp_path / "nightly-tiny.toml"
    path.write_text(SPEC.format(name="nightly-tiny", gpus='["L4", "A10G"]').replace(
        'ids = ["en-002", "en-010"]', 'ids = ["en-002", "en-010", "en-027"]')
        + "[modal]\naudio_sample = 1.0\n", encoding="utf-8")
    spec = load_spec(path)
    monkeypatch.setattr(modal_journal, "COMMIT_EVERY", every)
    volume = FakeVolume(tmp_path / "outputs")
    fake = FakeModal(volume)
    orchestrator = OrchestratorVolume(volume, None)
    root = volume.mount / "runs"
    run_id, _ = run_on_volume(spec, root=root, volume=orchestrator, workers=workers_of(fake, volume))
    fake.drain()
    records = stored(volume.committed / "runs", run_id)
    worker_commits = volume.commits - 1 - orchestrator.commits  # less the stand-in's own first
    files_before = _files(volume.committed)
    kept = retain(root, volume.mount, orchestrator, datetime.now(UTC) + timedelta(days=15))
    files_after = _files(volume.committed)
    print(f"journal commit every {every}: {len(records)} generations, {worker_commits} worker "
          f"commits, {orchestrator.commits} orchestrator commits; files on the Volume "
          f"{files_before} -> {files_after} after packing ({kept.files_packed} WAVs)")
    calls = len(fake.spawned)
    per_call = len(records) // calls
    # Per call: its start, a commit per full batch of generations, one at the end.
    assert worker_commits == calls * (2 + per_call // every)
    assert kept.runs_packed == 1 and kept.files_packed == len(records)
    assert files_after == files_before - len(records) + 1
    run_dir = volume.committed / "runs" / run_id
    assert not (run_dir / "audio").exists() and (run_dir / "audio.zip").is_file()
    # `echo-bench pull` unpacks it: the run is whole again locally.
    local = tmp_path / "local"
    shutil.copytree(run_dir, local / run_id)
    assert unpack_audio(local / run_id) == len(records)
    for record in records:
        assert (local / run_id / record["audio_path"]).is_file()
