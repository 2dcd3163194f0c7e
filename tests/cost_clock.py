"""A deterministic clock for timing properties (issue 22).

A test that compares wall-clock times fails at random on a shared machine: whatever else
runs there lands in one side's timings. Tests that need a timing property instead run
the real pipeline under :class:`CostClock`: the pipeline's stage timer
(:mod:`echo_tts.timing`) reads a clock that only moves when the pipeline does work, by
a fixed price per operation:

* every DiT forward (one per function evaluation) costs ``STEP``, every codec decode
  ``DECODE``, every speaker-condition pass ``CONDITION``, times ``load`` (a busy
  neighbour, set by the test);
* a speaker clip encoded by the codec costs ``ENCODE`` (the speaker cache should make
  that happen once per clip, before timing begins);
* the first time an operation meets a tensor shape it costs ``FIRST_SHAPE`` more, as
  kernel plans, allocator pools and compiled graphs are built per shape on real devices.

Timings then count exactly what each generation paid, so "the first cell pays no more
than the second" or "4x the NFE is 4x the time" are equalities, whatever the machine is
doing. The wall-clock versions are benchmarks that print their figures
(``bench/scripts/order_effects.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest
from torch import Tensor

import echo_tts.pipeline
import echo_tts.timing
from echo_tts.acceleration import DiTForward
from echo_tts.autoencoder import Codec
from echo_tts.model import ContextKV


@dataclass(frozen=True)
class Charge:
    """One priced operation: what it was, whether its shape was new, and how many
    records the run had handed over when it happened (0: before timing began)."""

    op: str
    cold: bool
    records_before: int


class _ClockModule(ModuleType):
    """Stands in for the ``time`` module inside the patched modules: ``perf_counter``
    reads the cost clock, everything else is the real ``time``."""

    def __init__(self, clock: CostClock) -> None:
        super().__init__("time")
        self._clock = clock

    def perf_counter(self) -> float:
        return self._clock.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@dataclass
class CostClock:
    """The clock and the price list (module docstring). ``install`` patches it in."""

    STEP = 1.0
    DECODE = 2.0
    CONDITION = 0.5
    ENCODE = 25.0
    FIRST_SHAPE = 100.0

    now: float = 0.0
    load: float = 1.0
    records: int = 0  # advanced by the test's sink (``count_record``)
    charges: list[Charge] = field(default_factory=list)
    _seen: set[tuple[str, Hashable]] = field(default_factory=set)

    def charge(self, op: str, price: float, shape: Hashable = None) -> None:
        cold = shape is not None and (op, shape) not in self._seen
        if shape is not None:
            self._seen.add((op, shape))
        self.now += self.load * price + (self.FIRST_SHAPE if cold else 0.0)
        self.charges.append(Charge(op, cold, self.records))

    def count_record(self) -> None:
        self.records += 1

    def paid(self, op: str | None = None, *, cold: bool | None = None,
             after_first_record: bool = False) -> list[Charge]:
        """The charges matching ``op`` / ``cold``, optionally only those made once a
        first record was handed over (inside timed generations)."""
        return [c for c in self.charges
                if (op is None or c.op == op) and (cold is None or c.cold == cold)
                and (not after_first_record or c.records_before > 0)]

    def read_by(self, monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> CostClock:
        """Make ``module``'s ``time.perf_counter()`` read this clock (nothing priced:
        the test moves ``now`` itself)."""
        monkeypatch.setattr(module, "time", _ClockModule(self))
        return self

    def install(self, monkeypatch: pytest.MonkeyPatch) -> CostClock:
        """Price the pipeline's operations and point its stage timer at this clock."""
        self.read_by(monkeypatch, echo_tts.timing)
        _wrap(monkeypatch, DiTForward, "__call__", lambda args: self.charge(
            "dit", self.STEP, _dit_shape(args[1], args[3])))
        _wrap(monkeypatch, Codec, "decode",
              lambda args: self.charge("decode", self.DECODE, tuple(args[1].shape)))
        _wrap(monkeypatch, echo_tts.pipeline, "encode_speaker_condition",
                       lambda args: self.charge("condition", self.CONDITION, _shape(args[1])))
        _wrap(monkeypatch, echo_tts.pipeline, "speaker_latents",
                       lambda args: self.charge("speaker_encode", self.ENCODE))
        return self


def _dit_shape(x: Tensor, context: ContextKV) -> Hashable:
    """The shape a DiT forward is warmed for: its rows and sequence, and the speaker
    part of its context. The text part is left out on purpose: prompts of every text
    length are not warmed one by one (bench.run.worker.warmup_generations warms a second
    text length for compiled cells only, after which their shapes are dynamic)."""
    speaker = context.segments.get("speaker")
    return tuple(x.shape), 0 if speaker is None else speaker.stop - speaker.start


def _shape(value: Tensor | None) -> Hashable:
    return None if value is None else tuple(value.shape)


def _wrap(monkeypatch: pytest.MonkeyPatch, owner: type | ModuleType, name: str,
          before: Callable[[tuple[Any, ...]], None]) -> None:
    """Replace ``owner.name`` (a method or a module's function) by one that calls
    ``before(positional args)`` first (for a method, ``args[0]`` is the instance)."""
    original = getattr(owner, name)

    def priced(*args: Any, **kwargs: Any) -> Any:
        before(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, priced)
