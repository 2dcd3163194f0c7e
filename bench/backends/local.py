"""The local backend: runs every cell in this process, on this machine's CPU or GPU."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from bench.errors import UserError
from bench.runner import CellHook, RecordSink
from bench.spec import Cell, SweepSpec
from bench.worker import Generation, Worker


class LocalBackend:
    """Loads the model once and runs the cells one after the other."""

    name = "local"

    def __init__(self, ignore_gpu: bool = False) -> None:
        self.ignore_gpu = ignore_gpu

    def execute(self, spec: SweepSpec, work: dict[Cell, list[Generation]], sink: RecordSink,
                on_cell_done: CellHook) -> None:
        gpus = sorted({c.gpu for c in work if c.gpu is not None})
        if gpus and not self.ignore_gpu:
            raise UserError(f"cells name GPU types ({', '.join(gpus)}), which only the modal "
                            "backend provides; use --backend modal, or --ignore-gpu to run them "
                            "all on this machine")
        worker = Worker(spec.model, long_text=spec.prompts.long_text)
        for cell, generations in work.items():
            keys: list[str] = []
            worker.run_cell(cell, generations, spec.measure.warmup, _collecting(sink, keys))
            on_cell_done(cell, keys)


def _collecting(sink: RecordSink, keys: list[str]) -> Callable[[dict[str, Any], Tensor | None], None]:
    """A sink that forwards records and remembers their keys."""

    def forward(record: dict[str, Any], audio: Tensor | None) -> None:
        sink(record, audio)
        keys.append(record["key"])

    return forward
