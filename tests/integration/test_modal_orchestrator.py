"""ModalBackend against an in-process stand-in for Modal: dispatch per GPU type, records
streamed into the run store, failures per cell, resume after an interruption, the cost
estimate and its confirmation, and ``echo-bench pull`` from a stand-in volume.

The stand-in keeps Modal's call semantics: ``spawn()`` returns at once with a handle
whose ``get()`` returns the records or re-raises the remote exception; the work itself is
``run_cells_local``, the function the real worker class wraps.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench.analysis.prices import Prices, load_prices
from bench.backends.modal_cells import decode_payload, local_volume, run_cells_local
from bench.backends.modal_estimate import (
    COLD_START_SECONDS,
    EFFECTIVE_FLOPS,
    FLOP_PER_LATENT_ROW,
    ORCHESTRATOR_CORES,
    ORCHESTRATOR_MEMORY_GIB,
    estimate_cost,
)
from bench.backends.modal_journal import attempts_path
from bench.backends.modal_orchestrator import ModalBackend
from bench.commands.pull import pull_runs
from bench.core.errors import UserError
from bench.report import render_run_report
from bench.run.runner import pending_work, run_sweep
from bench.scoring.run_scoring import score_run
from bench.spec.gpus import GpuError
from bench.spec.parser import parse_spec
from bench.spec.prompts import load_prompts
from bench.spec.sweep import Cell, SweepSpec
from bench.store.history import HistoryIndex
from bench.store.layout import StoreError
from bench.store.run_store import RunStore
from echo_tts.text import chunk_bytes_for, split_text
from tests.tiny import TINY_MODEL_TOML

SPEC = """
name = "modal-orch"
""" + TINY_MODEL_TOML + """[prompts]
set = "builtin"
ids = ["en-002", "en-010"]
long_text = "truncate"  # one sampler call per prompt at 16 latents, to stay quick
[grid]
gpu = ["L4", "A10G"]
num_steps = [2]
sequence_length = [16]
[measure]
warmup = 0
score = false
"""

GetHook = Callable[["Spawned"], None]


@dataclass
class Spawned:
    gpu: str
    params: str
    spec_json: str
    cell_ids: list[str]
    done_keys: list[str]
    group_index: int
    call_key: str


@dataclass
class FakeCall:
    spawned: Spawned
    call_id: str
    before: GetHook | None = None
    fail: BaseException | None = None
    drop_last: bool = False
    cancelled: bool = False

    def get(self, timeout: float | None = None) -> list[dict[str, Any]]:
        if self.before is not None:
            self.before(self.spawned)
        records = run_cells_local(self.spawned.spec_json, self.spawned.cell_ids,
                                  self.spawned.done_keys, group_index=self.spawned.group_index,
                                  call_key=self.spawned.call_key)
        if self.fail is not None:  # the container died after doing part of the work
            raise self.fail
        return records[:-1] if self.drop_last else records

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeWorkers:
    """Stand-in for ModalWorkers; failures and hooks chosen per GPU type."""

    fail: dict[str, BaseException] = field(default_factory=dict)
    before: dict[str, GetHook] = field(default_factory=dict)
    drop_last: set[str] = field(default_factory=set)
    spawned: list[Spawned] = field(default_factory=list)
    calls: list[FakeCall] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)
    sessions: int = 0

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        self.sessions += 1
        yield

    def session(self) -> contextlib.AbstractContextManager[object]:
        return self._session()

    def spawn(self, gpu: str, params: str, spec_json: str, cell_ids: list[str],
              done_keys: list[str], spawned_at: float, group_index: int,
              call_key: str) -> FakeCall:
        spawned = Spawned(gpu, params, spec_json, cell_ids, done_keys, group_index, call_key)
        self.spawned.append(spawned)
        call = FakeCall(spawned, f"fc-{len(self.calls)}", self.before.get(gpu),
                        self.fail.get(gpu), gpu in self.drop_last)
        self.calls.append(call)
        return call

    def attach(self, call_id: str) -> FakeCall:
        # Only a backend with a call ledger (the nightly) re-attaches; see
        # tests/integration/test_modal_nightly.py for that, on the Modal stand-in.
        raise AssertionError("these sweeps keep no ledger")

    def container_starts(self, call_key: str) -> int:
        # The in-process calls' start log (what the orchestrator counts for crash loops).
        path = local_volume() / attempts_path(call_key)
        return len(path.read_text().splitlines()) if path.is_file() else 0

    def read_audio(self, path: str) -> bytes:
        return (local_volume() / path).read_bytes()  # the in-process calls' "Volume"

    def discard(self, path: str) -> None:
        self.discarded.append(path)
        shutil.rmtree(local_volume() / path, ignore_errors=True)


def spec_of(tmp_path: Path, text: str = SPEC) -> SweepSpec:
    return parse_spec(text, base_dir=tmp_path, name="modal-orch")


def backend(workers: FakeWorkers, **kwargs: Any) -> ModalBackend:
    return ModalBackend(confirm=False, workers=workers, **kwargs)


def cell_on(spec: SweepSpec, gpu: str) -> Cell:
    return next(c for c in spec.cells if c.gpu == gpu)


def test_cells_are_dispatched_per_gpu_and_records_stored(tmp_path: Path) -> None:
    spec = spec_of(tmp_path)
    workers = FakeWorkers()
    outcome = run_sweep(spec, backend(workers), root=tmp_path / "runs", progress=False)
    assert (outcome.ok, outcome.failed, outcome.total) == (4, 0, 4)
    assert workers.sessions == 1
    assert sorted(s.gpu for s in workers.spawned) == ["A10G", "L4"]
    assert all(len(s.cell_ids) == 1 and s.done_keys == [] for s in workers.spawned)
    with RunStore.open(outcome.run_dir) as store:
        records = store.records()
        manifest = store.manifest
    assert manifest["status"] == "complete" and manifest["backend"] == "modal"
    assert {r["gpu"] for r in records} == {"L4", "A10G"}
    for record in records:
        assert "audio_wav_b64" not in record
        assert (outcome.run_dir / record["audio_path"]).is_file()
        assert record["container_id"] == "local"
        # Only the call that found the in-process "container" cold paid its start.
        assert (record["cold_start_seconds"] > 0) == (record["container_call"] == 0)


def test_cells_without_a_gpu_go_to_the_default_gpu(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, SPEC.replace('gpu = ["L4", "A10G"]\n', ""))
    workers = FakeWorkers()
    run_sweep(spec, backend(workers, default_gpu="t4"), root=tmp_path / "runs", progress=False)
    assert [s.gpu for s in workers.spawned] == ["T4"]


def test_a_worker_failing_mid_cell_fails_that_cell_only(tmp_path: Path) -> None:
    spec = spec_of(tmp_path)
    workers = FakeWorkers(fail={"A10G": RuntimeError("container died\ntraceback...")})
    done_cells: list[str] = []
    outcome = run_sweep(spec, backend(workers), root=tmp_path / "runs", progress=False,
                        after_cell=lambda store, cell, keys: done_cells.append(cell.id))
    assert (outcome.ok, outcome.failed, outcome.exit_code) == (2, 2, 1)
    assert sorted(done_cells) == sorted(c.id for c in spec.cells)
    with RunStore.open(outcome.run_dir) as store:
        failed = [r for r in store.records() if r["status"] == "failed"]
    assert {r["cell_id"] for r in failed} == {cell_on(spec, "A10G").id}
    for record in failed:
        assert record["error"] == "RuntimeError: container died"
        assert record["error_phase"] == "modal call"
        assert record["device"] == "modal:A10G"
    assert list(outcome.failures.values()) == ["RuntimeError: container died"]


def test_missing_records_become_failures(tmp_path: Path) -> None:
    spec = spec_of(tmp_path)
    outcome = run_sweep(spec, backend(FakeWorkers(drop_last={"L4"})), root=tmp_path / "runs",
                        progress=False)
    assert (outcome.ok, outcome.failed) == (3, 1)
    assert "returned no record" in next(iter(outcome.failures.values()))


def test_an_interrupted_sweep_resumes_with_only_the_missing_cell(tmp_path: Path) -> None:
    spec = spec_of(tmp_path)
    root = tmp_path / "runs"
    l4_stored = threading.Event()

    def interrupt(spawned: Spawned) -> None:
        # The A10G call "ends" (Ctrl-C) only after the L4 cell's records are stored.
        assert l4_stored.wait(timeout=60)
        raise KeyboardInterrupt

    first = FakeWorkers(before={"A10G": interrupt})
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, backend(first), root=root, progress=False,
                  after_cell=lambda store, cell, keys: l4_stored.set())
    assert all(call.cancelled for call in first.calls)
    [entry] = HistoryIndex(root).runs()
    assert entry["status"] == "interrupted"

    second = FakeWorkers()
    outcome = run_sweep(spec, backend(second), root=root, progress=False)
    assert outcome.resumed and (outcome.skipped, outcome.ok) == (2, 2)
    assert [s.cell_ids for s in second.spawned] == [[cell_on(spec, "A10G").id]]
    with RunStore.open(outcome.run_dir) as store:
        assert store.manifest["status"] == "complete"
        assert len(store.records()) == 4


def test_a_half_done_cell_is_sent_with_its_done_keys(tmp_path: Path) -> None:
    text = SPEC.replace('ids = ["en-002", "en-010"]', 'ids = ["en-002", "en-010"]\nlimit = 1')
    spec = spec_of(tmp_path, text.replace("warmup = 0", "warmup = 0\nseeds = [0, 1]"))
    work, _ = pending_work(spec, load_prompts(spec.prompts), set())
    cell = cell_on(spec, "L4")
    done, pending = work[cell]  # one prompt, seeds 0 and 1: seed 0 is "done"
    workers = FakeWorkers()
    seen: list[str] = []
    backend(workers).execute(spec, {cell: [pending]}, lambda r, a: seen.append(r["key"]),
                             lambda c: None)
    [spawned] = workers.spawned
    assert spawned.done_keys == [done.key]
    assert seen == [pending.key]


def test_the_payload_carries_only_the_prompts_still_needed(tmp_path: Path) -> None:
    spec = spec_of(tmp_path)
    work, _ = pending_work(spec, load_prompts(spec.prompts), set())
    cell = cell_on(spec, "L4")
    workers = FakeWorkers()
    backend(workers).execute(spec, {cell: work[cell][1:]}, lambda r, a: None, lambda c: None)
    [spawned] = workers.spawned
    payload = decode_payload(spawned.spec_json, tmp_path / "remote")
    assert [p.id for p in payload.prompts] == ["en-010"] and spawned.done_keys == []


def test_bad_gpu_or_local_weights_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    spec = spec_of(tmp_path)
    work, _ = pending_work(spec, load_prompts(spec.prompts), set())
    cell = cell_on(spec, "L4")
    workers = FakeWorkers()
    bad = {replace(cell, gpu="Z100"): work[cell]}
    with pytest.raises(GpuError, match="unknown Modal GPU type 'Z100'"):
        backend(workers).execute(spec, bad, lambda r, a: None, lambda c: None)
    weights = tmp_path / "weights"
    weights.mkdir()
    local = replace(spec, model=replace(spec.model, model=str(weights)))
    with pytest.raises(UserError, match="local path"):
        backend(workers).execute(local, work, lambda r, a: None, lambda c: None)
    assert workers.spawned == [] and workers.sessions == 0


def test_cost_estimate_arithmetic(tmp_path: Path) -> None:
    spec = spec_of(tmp_path)
    work, _ = pending_work(spec, load_prompts(spec.prompts), set())
    prices = Prices(gpu={"L4": 0.0002, "A10": 0.0003}, aliases={"A10G": "A10"}, source="test")
    estimate = estimate_cost(work, warmup=1, prices=prices, long_text="truncate")
    by_gpu = {line.gpu: line for line in estimate.lines}
    assert list(by_gpu) == ["A10G", "L4"]
    for gpu, price in (("L4", 0.0002), ("A10G", 0.0003)):
        cell = cell_on(spec, gpu)
        # Two one-chunk prompts plus one warm-up generation, and one cold start.
        per_gen = cell.sampler.nfe() * 16 * FLOP_PER_LATENT_ROW / EFFECTIVE_FLOPS[gpu]
        expected = COLD_START_SECONDS + 3 * per_gen
        line = by_gpu[gpu]
        assert (line.cells, line.generations) == (1, 2)
        assert line.seconds == pytest.approx(expected)
        assert line.usd == pytest.approx(expected * price)
    assert estimate.usd == pytest.approx(sum(line.usd for line in estimate.lines))
    assert "rough estimate" in estimate.render() and "prices: test" in estimate.render()
    assert prices.price("L4:2") == pytest.approx(0.0004)
    # Chunked long text costs one sampler run per chunk.
    chunked = estimate_cost(work, warmup=0, prices=prices, long_text="chunk")
    cell = cell_on(spec, "L4")
    chunks = sum(len(split_text(g.prompt.text, chunk_bytes_for(16))) for g in work[cell])
    per_chunk = cell.sampler.nfe() * 16 * FLOP_PER_LATENT_ROW / EFFECTIVE_FLOPS["L4"]
    [l4] = [line for line in chunked.lines if line.gpu == "L4"]
    assert chunks > 2 and l4.seconds == pytest.approx(COLD_START_SECONDS + chunks * per_chunk)


def test_cost_estimate_adds_the_region_and_non_preemptible_surcharges(tmp_path: Path) -> None:
    spec = spec_of(tmp_path)
    work, _ = pending_work(spec, load_prompts(spec.prompts), set())
    prices = Prices(gpu={"L4": 0.0002, "A10": 0.0003}, aliases={"A10G": "A10"}, source="test",
                    cpu_per_core_second=0.00001, memory_per_gib_second=0.000002,
                    region_multipliers={"broad": 1.5, "narrow": 1.75},
                    nonpreemptible_multiplier=3.0)
    plain = estimate_cost(work, warmup=1, prices=prices, long_text="truncate")
    gpu_usd = sum(line.usd for line in plain.lines)
    for region, multiplier in (("us", 1.5), ("us-west", 1.75), ("us-east-1", 1.75)):
        pinned = estimate_cost(work, warmup=1, prices=prices, long_text="truncate", region=region)
        assert pinned.usd == pytest.approx(gpu_usd * multiplier)
        assert f"region {region} ({multiplier:g}x workers)" in pinned.render()
    nightly = estimate_cost(work, warmup=1, prices=prices, long_text="truncate",
                            orchestrator=True)
    # The orchestrator runs while the slowest GPU type does, at 3x CPU and memory.
    wall = max(line.seconds for line in plain.lines)
    per_second = ORCHESTRATOR_CORES * 0.00001 + ORCHESTRATOR_MEMORY_GIB * 0.000002
    assert nightly.usd - gpu_usd == pytest.approx(wall * per_second * 3.0)
    assert "non-preemptible (3x CPU+mem)" in nightly.render()
    shipped = load_prices()
    assert (shipped.region_multiplier(None), shipped.region_multiplier("eu"),
            shipped.region_multiplier("us-west")) == (1.0, 1.5, 1.75)
    assert shipped.nonpreemptible_multiplier == 3.0 and shipped.memory_per_gib_second > 0


def test_prices_come_from_the_shipped_price_file() -> None:
    prices = load_prices()
    assert prices.origin.endswith("gpu_prices.toml")
    assert prices.price("A10G") == prices.price("A10") > 0


def test_without_a_terminal_or_yes_the_backend_refuses(tmp_path: Path) -> None:
    spec = spec_of(tmp_path)
    work, _ = pending_work(spec, load_prompts(spec.prompts), set())
    workers = FakeWorkers()
    refusing = ModalBackend(confirm=True, workers=workers, interactive=lambda: False)
    with pytest.raises(UserError, match="pass --yes"):
        refusing.execute(spec, work, lambda r, a: None, lambda c: None)
    declined = ModalBackend(confirm=True, workers=workers, interactive=lambda: True,
                            ask=lambda prompt: "n")
    with pytest.raises(UserError, match="not confirmed"):
        declined.execute(spec, work, lambda r, a: None, lambda c: None)
    assert workers.spawned == []
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return "y"

    accepted = ModalBackend(confirm=True, workers=workers, interactive=lambda: True, ask=ask)
    accepted.execute(spec, work, lambda r, a: None, lambda c: None)
    assert prompts == ["proceed? [y/N] "] and len(workers.spawned) == 2


# ---- echo-bench pull


class FolderVolume:
    """A stand-in for modal.Volume over a local folder (FileEntry-like entries)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.reads: list[str] = []

    def listdir(self, path: str, *, recursive: bool = False) -> list[Any]:
        base = self.root / path
        found = base.rglob("*") if recursive else base.iterdir()
        return [SimpleNamespace(path=p.relative_to(self.root).as_posix(),
                                type=1 if p.is_file() else 2,
                                size=p.stat().st_size if p.is_file() else 0)
                for p in sorted(found)]

    def read_file(self, path: str) -> Iterator[bytes]:
        self.reads.append(path)
        data = (self.root / path).read_bytes()
        yield data[: len(data) // 2]
        yield data[len(data) // 2:]


def test_pull_fetches_runs_indexes_them_and_skips_or_resumes(tmp_path: Path) -> None:
    volume_root = tmp_path / "volume"
    outcome = run_sweep(spec_of(tmp_path), backend(FakeWorkers()), root=volume_root / "runs",
                        progress=False)
    run_id = outcome.run_dir.name
    volume = FolderVolume(volume_root)
    local = tmp_path / "local"

    # An earlier pull was interrupted after fetching the manifest: it is not fetched again.
    partial = local / f".pull-{run_id}"
    partial.mkdir(parents=True)
    (partial / "manifest.json").write_bytes((outcome.run_dir / "manifest.json").read_bytes())
    assert pull_runs(volume, local) == [run_id]
    assert f"runs/{run_id}/manifest.json" not in volume.reads
    assert not partial.exists()
    with RunStore.open(local / run_id) as store:
        records = store.records()
    assert len(records) == 4
    assert all((local / run_id / r["audio_path"]).is_file() for r in records)
    assert [e["run_id"] for e in HistoryIndex(local).runs()] == [run_id]

    assert pull_runs(volume, local) == []  # present and complete: skipped
    assert pull_runs(volume, local, [run_id], force=True) == [run_id]
    with pytest.raises(UserError, match="no run nope"):
        pull_runs(volume, local, ["nope"])
    # A damaged local manifest is named in one line, not a JSON traceback.
    (local / run_id / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"manifest\.json"):
        pull_runs(volume, local)


@pytest.mark.slow  # random Whisper + the HTML report with plots: ~40 s on 2 cores
def test_nightly_post_processing_scores_and_reports_a_run(tmp_path: Path) -> None:
    text = SPEC.replace("score = false", 'asr = "random:tiny"\nasr_device = "cpu"')
    outcome = run_sweep(spec_of(tmp_path, text), backend(FakeWorkers()), root=tmp_path / "runs",
                        progress=False)
    score_run(outcome.run_dir, download_root=str(tmp_path / "whisper"))
    render_run_report(outcome.run_dir)
    with RunStore.open(outcome.run_dir) as store:
        assert all("asr_model" in r for r in store.records())
    assert (outcome.run_dir / "report.html").is_file()
