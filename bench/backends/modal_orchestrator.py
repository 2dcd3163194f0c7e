"""The Modal backend: runs a sweep's cells on Modal GPUs, one remote call per group of
cells that share a loaded pipeline, in interleaved rounds as a local run does.

How a sweep runs:

1. Every pending cell's GPU string is checked (cells without one run on
   :data:`~bench.spec.gpus.DEFAULT_GPU`, L4), against the one GPU table
   (:mod:`bench.spec.gpus`), and weight sources that only exist on this
   machine are refused, all before anything is sent.
2. A cost estimate is printed and, unless ``confirm=False`` (``--yes``), confirmed.
3. The pending work is cut into groups exactly as the local backend cuts it
   (:func:`bench.run.schedule.schedule`, seeded by the spec's hash): cells on one GPU type
   that share a loaded pipeline form a group. One ``run_cells`` call per group is
   spawned on ``BenchWorker.with_options(gpu=...)`` (plus ``region=`` when the spec pins
   one); the container runs the group through ``Worker.run_group`` in interleaved
   rounds, so its records carry the same order fields as a local run's (the runner
   adds ``order_seq`` as they arrive). With a call ledger (the nightly), each call's
   FunctionCall id is recorded for all its cells before anything waits on it, and a
   restarted orchestrator re-attaches to the calls in flight instead of spawning them
   again. Each GPU type is its own container pool (``max_containers=1``), so a GPU type
   loads the model once and works through its groups in order while other GPU types
   run in parallel.
4. Calls are collected as they finish (one waiting thread per call; the sink is only
   ever called from this thread): each record goes to the runner's sink with its WAV
   bytes (read from the call's journal on the outputs Volume) or with its
   ``audio_path`` (the worker copied the WAV straight into the run folder on the
   Volume), then ``on_cell_done`` for each cell of the group, then the call's journal is
   removed. A call that raises (container crash after its retry, timeout) becomes one
   failed record per pending generation of its group, with the error text, and the
   sweep goes on.

Exactly once: a preempted GPU container is started again by Modal on the same input;
the worker journals every finished generation on the Volume, so the restart runs only
what is missing in the same rounds and the call returns each generation once. Records
are appended by the runner as each call completes, so an interrupted sweep resumes like
a local one: done keys are skipped, and a group half done is sent with its done keys
so the worker schedules only what is missing.

The remote-call layer is injected (``workers``): :class:`ModalWorkers` on the app's
worker class, given by whoever owns the app (the CLI, or the nightly function inside
the app); this module never imports the app (no import circle), and tests hand
:class:`ModalWorkers` a local stand-in for Modal's classes.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from bench.analysis.prices import Prices, load_prices
from bench.backends.modal_cells import VOLUME_AUDIO_FIELD, encode_payload, model_params
from bench.backends.modal_journal import journal_path
from bench.core.errors import UserError
from bench.run.runner import CellHook, RecordSink
from bench.run.schedule import Group, order_seed, schedule
from bench.run.worker import Generation, Worker, plan
from bench.spec.gpus import DEFAULT_GPU, modal_gpu, validate_gpu
from bench.spec.prompts import Prompt
from bench.spec.sweep import Cell, ModelSpec, SweepSpec
from bench.spec.workload_axes import latent_rows_per_chunk
from echo_tts.text import chunk_bytes_for, split_text

# ---- cost model (rough guesses, stated as such in every estimate)

#: Floor of one forward row at the official size, per latent (design map: 1.52B matmul
#: parameters on the per-token path plus attention), in FLOP.
FLOP_PER_LATENT_ROW = 3.2e9
#: Achieved bf16 throughput per GPU, FLOP/s. A rough guess: calibrated on the one
#: production figure we have (A10G, 40 steps, independent CFG, 640 latents: about 6 s a
#: chunk, i.e. ~27 TFLOP/s, ~22% of its bf16 peak) and scaled to the other cards by
#: their dense bf16 tensor peaks at the same 22%.
EFFECTIVE_FLOPS: dict[str, float] = {
    "T4": 14e12, "L4": 27e12, "A10": 27e12, "A10G": 27e12, "L40S": 80e12,
    "A100": 69e12, "A100-40GB": 69e12, "A100-80GB": 69e12, "H100": 218e12,
    "H100!": 218e12, "H200": 218e12, "B200": 495e12, "RTX-PRO-6000": 110e12,
}
#: Seconds a GPU type's container spends starting and loading the model (a guess).
COLD_START_SECONDS = 120.0
@dataclass(frozen=True)
class CostLine:
    """The estimate for one GPU type."""

    gpu: str
    cells: int
    generations: int
    seconds: float
    usd: float


@dataclass(frozen=True)
class CostEstimate:
    lines: tuple[CostLine, ...]
    prices_source: str

    @property
    def seconds(self) -> float:
        return sum(line.seconds for line in self.lines)

    @property
    def usd(self) -> float:
        return sum(line.usd for line in self.lines)

    def render(self) -> str:
        rows = [f"{'gpu':<12} {'cells':>5} {'gens':>6} {'GPU hours':>9} {'USD':>9}"]
        rows += [f"{ln.gpu:<12} {ln.cells:>5} {ln.generations:>6} {ln.seconds / 3600:>9.2f} "
                 f"{ln.usd:>9.2f}" for ln in self.lines]
        rows.append(f"{'total':<12} {sum(ln.cells for ln in self.lines):>5} "
                    f"{sum(ln.generations for ln in self.lines):>6} {self.seconds / 3600:>9.2f} "
                    f"{self.usd:>9.2f}")
        rows.append(f"rough estimate: NFE x latents x {FLOP_PER_LATENT_ROW:.1e} FLOP at a guessed "
                    f"per-GPU throughput, +{COLD_START_SECONDS:.0f} s cold start per GPU type, "
                    f"+warm-up; prices: {self.prices_source}")
        return "\n".join(rows)


def generation_seconds(cell: Cell, prompt: Prompt, gpu: str, long_text: str = "chunk") -> float:
    """Guessed GPU seconds of one generation: chunks x NFE x latents x FLOP / throughput
    (one chunk unless ``long_text`` is "chunk", the mode that splits long text)."""
    sampler = cell.sampler
    chunks = 1
    if long_text == "chunk":
        chunks = max(1, len(split_text(prompt.text, chunk_bytes_for(sampler.sequence_length))))
    name = gpu.partition(":")[0]
    return chunks * latent_rows_per_chunk(cell) * FLOP_PER_LATENT_ROW / EFFECTIVE_FLOPS[name]


def estimate_cost(work: dict[Cell, list[Generation]], warmup: int, prices: Prices,
                  default_gpu: str = DEFAULT_GPU, long_text: str = "chunk") -> CostEstimate:
    """Expected GPU time and price of ``work``, per GPU type (sorted by name)."""
    per_gpu: dict[str, list[float]] = {}  # gpu -> [cells, generations, seconds]
    for cell, generations in work.items():
        if not generations:
            continue
        gpu = validate_gpu(cell.gpu or default_gpu)
        totals = per_gpu.setdefault(gpu, [0.0, 0.0, COLD_START_SECONDS])
        totals[0] += 1
        totals[1] += len(generations)
        totals[2] += sum(generation_seconds(cell, g.prompt, gpu, long_text) for g in generations)
        totals[2] += warmup * generation_seconds(cell, generations[0].prompt, gpu, long_text)
    lines = tuple(CostLine(gpu, int(c), int(n), s, s * prices.price(gpu))
                  for gpu, (c, n, s) in sorted(per_gpu.items()))
    return CostEstimate(lines, prices.source)


# ---- the remote-call layer


class RemoteCall(Protocol):
    """A spawned call: ``call_id`` (Modal's FunctionCall id, to re-attach after a
    restart), ``get`` blocks for its records or re-raises the remote error."""

    call_id: str

    def get(self) -> list[dict[str, Any]]: ...

    def cancel(self) -> None: ...


class Workers(Protocol):
    """Spawns ``BenchWorker.run_cells`` calls and re-attaches to spawned ones;
    ``session`` wraps a whole sweep. ``read_audio`` and ``discard`` reach the outputs
    Volume (paths relative to its root): a WAV a call left there, a call's journal."""

    def session(self) -> AbstractContextManager[object]: ...

    def spawn(self, gpu: str, params: str, spec_json: str, cell_ids: list[str],
              done_keys: list[str], spawned_at: float, group_index: int,
              call_key: str) -> RemoteCall: ...

    def attach(self, call_id: str) -> RemoteCall: ...

    def read_audio(self, path: str) -> bytes: ...

    def discard(self, path: str) -> None: ...


class _FunctionCall:
    """A ``modal.FunctionCall`` behind the :class:`RemoteCall` protocol."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self.call_id: str = call.object_id

    def get(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call.get()
        return result

    def cancel(self) -> None:
        self._call.cancel()


class ModalWorkers:
    """Real Modal calls on ``worker_cls`` (the app's ``BenchWorker``, a ``modal.Cls``).

    ``app`` given: an ephemeral run of that app for the sweep's length (``app.run()``,
    with Modal's progress output), so no deploy is needed and the containers run this
    checkout's code. ``app`` None: we are inside a function of the running app (the
    nightly), whose classes are already live. ``function_call`` is the class whose
    ``from_id`` re-attaches to a spawned call (``modal.FunctionCall``; a stand-in in
    tests). ``volume`` is the outputs ``modal.Volume`` the workers mount (WAVs and
    journals are read and removed through its API). The CLI and the app pass these in,
    so this module never imports the app.
    """

    def __init__(self, worker_cls: Any, *, app: Any = None, region: str | None = None,
                 function_call: Any = None, volume: Any = None,
                 keep_open: contextlib.ExitStack | None = None) -> None:
        self.worker_cls = worker_cls
        self.app = app
        self.region = region
        self.function_call = function_call
        self.volume = volume
        # Given: the app, once started, stays up on this stack (the caller's whole
        # command), so scoring after the sweep can still call the app's Transcriber.
        self.keep_open = keep_open
        self._running = False

    def session(self) -> AbstractContextManager[object]:
        if self.app is None:
            return contextlib.nullcontext()
        if self.keep_open is not None:
            self.ensure_running()
            return contextlib.nullcontext()
        return self._start(contextlib.ExitStack())

    def ensure_running(self) -> None:
        """Start the ephemeral app on ``keep_open`` unless it runs already."""
        if self.app is not None and self.keep_open is not None and not self._running:
            self._start(self.keep_open)
            self._running = True

    def _start(self, stack: contextlib.ExitStack) -> contextlib.ExitStack:
        import modal

        stack.enter_context(modal.enable_output())
        stack.enter_context(self.app.run())
        return stack

    def spawn(self, gpu: str, params: str, spec_json: str, cell_ids: list[str],
              done_keys: list[str], spawned_at: float, group_index: int,
              call_key: str) -> RemoteCall:
        # with_options() gives a per-GPU (and per-region) variant of the class; its
        # constructor takes the modal.parameter() fields as keywords.
        options: dict[str, Any] = {"gpu": modal_gpu(gpu)}
        if self.region is not None:
            options["region"] = self.region
        worker = self.worker_cls.with_options(**options)(params=params)
        return _FunctionCall(worker.run_cells.spawn(spec_json, cell_ids, done_keys, spawned_at,
                                                    group_index, call_key))

    def read_audio(self, path: str) -> bytes:
        if self.volume is None:
            raise RuntimeError("no outputs volume given to read the WAV from")
        return b"".join(self.volume.read_file(path))

    def discard(self, path: str) -> None:
        if self.volume is not None:
            self.volume.remove_file(path, recursive=True)

    def attach(self, call_id: str) -> RemoteCall:
        function_call = self.function_call
        if function_call is None:
            import modal

            function_call = modal.FunctionCall
        return _FunctionCall(function_call.from_id(call_id))


class CallLedger(Protocol):
    """Where a run keeps the FunctionCall id of each cell's call in flight, so a
    restarted orchestrator re-attaches instead of paying for the call twice. ``put``
    records one call for all the cells of its group at once."""

    def get(self, cell_id: str) -> dict[str, Any] | None: ...

    def put(self, cell_ids: list[str], entry: dict[str, Any]) -> None: ...


# ---- the backend


Ask = Callable[[str], str]


class ModalBackend:
    """Runs cells on Modal GPU types in parallel (see the module docstring)."""

    name = "modal"

    def __init__(self, *, workers: Workers, confirm: bool = True,
                 default_gpu: str = DEFAULT_GPU, prices: Prices | None = None,
                 ask: Ask | None = None, interactive: Callable[[], bool] | None = None,
                 max_waiting_threads: int = 64, ledger: CallLedger | None = None,
                 audio_dir: str | None = None) -> None:
        self.confirm = confirm
        self.workers = workers
        self.default_gpu = validate_gpu(default_gpu)
        self.prices = prices
        self.ask: Ask = ask if ask is not None else input
        self.interactive = interactive if interactive is not None else _stdin_is_tty
        self.max_waiting_threads = max_waiting_threads
        self.ledger = ledger
        self.audio_dir = audio_dir
        #: The last estimate made (the nightly stores it beside the billed cost).
        self.estimate: CostEstimate | None = None

    def execute(self, spec: SweepSpec, work: dict[Cell, list[Generation]], sink: RecordSink,
                on_cell_done: CellHook) -> None:
        pending = {cell: gens for cell, gens in work.items() if gens}
        if not pending:
            return
        gpus = {cell: validate_gpu(cell.gpu or self.default_gpu) for cell in pending}
        check_remote_sources(spec.model)
        self.estimate = estimate_cost(pending, spec.measure.warmup, self.prices or load_prices(),
                                      self.default_gpu, spec.prompts.long_text)
        print(self.estimate.render())
        self._confirm()

        prompts = _prompts_of(pending)
        params = model_params(spec.model, spec.prompts.long_text)
        failure_worker = Worker(replace(spec.model, device="cpu"), long_text=spec.prompts.long_text)
        # The local backend's groups and rounds (same seed); a GPU's groups go to its
        # queue in order, GPU types in turn.
        groups = sorted(schedule(pending, seed=order_seed(spec.hash)),
                        key=lambda g: (gpus[g.cells[0]], g.index))
        # One payload for every call (each call names its cells): speaker clips are read,
        # hashed and encoded once, not once per call.
        payload = encode_payload(spec, prompts, [c for g in groups for c in g.cells],
                                 audio_dir=self.audio_dir)
        with self.workers.session():
            self._discard_earlier(spec.cells, pending)
            calls: list[tuple[Group, RemoteCall, str]] = []
            try:
                for group in groups:
                    done = [k for c in group.cells for k in _done_keys(c, pending[c], prompts, spec)]
                    calls.append(self._call_for(group, gpus[group.cells[0]], params, payload, done))
                self._collect(calls, pending, gpus, failure_worker, sink, on_cell_done)
            except BaseException:
                # A restart of the nightly (preemption) must not cancel the calls it will
                # re-attach to; an interactive sweep cancels what it started.
                if self.ledger is None:
                    for _, call, _ in calls:
                        with contextlib.suppress(Exception):
                            call.cancel()
                raise

    def _call_for(self, group: Group, gpu: str, params: str, payload: str, done: list[str]
                  ) -> tuple[Group, RemoteCall, str]:
        """Re-attach to this group's call in flight (ledger) or spawn a new one; returns
        the group, the call and its journal key.

        An earlier call of the same run that was given all of the group's cells may be
        re-attached: records only accumulate (failed ones count as done too), so what is
        pending now is a subset of what that call was asked for; the extra records it
        returns are ignored.
        """
        if self.ledger is not None:
            entries = [self.ledger.get(c.id) for c in group.cells]
            ids = {str(e["call_id"]) for e in entries if e is not None}
            if len(ids) == 1 and all(e is not None for e in entries):
                entry = entries[0] or {}
                try:
                    call = self.workers.attach(str(entry["call_id"]))
                except Exception as err:  # expired or unknown: pay for a new call
                    print(f"modal: cannot re-attach to {entry['call_id']} ({err}); "
                          "spawning again", file=sys.stderr)
                else:
                    print(f"modal: re-attached {len(group.cells)} cell(s) "
                          f"({', '.join(c.id for c in group.cells)}) to call {call.call_id}",
                          file=sys.stderr)
                    return group, call, str(entry.get("call_key") or "")
        spawned_at = time.time()
        call_key = uuid.uuid4().hex
        call = self.workers.spawn(gpu, params, payload, [c.id for c in group.cells], done,
                                  spawned_at, group.index, call_key)
        if self.ledger is not None:
            self.ledger.put([c.id for c in group.cells],
                            {"call_id": call.call_id, "gpu": gpu, "spawned_at": spawned_at,
                             "call_key": call_key, "group": group.index})
        return group, call, call_key

    def _collect(self, calls: list[tuple[Group, RemoteCall, str]],
                 pending: dict[Cell, list[Generation]], gpus: dict[Cell, str],
                 failure_worker: Worker, sink: RecordSink, on_cell_done: CellHook) -> None:
        """Hand each call's records to the sink as the call finishes (in this thread)."""
        pool = cf.ThreadPoolExecutor(max_workers=max(1, min(len(calls), self.max_waiting_threads)),
                                     thread_name_prefix="modal-get")
        try:
            futures = {pool.submit(call.get): (group, key) for group, call, key in calls}
            for future in cf.as_completed(futures):
                group, call_key = futures[future]
                gpu = gpus[group.cells[0]]
                generations = [g for c in group.cells for g in pending[c]]
                try:
                    records = future.result()
                except Exception as err:  # the remote call failed: every generation fails
                    for gen in generations:
                        self._emit(_failed(failure_worker, gen, err, gpu), sink)
                else:
                    self._emit_all(records, generations, failure_worker, gpu, sink)
                for cell in group.cells:
                    on_cell_done(cell)
                self._discard(call_key)
        finally:
            # Do not wait for calls still running (interrupted): they were cancelled.
            pool.shutdown(wait=False, cancel_futures=True)

    def _discard(self, call_key: str, *, quiet: bool = False) -> None:
        """Remove a finished call's journal (its records are stored): best effort, a
        leftover journal costs Volume space, not correctness."""
        if not call_key:
            return
        try:
            self.workers.discard(journal_path(call_key))
        except Exception as err:
            if not quiet:
                print(f"modal: could not remove the journal of a finished call ({err})",
                      file=sys.stderr)

    def _discard_earlier(self, cells: tuple[Cell, ...] | list[Cell],
                         pending: dict[Cell, list[Generation]]) -> None:
        """Journals of an earlier attempt's calls whose records are all stored: that
        attempt was stopped between storing them and removing the journal. Quiet, since
        most were removed already (their removal fails as not found)."""
        if self.ledger is None:
            return
        keys = {c: str((self.ledger.get(c.id) or {}).get("call_key") or "") for c in cells}
        keep = {keys[c] for c in pending if c in keys}
        finished = {key for c, key in keys.items() if c not in pending} - keep - {""}
        for call_key in sorted(finished):
            self._discard(call_key, quiet=True)

    def _emit_all(self, records: list[dict[str, Any]], generations: list[Generation],
                  failure_worker: Worker, gpu: str, sink: RecordSink) -> None:
        expected = {g.key: g for g in generations}
        for record in records:
            if record.get("key") not in expected:
                print(f"modal: ignoring a record for unexpected key {record.get('key')!r}",
                      file=sys.stderr)
                continue
            del expected[record["key"]]
            self._emit(record, sink)
        for gen in expected.values():  # a worker that returned too few records
            missing = RuntimeError("the Modal worker returned no record for this generation")
            self._emit(_failed(failure_worker, gen, missing, gpu), sink)

    def _emit(self, record: dict[str, Any], sink: RecordSink) -> None:
        path = record.pop(VOLUME_AUDIO_FIELD, None)
        audio: bytes | None = None
        if path:
            try:
                audio = self.workers.read_audio(str(path))
            except Exception as err:  # the record stays; only its WAV is lost
                print(f"modal: could not read {path} from the outputs volume ({err}); "
                      f"{record.get('key')} is stored without audio", file=sys.stderr)
                record["audio_kept"] = None
        sink(record, audio)

    def _confirm(self) -> None:
        if not self.confirm:
            return
        if not self.interactive():
            raise UserError("the modal backend asks before spending money, and stdin is not a "
                            "terminal; pass --yes to accept the estimate above")
        answer = self.ask("proceed? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            raise UserError("not confirmed; nothing was sent to Modal (the empty run stays "
                            "unfinished and the next sweep of this spec resumes it)")


def check_remote_sources(model: ModelSpec) -> None:
    """Refuse weight sources that exist only on this machine: a container cannot see them.
    Paths under /cache (the cache volumes) are fine."""
    for name in ("model", "codec", "pca"):
        source = getattr(model, name)
        if source.startswith("random:") or source.startswith("/cache/"):
            continue
        if Path(source).expanduser().exists():
            raise UserError(f"[model].{name} = {source!r} is a local path, which Modal workers "
                            "cannot read; use a Hugging Face repo id (cached on the volume by "
                            "`echo-bench modal prefetch`) or a path under /cache/")


def _stdin_is_tty() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _prompts_of(work: dict[Cell, list[Generation]]) -> list[Prompt]:
    """The prompts the pending generations use, in first-use order."""
    seen: dict[str, Prompt] = {}
    for generations in work.values():
        for gen in generations:
            seen.setdefault(gen.prompt.id, gen.prompt)
    return list(seen.values())


def _done_keys(cell: Cell, generations: list[Generation], prompts: list[Prompt],
               spec: SweepSpec) -> list[str]:
    """Keys the worker would plan for ``cell`` over ``prompts`` that are not pending."""
    wanted = {g.key for g in generations}
    return [g.key for g in plan([cell], prompts, spec.measure.seeds, spec.measure.repeats)
            if g.key not in wanted]


def _failed(worker: Worker, gen: Generation, err: BaseException, gpu: str) -> dict[str, Any]:
    record = worker.failed_record(gen, err, phase="modal call")
    # The record was built here, not on the GPU: say where it was meant to run.
    record.update(device=f"modal:{gpu}", device_name=gpu)
    return record

