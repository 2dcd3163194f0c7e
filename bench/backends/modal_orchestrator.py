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
from bench.backends.modal_estimate import (
    COLD_START_SECONDS,
    CostEstimate,
    estimate_cost,
    generation_seconds,
)
from bench.backends.modal_journal import attempts_path, count_lines, journal_path
from bench.backends.modal_watch import (
    MAX_CONTAINER_STARTS,
    POLL_SECONDS,
    CallGone,
    Watch,
    group_budget,
    translate,
    wait_for,
)
from bench.core.errors import UserError
from bench.run.runner import CellHook, RecordSink
from bench.run.schedule import Group, order_seed, schedule
from bench.run.worker import Generation, Worker, plan
from bench.spec.gpus import DEFAULT_GPU, modal_gpu, validate_gpu
from bench.spec.prompts import Prompt
from bench.spec.sweep import Cell, ModelSpec, SweepSpec
from bench.store.layout import INFRASTRUCTURE_FAILURE

# ---- the remote-call layer


class RemoteCall(Protocol):
    """A spawned call: ``call_id`` (Modal's FunctionCall id, to re-attach after a
    restart); ``get`` waits up to ``timeout`` seconds for its records and raises
    :class:`~bench.backends.modal_watch.CallPending` when none came, ``CallGone`` when
    none ever will, or the remote error."""

    call_id: str

    def get(self, timeout: float | None = None) -> list[dict[str, Any]]: ...

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

    def container_starts(self, call_key: str) -> int: ...

    def read_audio(self, path: str) -> bytes: ...

    def discard(self, path: str) -> None: ...


class _FunctionCall:
    """A ``modal.FunctionCall`` behind the :class:`RemoteCall` protocol."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self.call_id: str = call.object_id

    def get(self, timeout: float | None = None) -> list[dict[str, Any]]:
        try:
            result: list[dict[str, Any]] = self._call.get(timeout=timeout)
        except BaseException as err:  # InputCancellation is a BaseException
            ours = translate(err)
            if ours is err:
                raise
            raise ours from err
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

    def container_starts(self, call_key: str) -> int:
        """Starts logged in the call's journal on the Volume (0 when unreadable: the
        deadline still bounds the call)."""
        if self.volume is None:
            return 0
        try:
            return count_lines(b"".join(self.volume.read_file(attempts_path(call_key))))
        except Exception:  # not there yet (modal's NotFoundError), or no read
            return 0

    def attach(self, call_id: str) -> RemoteCall:
        function_call = self.function_call
        if function_call is None:
            import modal

            function_call = modal.FunctionCall
        try:
            return _FunctionCall(function_call.from_id(call_id))
        except Exception as err:
            ours = translate(err)
            if ours is err:
                raise
            raise ours from err


class CallLedger(Protocol):
    """Where a run keeps the FunctionCall id of each cell's call in flight, so a
    restarted orchestrator re-attaches instead of paying for the call twice. ``put``
    records one call for all the cells of its group at once."""

    def get(self, cell_id: str) -> dict[str, Any] | None: ...

    def put(self, cell_ids: list[str], entry: dict[str, Any]) -> None: ...


# ---- the backend


Ask = Callable[[str], str]


@dataclass
class Launch:
    """One group's call: what it was spawned with (to spawn it again on the same
    journal when it is gone), the call and what bounds it."""

    group: Group
    gpu: str
    done: list[str]
    call: RemoteCall
    watch: Watch
    respawned: bool = False


class ModalBackend:
    """Runs cells on Modal GPU types in parallel (see the module docstring).

    ``clock`` (epoch seconds) and ``poll_seconds`` bound each call: see
    :mod:`bench.backends.modal_watch`."""

    name = "modal"

    def __init__(self, *, workers: Workers, confirm: bool = True,
                 default_gpu: str = DEFAULT_GPU, prices: Prices | None = None,
                 ask: Ask | None = None, interactive: Callable[[], bool] | None = None,
                 max_waiting_threads: int = 64, ledger: CallLedger | None = None,
                 audio_dir: str | None = None, clock: Callable[[], float] | None = None,
                 poll_seconds: float = POLL_SECONDS,
                 max_container_starts: int = MAX_CONTAINER_STARTS,
                 orchestrated_in_modal: bool = False) -> None:
        self.confirm = confirm
        self.workers = workers
        self.default_gpu = validate_gpu(default_gpu)
        self.prices = prices
        self.ask: Ask = ask if ask is not None else input
        self.interactive = interactive if interactive is not None else _stdin_is_tty
        self.max_waiting_threads = max_waiting_threads
        self.ledger = ledger
        self.audio_dir = audio_dir
        self.clock = clock if clock is not None else time.time
        self.poll_seconds = poll_seconds
        self.max_container_starts = max_container_starts
        # The nightly: the orchestrator is itself a (non-preemptible) Modal container.
        self.orchestrated_in_modal = orchestrated_in_modal
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
                                      self.default_gpu, spec.prompts.long_text,
                                      region=spec.modal.region,
                                      orchestrator=self.orchestrated_in_modal)
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
            launches: list[Launch] = []
            queued: dict[str, float] = {}  # GPU type -> budget of its groups spawned so far
            try:
                for group in groups:
                    gpu = gpus[group.cells[0]]
                    done = [k for c in group.cells for k in _done_keys(c, pending[c], prompts, spec)]
                    # One container per GPU type: a group waits for those before it.
                    queued[gpu] = queued.get(gpu, 0.0) + self._budget(group, pending, gpu, spec)
                    launches.append(self._call_for(group, gpu, params, payload, done,
                                                   self.clock() + queued[gpu]))
                self._collect(launches, pending, failure_worker, sink, on_cell_done,
                              lambda launch: self._respawn(launch, params, payload, spec, pending))
            except BaseException:
                # A restart of the nightly (preemption) must not cancel the calls it will
                # re-attach to; an interactive sweep cancels what it started.
                if self.ledger is None:
                    for launch in launches:
                        with contextlib.suppress(Exception):
                            launch.call.cancel()
                raise

    def _budget(self, group: Group, pending: dict[Cell, list[Generation]], gpu: str,
                spec: SweepSpec) -> float:
        """Seconds the group may take once its container is free (modal_watch)."""
        seconds = sum(generation_seconds(s.gen.cell, s.gen.prompt, gpu, spec.prompts.long_text)
                      for s in group.steps)
        seconds += spec.measure.warmup * sum(
            generation_seconds(c, pending[c][0].prompt, gpu, spec.prompts.long_text)
            for c in group.cells)
        return group_budget(seconds, COLD_START_SECONDS)

    def _call_for(self, group: Group, gpu: str, params: str, payload: str, done: list[str],
                  deadline: float) -> Launch:
        """Re-attach to this group's call in flight (ledger) or spawn a new one.

        An earlier call of the same run that was given all of the group's cells may be
        re-attached: records only accumulate (failed ones count as done too), so what is
        pending now is a subset of what that call was asked for; the extra records it
        returns are ignored. The deadline of a re-attached call is the one it was
        spawned with (kept in the ledger), so restarts do not extend it.
        """
        call_key = ""
        if self.ledger is not None:
            entries = [self.ledger.get(c.id) for c in group.cells]
            ids = {str(e["call_id"]) for e in entries if e is not None}
            if len(ids) == 1 and all(e is not None for e in entries):
                entry = entries[0] or {}
                call_key = str(entry.get("call_key") or "")
                try:
                    call = self.workers.attach(str(entry["call_id"]))
                except Exception as err:  # expired or unknown: spawn on the same journal
                    print(f"modal: cannot re-attach to {entry['call_id']} ({err}); "
                          "spawning again", file=sys.stderr)
                else:
                    print(f"modal: re-attached {len(group.cells)} cell(s) "
                          f"({', '.join(c.id for c in group.cells)}) to call {call.call_id}",
                          file=sys.stderr)
                    watch = Watch(call_key, float(entry.get("deadline") or deadline),
                                  int(entry.get("starts_before") or 0))
                    return Launch(group, gpu, done, call, watch)
        return self._spawn(group, gpu, params, payload, done, deadline, call_key)

    def _spawn(self, group: Group, gpu: str, params: str, payload: str, done: list[str],
               deadline: float, call_key: str = "") -> Launch:
        """A new call for the group; given a ``call_key``, on that journal (it continues
        what an earlier call of the group finished)."""
        spawned_at = self.clock()
        call_key = call_key or uuid.uuid4().hex
        starts_before = self.workers.container_starts(call_key)
        call = self.workers.spawn(gpu, params, payload, [c.id for c in group.cells], done,
                                  spawned_at, group.index, call_key)
        if self.ledger is not None:
            self.ledger.put([c.id for c in group.cells],
                            {"call_id": call.call_id, "gpu": gpu, "spawned_at": spawned_at,
                             "call_key": call_key, "group": group.index, "deadline": deadline,
                             "starts_before": starts_before})
        return Launch(group, gpu, done, call, Watch(call_key, deadline, starts_before))

    def _respawn(self, launch: Launch, params: str, payload: str, spec: SweepSpec,
                 pending: dict[Cell, list[Generation]]) -> Launch:
        """The group's call is gone: the same group again, on its journal."""
        deadline = self.clock() + self._budget(launch.group, pending, launch.gpu, spec)
        again = self._spawn(launch.group, launch.gpu, params, payload, launch.done, deadline,
                            launch.watch.call_key)
        again.respawned = True
        return again

    def _wait(self, launch: Launch) -> list[dict[str, Any]]:
        return wait_for(launch.call, launch.watch, self.workers.container_starts, self.clock,
                        self.poll_seconds, self.max_container_starts)

    def _collect(self, launches: list[Launch], pending: dict[Cell, list[Generation]],
                 failure_worker: Worker, sink: RecordSink, on_cell_done: CellHook,
                 respawn: Callable[[Launch], Launch]) -> None:
        """Hand each call's records to the sink as the call finishes (in this thread).

        A call that is gone (cancelled, expired) is spawned again once, on the same
        journal, for the group's pending generations: they were never attempted to an
        end, so they are not recorded failed. A call we stopped (crash loop, deadline)
        or that failed records each pending generation failed, with the reason."""
        pool = cf.ThreadPoolExecutor(max_workers=max(1, min(len(launches),
                                                            self.max_waiting_threads)),
                                     thread_name_prefix="modal-get")
        try:
            waiting = {pool.submit(self._wait, launch): launch for launch in launches}
            while waiting:
                finished, _ = cf.wait(waiting, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    launch = waiting.pop(future)
                    group = launch.group
                    generations = [g for c in group.cells for g in pending[c]]
                    try:
                        records = future.result()
                    except CallGone as err:
                        if not launch.respawned:
                            print(f"modal: call {launch.call.call_id} is gone ({err}); running "
                                  f"group {group.index} again on its journal", file=sys.stderr)
                            again = respawn(launch)
                            waiting[pool.submit(self._wait, again)] = again
                            continue
                        self._fail_all(generations, err, failure_worker, launch.gpu, sink)
                    except Exception as err:  # stopped or failed: every pending generation fails
                        self._fail_all(generations, err, failure_worker, launch.gpu, sink)
                    else:
                        self._emit_all(records, generations, failure_worker, launch.gpu, sink)
                    for cell in group.cells:
                        on_cell_done(cell)
                    self._discard(launch.watch.call_key)
        finally:
            # Do not wait for calls still running (interrupted): they were cancelled.
            pool.shutdown(wait=False, cancel_futures=True)

    def _fail_all(self, generations: list[Generation], err: BaseException,
                  failure_worker: Worker, gpu: str, sink: RecordSink) -> None:
        for gen in generations:
            self._emit(_failed(failure_worker, gen, err, gpu), sink)

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
    if isinstance(err, CallGone):  # the call was lost twice: not done, a resume runs it
        record["failure_kind"] = INFRASTRUCTURE_FAILURE
    return record

