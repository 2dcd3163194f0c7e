"""Waiting on a Modal call without trusting it to end.

What Modal does that a plain ``FunctionCall.get()`` would wait out (checked against the
locked client, modal 1.6.4, and Modal's retries guide):

* A deployed app retries a crashing *container* (host memory, a segfault in a kernel)
  without end, with crash-loop backoff; ``retries=`` covers exceptions only. A group
  whose container crash-loops would keep the nightly waiting until the worker's 24 h
  timeout, paying for the GPU all along.
* A wedged call (a hung kernel) also runs to the 24 h timeout.
* A call can be gone: cancelled (``FunctionCall.cancel``; possibly when the nightly's
  own input dies, which Modal does not document either way), its output expired
  (``OutputExpiredError``), or its id unknown (``NotFoundError``). Its result will never
  come, but the work it did not finish is not a failure of the generations.

So the orchestrator polls (``get(timeout=POLL_SECONDS)``, which raises modal's
``TimeoutError`` when nothing came) and between polls checks two bounds: the container
starts the call made (each start of the input writes a line to its journal on the
outputs Volume, :meth:`~bench.backends.modal_journal.CallJournal.begin_attempt`) and a
deadline per group, from the cost estimate, counted from the spawn and including the
groups queued before it on the same GPU type (one container per type). Past either it
cancels the call and the group's pending generations are recorded failed with the
reason; a call that is gone becomes :class:`CallGone`, and the orchestrator runs the
group's missing generations again on the same journal.

Plain code: the modal exceptions are looked up by name, so tests and a machine without
modal still import this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

#: Starts of one call's container we accept: the first, one exception retry
#: (``retries=1``) and two more for preemptions, which Modal also restarts and which
#: look the same from here. A crash loop is stopped at the next poll after this.
MAX_CONTAINER_STARTS = 4
#: Seconds one ``get`` waits before the bounds are checked again.
POLL_SECONDS = 60.0
#: A group's deadline: this many times its estimated GPU seconds (the estimate is a
#: FLOP-model guess; real runs have come within 2x of it), never under
#: MIN_GROUP_SECONDS, plus a container's cold start.
DEADLINE_FACTOR = 4.0
MIN_GROUP_SECONDS = 30 * 60.0


class CallPending(Exception):
    """``get(timeout=...)`` returned no result yet: the call is still queued or running."""


class CallGone(Exception):
    """The call's result will never come (cancelled, expired, unknown): nothing about
    the generations it did not finish is known, so they run again."""


class GroupStopped(Exception):
    """We cancelled the call: it crash-looped or ran past its deadline (the reason)."""


class Pollable(Protocol):
    call_id: str

    def get(self, timeout: float | None = None) -> list[dict[str, Any]]: ...

    def cancel(self) -> None: ...


def translate(err: BaseException) -> BaseException:
    """A modal error from ``FunctionCall.get``/``from_id`` as one of ours, when it is one
    of the cases above; anything else (the worker's own exception, the 24 h
    ``FunctionTimeoutError``) is returned unchanged.

    modal 1.6.4: a poll that times out raises ``modal.exception.TimeoutError``, of which
    ``OutputExpiredError`` and ``FunctionTimeoutError`` are subclasses, so they are
    told apart first. What ``get`` raises for a cancelled call is not documented (the
    client raises ``RemoteError`` with the server's text for a terminated input, or
    ``InputCancellation``): its text is matched, which only a real Modal run confirms.
    """
    name = type(err).__name__
    module = type(err).__module__
    if not module.startswith("modal"):
        return err
    if name in ("OutputExpiredError", "NotFoundError", "InputCancellation"):
        return CallGone(f"{name}: {err}".rstrip(": "))
    if name == "FunctionTimeoutError":
        return err
    if name == "TimeoutError":
        return CallPending()
    text = str(err).lower()
    if name == "RemoteError" and ("cancel" in text or "terminat" in text):
        return CallGone(f"cancelled: {err}")
    return err


@dataclass(frozen=True)
class Watch:
    """What bounds one call: its journal key, its deadline (epoch seconds) and the
    container starts its journal held when it was spawned (a call spawned again on the
    same journal counts its own)."""

    call_key: str
    deadline: float
    starts_before: int = 0


def group_budget(estimated_seconds: float, cold_start_seconds: float) -> float:
    """Seconds a group may take once its container is free (see DEADLINE_FACTOR)."""
    return max(MIN_GROUP_SECONDS, DEADLINE_FACTOR * estimated_seconds) + cold_start_seconds


def wait_for(call: Pollable, watch: Watch, starts: Callable[[str], int],
             clock: Callable[[], float], poll_seconds: float = POLL_SECONDS,
             max_starts: int = MAX_CONTAINER_STARTS) -> list[dict[str, Any]]:
    """The call's records; raises :class:`GroupStopped` (after cancelling it) past a
    bound, :class:`CallGone` when it is gone, or the call's own error."""
    while True:
        try:
            return call.get(timeout=poll_seconds)
        except CallPending:
            pass
        started = starts(watch.call_key) - watch.starts_before
        if started > max_starts:
            _stop(call, f"crash loop: the container started {started} times (Modal restarts "
                        f"a crashing container without end; stopped after {max_starts})")
        now = clock()
        if now > watch.deadline:
            _stop(call, f"deadline: still running {now - watch.deadline:.0f} s past its "
                        "deadline (4x the estimate, queue included); cancelled")


def _stop(call: Pollable, reason: str) -> None:
    try:
        call.cancel()
    except Exception as err:  # the group is failed either way
        reason += f" (cancelling failed: {err})"
    raise GroupStopped(f"modal call {call.call_id} stopped by the orchestrator: {reason}")
