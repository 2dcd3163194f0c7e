"""Device-synchronised stage timing for the inference pipeline.

GPU kernels run asynchronously: a host clock read right after launching work measures the
launch, not the work. Every clock read here is preceded by a device synchronisation, so a
stage's time is what the device spent on it plus host overhead, in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def synchronize(device: torch.device | str) -> None:
    """Block the host until all work queued on ``device`` has finished (no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class StageTimer:
    """Accumulates wall-clock seconds per named stage.

    >>> timer = StageTimer("cpu")
    >>> with timer.stage("sampling"):
    ...     pass
    >>> sorted(timer.seconds)
    ['sampling']

    A stage entered several times (one per text chunk, say) sums its durations. Stages may
    nest (a "total" around the others); each is timed independently. A stage whose block
    raises is not recorded: its time would describe a failure, not the work.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name`` (seconds, added to earlier runs of the stage)."""
        # Synchronise first so work queued before the stage is not billed to it.
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self._seconds[name] = self._seconds.get(name, 0.0) + (time.perf_counter() - start)

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds per stage name, in the order the stages first finished (a copy)."""
        return dict(self._seconds)
