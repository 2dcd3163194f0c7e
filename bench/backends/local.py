"""The local backend: runs every cell in this process, on this machine's CPU or GPU."""

from __future__ import annotations

from bench.core.errors import UserError
from bench.run.runner import CellHook, RecordSink
from bench.run.schedule import order_seed, schedule
from bench.run.worker import Generation, Worker
from bench.spec.sweep import Cell, SweepSpec


class LocalBackend:
    """Loads the model once and runs the cells group by group, each group in interleaved
    rounds (:mod:`bench.run.schedule`); ``interleave=False`` runs cell after cell."""

    name = "local"

    def __init__(self, ignore_gpu: bool = False, *, interleave: bool = True) -> None:
        self.ignore_gpu = ignore_gpu
        self.interleave = interleave

    def execute(self, spec: SweepSpec, work: dict[Cell, list[Generation]], sink: RecordSink,
                on_cell_done: CellHook) -> None:
        gpus = sorted({c.gpu for c in work if c.gpu is not None})
        if gpus and not self.ignore_gpu:
            raise UserError(f"cells name GPU types ({', '.join(gpus)}), which only the modal "
                            "backend provides; use --backend modal, or --ignore-gpu to run them "
                            "all on this machine")
        worker = Worker(spec.model, long_text=spec.prompts.long_text)
        for group in schedule(work, seed=order_seed(spec.hash), interleave=self.interleave):
            worker.run_group(group, spec.measure.warmup, sink, on_cell_done)
