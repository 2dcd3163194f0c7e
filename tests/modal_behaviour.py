"""Modal as it behaves around the calls echo-bench makes, beside tests/modal_standin.py
(whose stand-ins this module extends): the failure modes an audit of the backend
against Modal's guides and the locked client (modal 1.6.4) found unmodelled.

* ``BehavingModal``: GPU containers per GPU type (each type its own pool, as
  ``max_containers=1`` per ``with_options`` variant gives), and calls that

  - crash-loop: a container of the call crashes in its first generation (a segfault
    in a kernel, host memory); a deployed app retries container crashes without end,
    with crash-loop backoff (``retries`` covers exceptions only), until the function's
    24 h timeout, then ``FunctionTimeoutError``;
  - hang: the call never finishes (a wedged kernel) until the 24 h timeout;
  - can be cancelled (``FunctionCall.cancel``): a running container is stopped at its
    next Volume commit, losing what it had not committed, and ``get`` raises;
  - expire: ``get`` raises ``OutputExpiredError`` (the result is gone), and
    ``FunctionCall.from_id`` of an unknown id raises ``NotFoundError``;
  - stay queued: a paused GPU pool starts nothing until resumed (a call waiting for
    capacity), so the tests fix which calls are in flight when something happens.

  Time is simulated: ``get(timeout=T)`` on a call that is not done advances
  ``clock`` by T and raises modal's ``TimeoutError``, as the real ``get`` does after
  waiting T seconds; a crash-looping call makes one more container start per wait
  (the backoff), so a test counts starts, never sleeps. ``get()`` with no timeout
  waits out the whole 24 h.
* ``parent_died``: the orchestrating input was stopped with calls in flight. Modal
  does not document whether child calls are cancelled then; this stand-in cancels
  every call not finished, the case that breaks a resume.
* ``SharedVolume`` / ``ContainerView``: one Volume mounted in several containers. Each
  container sees the state of its last reload; ``commit`` writes back the files it
  changed, whole, over what is there (last write wins: an append made on a stale copy
  of a file erases what another container committed to it meanwhile).
* ``LaggingBilling``: ``Workspace.billing.report`` that rounds ``start`` down to its
  hour, excludes a partial final hour, and has an hour's figures only ``lag`` seconds
  after it ended.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from modal.exception import (
    FunctionTimeoutError,
    NotFoundError,
    OutputExpiredError,
    RemoteError,
)
from modal.exception import TimeoutError as ModalTimeoutError

from bench.backends.modal_cells import run_cells_local
from tests.modal_standin import FakeModal, Preempted, restore_committed

#: Modal's longest function timeout: where an endless crash loop or a hang ends.
FUNCTION_TIMEOUT_S = 24 * 60 * 60
#: Simulated seconds between two starts of a crash-looping container (Modal's backoff
#: grows to minutes; its exact curve does not matter to the code under test).
CRASH_BACKOFF_S = 60.0


class SimClock:
    """Wall-clock seconds (epoch) that move only when a test or a wait moves them."""

    def __init__(self, start: float = 1.8e9) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class ContainerStopped(BaseException):
    """A GPU container stopped mid-call (crash, cancellation): not the code's error."""


@dataclass
class CallState:
    call_id: str
    gpu: str
    crash_loop: bool = False
    hang: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)
    expired: bool = False
    # One permit per container start a crash-looping call may make after its first;
    # ``free_run`` lets it run to the 24 h limit (a get() with no timeout).
    starts: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    free_run: bool = False
    started: int = 0
    crashed: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)
    future: Future[list[dict[str, Any]]] | None = None


class BehavingModal(FakeModal):
    """The stand-in of tests/modal_standin.py with the behaviours of the module
    docstring; ``crash_loop`` / ``hang`` name cells whose call misbehaves, ``paused``
    GPU types (Modal names, e.g. "A10") whose pool starts nothing until resumed."""

    def __init__(self, volume: Any, *, clock: SimClock | None = None,
                 crash_loop: set[str] | None = None, hang: set[str] | None = None,
                 paused: set[str] | None = None, crash_limit: int = 40,
                 expire_on: set[str] | None = None) -> None:
        super().__init__(volume)
        self.clock = clock or SimClock()
        self.crash_loop = crash_loop or set()
        self.hang = hang or set()
        self.pools: dict[str, ThreadPoolExecutor] = {}
        self.resumed: dict[str, threading.Event] = {}
        for gpu in paused or set():
            self.resumed[gpu] = threading.Event()
        self.states: dict[str, CallState] = {}
        # Starts of a crash loop left before the 24 h timeout ends it (a stand-in count).
        self.crash_limit = crash_limit
        # GPU types whose calls' outputs are gone by the time anyone asks for them.
        self.expire_on = expire_on if expire_on is not None else set()

    # ---- spawning and executing

    def spawn(self, options: dict[str, Any], params: str, args: tuple[Any, ...]) -> Any:
        call_id = f"fc-{next(self._ids):04d}"
        gpu = str(options.get("gpu"))
        cells = set(args[1])
        state = CallState(call_id, gpu, crash_loop=bool(cells & self.crash_loop),
                          hang=bool(cells & self.hang))
        self.states[call_id] = state
        self.spawned.append({"call_id": call_id, "options": options, "params": params,
                             "cell_ids": args[1], "group_index": args[4], "call_key": args[5]})
        pool = self.pools.setdefault(gpu, ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"fake-gpu-{gpu}"))
        state.future = pool.submit(self._run_call, state, *args)
        self.calls[call_id] = state.future
        return BehavingCall(self, state)

    def _run_call(self, state: CallState, spec_json: str, cell_ids: list[str],
                  done_keys: list[str], spawned_at: float, group_index: int,
                  call_key: str) -> list[dict[str, Any]]:
        gate = self.resumed.get(state.gpu)
        if gate is not None:
            gate.wait()
        if state.cancelled.is_set():
            raise RemoteError("Function call was cancelled (terminated)")
        while True:
            self._started(state)
            if state.hang:  # wedged until cancelled (or the 24 h timeout, which cancels)
                state.cancelled.wait()
                raise RemoteError("Function call was cancelled (terminated)")
            commit = self._commit_for(state, call_key)
            journal = self.volume.mount / "journals" / call_key / "records.jsonl"
            earlier = set(_keys(journal))
            with self.volume.lock:
                try:
                    records = run_cells_local(spec_json, cell_ids, done_keys, spawned_at, commit,
                                              group_index=group_index, call_key=call_key,
                                              volume_root=self.volume.mount)
                except (ContainerStopped, Preempted):
                    self.volume.preempt(under="journals")
                    # The next start is a cold container; the tiny model is kept loaded
                    # (in-process runners) only to keep the test quick: its load is not
                    # what is tested.
                    if state.cancelled.is_set():
                        raise RemoteError("Function call was cancelled (terminated)") from None
                else:
                    # Executed by this attempt: what the journal did not hold already.
                    self.executed.update(r["key"] for r in records if r["key"] not in earlier)
                    return records
            # A crash: Modal starts the input again after its backoff, without end.
            with state.changed:
                state.crashed += 1
                state.changed.notify_all()
            if state.started >= self.crash_limit:
                raise FunctionTimeoutError("crash-looping input reached the 24 h timeout")
            while not (state.free_run or state.cancelled.is_set()):
                if state.starts.acquire(timeout=0.05):
                    break
            if state.cancelled.is_set():
                raise RemoteError("Function call was cancelled (terminated)")

    def _started(self, state: CallState) -> None:
        with state.changed:
            state.started += 1
            self.attempts[state.call_id] += 1
            state.changed.notify_all()

    def _commit_for(self, state: CallState, call_key: str) -> Callable[[], None]:
        """The Volume's commit as one container of the call sees it: a cancelled call's
        container is stopped there; a crash-looping one dies in its first generation,
        i.e. on the first commit that would store a journaled record."""
        records = Path("journals") / call_key / "records.jsonl"

        def commit() -> None:
            if state.cancelled.is_set():
                raise ContainerStopped("cancelled")
            if state.crash_loop and _differs(self.volume.mount / records,
                                             self.volume.committed / records):
                raise ContainerStopped("segfault in a kernel")
            self.volume.commit()

        return commit

    # ---- what happens to calls

    def resume(self, gpu: str) -> None:
        self.resumed.setdefault(gpu, threading.Event()).set()

    def parent_died(self) -> None:
        """The orchestrator's input stopped: its unfinished calls are cancelled."""
        for state in self.states.values():
            if state.future is not None and not state.future.done():
                state.cancelled.set()
        for gate in self.resumed.values():
            gate.set()

    def expire(self, call_id: str) -> None:
        state = self.states[call_id]
        if state.future is not None:
            with contextlib.suppress(BaseException):  # whatever it was, the output is gone
                state.future.result()
        state.expired = True

    def function_call(self) -> Any:
        modal = self

        class _FromId:
            @staticmethod
            def from_id(call_id: str) -> BehavingCall:
                state = modal.states.get(call_id)
                if state is None:
                    raise NotFoundError(f"function call {call_id} not found")
                return BehavingCall(modal, state)

        return _FromId

    def drain(self) -> None:
        for gate in self.resumed.values():
            gate.set()
        for state in self.states.values():
            state.free_run = True
        for pool in self.pools.values():
            pool.shutdown(wait=True)
        super().drain()


class BehavingCall:
    """A ``modal.FunctionCall`` of :class:`BehavingModal` (``get``, ``cancel``, id)."""

    def __init__(self, modal: BehavingModal, state: CallState) -> None:
        self.modal = modal
        self.state = state
        self.object_id = state.call_id

    def get(self, timeout: float | None = None) -> list[dict[str, Any]]:
        state = self.state
        assert state.future is not None
        if state.gpu in self.modal.expire_on:
            self.modal.expire(state.call_id)
        if state.expired:
            raise OutputExpiredError()
        if timeout is None:
            if state.hang:  # nothing ends it before Modal's timeout
                self.modal.clock.advance(FUNCTION_TIMEOUT_S)
                state.cancelled.set()
                with contextlib.suppress(BaseException):
                    state.future.result()
                raise FunctionTimeoutError("function timed out after 24 h")
            if state.crash_loop:
                state.free_run = True
                self.modal.clock.advance(FUNCTION_TIMEOUT_S)
            return state.future.result()
        if state.crash_loop and not state.future.done():
            # While the caller waits, the container crashes and Modal starts it again:
            # one more start per wait.
            with state.changed:
                state.changed.wait_for(lambda: 1 <= state.started <= state.crashed
                                       or state.future.done(), timeout=60)
                target = state.started + 1
                state.starts.release()
                # Returns once that start has logged itself and crashed again.
                state.changed.wait_for(lambda: state.crashed >= target or state.future.done()
                                       or state.cancelled.is_set(), timeout=60)
            self.modal.clock.advance(CRASH_BACKOFF_S)
        elif self._queued():  # waits for capacity, really, as a caller would
            self.modal.resumed[state.gpu].wait(timeout)
        elif state.hang:
            self.modal.clock.advance(timeout)
        else:
            try:
                return state.future.result(timeout=timeout)
            except TimeoutError:
                self.modal.clock.advance(timeout)
        if state.future.done():
            return state.future.result()
        raise ModalTimeoutError()

    def _queued(self) -> bool:
        gate = self.modal.resumed.get(self.state.gpu)
        return gate is not None and not gate.is_set()

    def cancel(self, terminate_containers: bool = False) -> None:
        self.state.cancelled.set()
        with self.state.changed:
            self.state.changed.notify_all()


def _keys(journal: Path) -> list[str]:
    if not journal.is_file():
        return []
    return [json.loads(line)["key"] for line in journal.read_text().splitlines() if line]


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _differs(a: Path, b: Path) -> bool:
    return _read(a) != _read(b)


# --------------------------------------------------------------------------- Volume


class SharedVolume:
    """The committed state of one Volume (``committed``) and the containers' views."""

    def __init__(self, root: Path) -> None:
        self.committed = root / "committed"
        self.committed.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.lock = threading.RLock()

    def view(self, name: str) -> ContainerView:
        return ContainerView(self, name)


class ContainerView:
    """One container's mount of a :class:`SharedVolume` (see the module docstring);
    also the Volume API a FakeModal and the orchestrator use (read/remove by path)."""

    def __init__(self, shared: SharedVolume, name: str) -> None:
        self.shared = shared
        self.mount = shared.root / f"view-{name}"
        self.committed = shared.committed
        self.lock = shared.lock
        self.base: dict[str, str] = {}
        self.commits = 0
        self.on_commit: Callable[[int], None] | None = None
        self.reload()

    def _snapshot(self) -> dict[str, str]:
        return {str(p.relative_to(self.mount)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in self.mount.rglob("*") if p.is_file()}

    def reload(self) -> None:
        with self.lock:
            shutil.rmtree(self.mount, ignore_errors=True)
            shutil.copytree(self.committed, self.mount)
            self.base = self._snapshot()

    def commit(self) -> None:
        """Write back every file this view changed since its last sync, whole (last
        write wins), and remove those it removed; others' files are left as they are."""
        self.commits += 1
        if self.on_commit is not None:
            self.on_commit(self.commits)
        with self.lock:
            now = self._snapshot()
            for rel, digest in now.items():
                if self.base.get(rel) != digest:
                    target = self.committed / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(self.mount / rel, target)
            for rel in set(self.base) - set(now):
                (self.committed / rel).unlink(missing_ok=True)
            self.base = now

    def preempt(self, under: str | None = None) -> None:
        with self.lock:
            restore_committed(self.mount, self.committed, under)

    def read_file(self, path: str) -> Iterator[bytes]:
        yield (self.committed / path).read_bytes()

    def remove_file(self, path: str, recursive: bool = False) -> None:
        with self.lock:
            target = self.committed / path
            if target.is_dir() and recursive:
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            else:
                raise FileNotFoundError(path)


# --------------------------------------------------------------------------- billing


class LaggingBilling:
    """``Workspace.billing.report`` over a usage log of (UTC hour start, app id, USD):
    start rounded down to its hour, a partial last hour excluded, and an hour visible
    only ``lag_s`` after it ended (on ``clock``)."""

    def __init__(self, clock: SimClock, lag_s: float = 3 * 3600) -> None:
        self.clock = clock
        self.lag_s = lag_s
        self.usage: list[tuple[datetime, str, Decimal]] = []
        self.calls: list[dict[str, Any]] = []

    def use(self, at: float, app_id: str, usd: str) -> None:
        hour = datetime.fromtimestamp(at, UTC).replace(minute=0, second=0, microsecond=0)
        self.usage.append((hour, app_id, Decimal(usd)))

    def __call__(self, *, start: datetime, end: datetime | None = None, resolution: str = "d",
                 tag_names: list[str] | None = None) -> list[Any]:
        assert resolution == "h"
        self.calls.append({"start": start, "end": end, "tag_names": tag_names})
        now = datetime.fromtimestamp(self.clock(), UTC)
        first = start.replace(minute=0, second=0, microsecond=0)
        last = end or now
        rows: dict[tuple[datetime, str], Decimal] = {}
        for hour, app_id, usd in self.usage:
            over = hour + timedelta(hours=1)
            if hour < first or over > last or over + timedelta(seconds=self.lag_s) > now:
                continue
            rows[hour, app_id] = rows.get((hour, app_id), Decimal(0)) + usd
        return [SimpleNamespace(object_id=app_id, interval_start=hour, cost=usd,
                                cost_by_resource={"GPU": usd}, tags={})
                for (hour, app_id), usd in sorted(rows.items())]
