"""The staged run of a spec with ``[history]`` (``echo-bench sweep`` and the Modal
nightly): find the full run to check against, cut tonight's draws into looks, and after
each look score what ran, judge the cells (:mod:`bench.analysis.nightly`), and log the
decision in ``RUN/nightly.json`` (the report's "checked against" section reads it).

Without a full run of the same spec from the last ``full_every_days`` days under the
runs folder, tonight runs in full: that run is the audit the next nights check against.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis.nightly import CellNight, NightSettings, TwinMatrix, comparable, twin_table
from bench.run.runner import Staging, find_unfinished
from bench.spec.history_aware import HISTORY_LOG, draw_order, looks
from bench.spec.prompt_files import Prompt
from bench.spec.sweep import SweepSpec
from bench.store.files import read_json, write_json_atomic
from bench.store.history import list_runs
from bench.store.records import load_records, records_frame
from bench.store.run_store import RunStore


@dataclass(frozen=True)
class Reference:
    """The full run tonight is checked against."""

    path: Path
    entry: Mapping[str, Any]
    records: pd.DataFrame

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.entry.get("run_id"), "path": str(self.path),
                "started_at": self.entry.get("started_at"),
                "git_commit": self.entry.get("git_commit")}


def planned_generations(spec: SweepSpec, prompts: list[Prompt]) -> pd.DataFrame:
    """Every generation the spec plans: cell, prompt, seed and repeat."""
    return pd.DataFrame(
        [{"cell_id": c.id, "prompt_id": p.id, "seed": s, "repeat": r}
         for c in spec.cells for p in prompts for s in spec.measure.seeds
         for r in range(spec.measure.repeats)],
        columns=["cell_id", "prompt_id", "seed", "repeat"])


def find_reference(spec: SweepSpec, prompts: list[Prompt], root: Path, now: datetime
                   ) -> Reference | str:
    """The newest complete full run of this exact spec under ``root`` started within
    ``[history] full_every_days`` of ``now``; or why there is none (a sentence)."""
    assert spec.history is not None
    since = (now - timedelta(days=spec.history.full_every_days)).isoformat()
    planned = planned_generations(spec, prompts)
    looked = 0
    for entry in reversed(list_runs(root, spec.name)):
        if (entry.get("spec_hash") != spec.hash or entry.get("status") != "complete"
                or str(entry.get("started_at") or "") < since):
            continue
        path = root / str(entry.get("path") or entry.get("run_id"))
        if not path.is_dir() or (path / HISTORY_LOG).exists():
            continue  # a history-aware run is itself partial
        looked += 1
        records = load_records(path)
        if comparable(records, planned) is None:
            return Reference(path, entry, records)
    days = spec.history.full_every_days
    return (f"no complete full run of {spec.name} (this spec's hash) from the last {days} "
            f"days under {root}" + (f" ({looked} looked at lacked generations)" if looked
                                     else ""))


class HistoryStages:
    """The staging of one history-aware run (:class:`bench.run.runner.Staging`).

    ``score(store)``: scores what ran before each decision (None: speed only, said in
    the log); ``now``: the clock (tests inject one)."""

    def __init__(self, spec: SweepSpec, prompts: list[Prompt], reference: Reference,
                 order: list[str], score: Callable[[RunStore], None] | None) -> None:
        assert spec.history is not None
        self.spec = spec
        self.reference = reference
        self.score = score
        self.order = order
        self.looks = tuple(looks(order, spec.history.first_batch, spec.history.batch))
        self.settings = NightSettings(first_batch=spec.history.first_batch,
                                      batch=spec.history.batch)
        self.decided: dict[str, CellNight] = {}
        self.log: dict[str, Any] = {
            "reference": reference.to_dict(), "settings": spec.history.to_dict(),
            "rule": {"confidence": self.settings.confidence,
                     "none_confidence": self.settings.none_confidence,
                     "sizes": vars(self.settings.sizes)},
            "n_draws": len(order), "n_cells": len(spec.cells), "order": order,
            "full_generations": len(planned_generations(spec, prompts)),
            "full_seconds_reference": _seconds(reference.records),
            "quality": None, "stages": [], "cells": {}, "stop": None,
        }

    @classmethod
    def prepare(cls, spec: SweepSpec, prompts: list[Prompt], root: Path,
                score: Callable[[RunStore], None] | None,
                now: Callable[[], datetime] = lambda: datetime.now(UTC)
                ) -> HistoryStages | str:
        """The stages of tonight's run, or why it runs in full (a sentence)."""
        found = find_reference(spec, prompts, root, now())
        if isinstance(found, str):
            return found
        assert spec.history is not None
        draws = [f"{p.id}/{s}" for p in prompts for s in spec.measure.seeds]
        order = _resumed_order(spec, root, set(draws))
        if order is None:
            order = draw_order(draws, spec.history.seed, now().strftime("%Y-%m-%d"))
        return cls(spec, prompts, found, order, score)

    def staging(self) -> Staging:
        return Staging(self.looks, self.after_stage, Staging.draw_of)

    def after_stage(self, store: RunStore, stage: int, cells: frozenset[str]) -> frozenset[str]:
        if self.score is not None:
            self.score(store)  # quality decisions need this look's scores
        tonight = records_frame(store.records())
        twins = twin_table(self.reference.records, tonight)
        matrix = TwinMatrix.of(twins)
        ran = [d for look in self.looks[:stage + 1] for d in look]
        columns = [matrix.cells.index(c) for c in sorted(cells) if c in matrix.cells]
        nights = matrix.judge(matrix.rows_of(ran), columns, self.settings, len(self.order))
        self.log["quality"] = ("compared" if twins["wer_den_now"].notna().any() else
                               "not compared: " + ("not scored during the run"
                                                   if self.score is None else
                                                   "random weights or ASR"))
        last = stage + 1 >= len(self.looks)
        for cid, night in nights.items():
            if night.state != "open" or last:
                self.decided[cid] = night
        active = frozenset(c for c, n in nights.items() if n.state == "open")
        stop = ("every cell decided" if not active else
                "every draw run: some cells still open" if last else None)
        self.log["stages"] = [s for s in self.log["stages"] if s["stage"] < stage] + [{
            "stage": stage, "draws": len(ran), "cells_run": sorted(cells),
            "generations": len(tonight), "open": sorted(active),
            "seconds": _seconds(tonight),
        }]
        self.log["cells"] = {c: {**n.to_dict(), "stage": self.log["cells"].get(c, {}).get(
            "stage", stage)} for c, n in sorted(self.decided.items())}
        self.log["stop"] = stop
        write_json_atomic(store.path / HISTORY_LOG, self.log)
        steps = sorted(c for c, n in self.decided.items() if n.state == "step")
        print(f"history look {stage}: {len(cells)} cells on {len(ran)} draws; "
              f"{len(active)} still open; steps: {', '.join(steps) or 'none'}"
              + (f"; stop ({stop})" if stop else ""))
        return frozenset() if stop else active


def _seconds(records: pd.DataFrame) -> float:
    """Compute seconds (t_total) of a run's generations."""
    if "t_total" not in records.columns:
        return 0.0
    return float(pd.to_numeric(records["t_total"], errors="coerce").fillna(0.0).sum())


def _resumed_order(spec: SweepSpec, root: Path, draws: set[str]) -> list[str] | None:
    """The order an unfinished history-aware run of this spec logged, so a resumed run
    (on another day, too) goes on along the same draws."""
    unfinished = find_unfinished(root, spec)
    log = unfinished / HISTORY_LOG if unfinished is not None else None
    if log is None or not log.is_file():
        return None
    order = [str(d) for d in read_json(log).get("order") or []]
    return order if set(order) == draws else None
