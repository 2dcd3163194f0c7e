"""The local backend: runs every cell in this process, on this machine's CPU or GPU."""

from __future__ import annotations

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
            worker.run_cell(cell, generations, spec.measure.warmup, sink)
            on_cell_done(cell)
