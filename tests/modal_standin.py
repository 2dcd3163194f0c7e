"""A local stand-in for Modal with its semantics where they matter to echo-bench.

* ``FakeWorkerCls`` replaces ``BenchWorker`` (a ``modal.Cls``): ``with_options(gpu=...)
  (params=...)`` gives a handle whose ``run_cells.spawn(...)`` returns at once with a
  FunctionCall-like object that has an ``object_id``; the call executes for real
  (``run_cells_local`` on the tiny model, the Volume's folder as its mount) on a
  background "container" thread, in spawn order, and its result (or exception) is kept,
  so ``get`` returns it whenever asked.
* A GPU container can be preempted mid-call (``preempt_worker``: on its N-th Volume
  commit of a call's first attempt, before committing): what it wrote since its last
  commit is lost, the container starts cold, and the same input runs again, as Modal
  restarts a preempted input.
* ``FakeFunctionCall.from_id`` re-attaches to a call by id, as ``modal.FunctionCall``
  does: the call is not executed again.
* ``FakeVolume``: a mounted folder plus its committed state. ``commit`` snapshots the
  folder; ``preempt`` throws away what was not committed (a container stopped and
  started again sees only committed files). Workers commit after writing their WAVs.
* ``Preempted`` is raised inside the orchestrator to stop it the way Modal does: the
  same input is then started again by the test.
"""

from __future__ import annotations

import itertools
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from modal.exception import TimeoutError as ModalTimeoutError

from bench.backends.modal_cells import forget_local_runners, run_cells_local


class Preempted(BaseException):
    """The orchestrating container was stopped (not an error of the code under test)."""


def restore_committed(mount: Path, committed: Path, under: str | None = None) -> None:
    """A preempted container's mount: every write since the last commit lost (only those
    ``under`` that folder when given), the committed copy in its place."""
    if under:
        mount, committed = mount / under, committed / under
    shutil.rmtree(mount, ignore_errors=True)
    if committed.exists():
        shutil.copytree(committed, mount)


class FakeVolume:
    def __init__(self, mount: Path) -> None:
        self.mount = mount
        self.committed = mount.parent / (mount.name + ".committed")
        mount.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.commits = 0
        self.reloads = 0
        self.commit()

    def commit(self) -> None:
        with self.lock:
            shutil.rmtree(self.committed, ignore_errors=True)
            shutil.copytree(self.mount, self.committed)
            self.commits += 1

    def reload(self) -> None:
        self.reloads += 1  # one mount shared by all "containers": nothing to fetch

    def preempt(self, under: str | None = None) -> None:
        """Lose every write since the last commit (only those ``under`` that folder: a
        GPU container's own files, where the orchestrator's are not its to lose)."""
        with self.lock:
            restore_committed(self.mount, self.committed, under)

    # modal.Volume's client API, as the orchestrator uses it (paths from the root).

    def read_file(self, path: str) -> Iterator[bytes]:
        with self.lock:  # a commit replaces the committed copy: never read it half-made
            data = (self.committed / path).read_bytes()
        yield data

    def remove_file(self, path: str, recursive: bool = False) -> None:
        with self.lock:
            for root in (self.mount, self.committed):
                target = root / path
                if target.is_dir() and recursive:
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()


class OrchestratorVolume:
    """The orchestrator's view of the volume: stopped on its ``stop_at``-th commit,
    before that commit happens (the writes since the previous one are lost)."""

    def __init__(self, volume: FakeVolume, stop_at: int | None) -> None:
        self.volume = volume
        self.stop_at = stop_at
        self.commits = 0

    def commit(self) -> None:
        self.commits += 1
        if self.stop_at is not None and self.commits == self.stop_at:
            raise Preempted(f"preempted at the orchestrator's commit {self.commits}")
        self.volume.commit()

    def reload(self) -> None:
        self.volume.reload()

    def read_file(self, path: str) -> Iterator[bytes]:
        return self.volume.read_file(path)

    def remove_file(self, path: str, recursive: bool = False) -> None:
        self.volume.remove_file(path, recursive)


class FakeModal:
    """Calls, their results and how often each generation was executed."""

    def __init__(self, volume: FakeVolume, preempt_worker: int | None = None) -> None:
        self.volume = volume
        self.container = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-gpu")
        self.calls: dict[str, Future[list[dict[str, Any]]]] = {}
        self.spawned: list[dict[str, Any]] = []
        self.executed: Counter[str] = Counter()
        #: Attempts per call id (more than one: the call was preempted and restarted).
        self.attempts: Counter[str] = Counter()
        self.preempt_worker = preempt_worker
        self._ids = itertools.count(1)

    def spawn(self, options: dict[str, Any], params: str, args: tuple[Any, ...]) -> FakeCall:
        call_id = f"fc-{next(self._ids):04d}"
        self.spawned.append({"call_id": call_id, "options": options, "params": params,
                             "cell_ids": args[1], "group_index": args[4],
                             "call_key": args[5]})
        self.calls[call_id] = self.container.submit(self._execute, call_id, *args)
        return FakeCall(call_id, self.calls[call_id])

    def _execute(self, call_id: str, spec_json: str, cell_ids: list[str], done_keys: list[str],
                 spawned_at: float, group_index: int, call_key: str) -> list[dict[str, Any]]:
        while True:  # Modal runs a preempted input again, on a fresh container
            self.attempts[call_id] += 1
            commit = self._commit(self.preempt_worker if self.attempts[call_id] == 1 else None)
            with self.volume.lock:  # a worker's writes and its commit are one step
                try:
                    records = run_cells_local(spec_json, cell_ids, done_keys, spawned_at, commit,
                                              group_index=group_index, call_key=call_key,
                                              volume_root=self.volume.mount)
                except Preempted:
                    self.volume.preempt(under="journals")
                    forget_local_runners()
                    continue
            self.executed.update(r["key"] for r in records)
            return records

    def _commit(self, stop: int | None) -> Callable[[], None]:
        """The Volume's commit as one attempt sees it: stopped on its ``stop``-th call."""
        commits = [0]

        def commit() -> None:
            commits[0] += 1
            if stop is not None and commits[0] == stop:
                raise Preempted(f"GPU container preempted at its commit {commits[0]}")
            self.volume.commit()

        return commit

    def worker_cls(self) -> FakeWorkerCls:
        return FakeWorkerCls(self)

    def function_call(self) -> type[FakeFunctionCall]:
        modal = self

        class _Bound(FakeFunctionCall):
            registry = modal

        return _Bound

    def drain(self) -> None:
        self.container.shutdown(wait=True)


class FakeCall:
    def __init__(self, call_id: str, future: Future[list[dict[str, Any]]]) -> None:
        self.object_id = call_id
        self.future = future
        self.cancelled = False

    def get(self, timeout: float | None = None) -> list[dict[str, Any]]:
        # modal's FunctionCall.get raises modal.exception.TimeoutError when no result
        # came within ``timeout`` seconds.
        try:
            return self.future.result(timeout=timeout)
        except TimeoutError:
            if self.future.done():
                raise  # the call itself raised a TimeoutError
            raise ModalTimeoutError() from None

    def cancel(self) -> None:
        self.cancelled = True


class FakeFunctionCall:
    registry: FakeModal

    @classmethod
    def from_id(cls, call_id: str) -> FakeCall:
        if call_id not in cls.registry.calls:
            raise LookupError(f"no function call {call_id}")
        return FakeCall(call_id, cls.registry.calls[call_id])


class FakeWorkerCls:
    def __init__(self, modal: FakeModal) -> None:
        self.modal = modal
        self.options: list[dict[str, Any]] = []

    def with_options(self, **options: Any) -> Any:
        self.options.append(options)

        def construct(*, params: str) -> Any:
            modal = self.modal

            class _Method:
                @staticmethod
                def spawn(*args: Any) -> FakeCall:
                    return modal.spawn(options, params, args)

            class _Handle:
                run_cells = _Method()

            return _Handle()

        return construct
