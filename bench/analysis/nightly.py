"""The history-aware nightly: which cells tonight's run must measure further, given last
night's complete run of the same spec on the same prompts and seeds.

Most nights nothing changed, and last night's figures for the very same prompts and seeds
are in the store. Tonight therefore runs every cell on a small first batch of prompts,
pairs each generation with its twin of last night (same prompt, seed and repeat: an
unchanged sampler makes the same or nearly the same audio, so the twins' differences are
small), and asks the step rule (:mod:`bench.analysis.steps`) per cell and metric whether
a step beyond its size is still possible. A cell goes on to the next batch only while
some metric is ``open``; a cell is done when every metric is ``none`` (no step: last
night's figures stand) or one is a ``step`` (flagged). The intervals are the
without-replacement form over the spec's prompts (each prompt, with all its seeds, one
draw), so every look is valid and a cell that runs every prompt gets the full
comparison's answer. A weekly full run stays the audit of what this skips.

Not decided here: whether the frontier or the headline could move by less than the step
sizes (a change below every step size is, by this rule, no change).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.analysis.evidence import evidence
from bench.analysis.steps import MetricStep, PairedUnits, StepSizes, step_changes

CellState = Literal["step", "none", "open"]

#: Prompts every cell runs first: the fewest whose spread estimate (two degrees of
#: freedom) lets the speed interval of twins with ~3 % timing noise lie within a 10 %
#: step (chosen on constructed nights with generator seeds 0-2; reported on others).
DEFAULT_FIRST_BATCH = 3
#: Prompts per later look.
DEFAULT_BATCH = 1
#: Where the interval is tightest, in prompts: the first look, where most cells end.
TIGHT_AT = 3.0


@dataclass(frozen=True)
class NightSettings:
    """The nightly's rule: step ``sizes``; ``confidence`` of a flagged step (a cell that
    did not change is flagged with chance at most 1 - confidence); ``none_confidence`` of
    "no step" (a step exactly at its size goes unflagged with chance at most 1 -
    none_confidence, a larger one far less often; the weekly full run audits it); and the
    batches (``first_batch`` prompts, then ``batch`` per look)."""

    sizes: StepSizes = field(default_factory=StepSizes)
    confidence: float = 0.95
    none_confidence: float = 0.8
    first_batch: int = DEFAULT_FIRST_BATCH
    batch: int = DEFAULT_BATCH


@dataclass(frozen=True)
class CellNight:
    """One cell's comparison with last night: each metric's step, and the cell's state
    ("step": some metric stepped; "none": no metric can have; "open": run further)."""

    cell_id: str
    state: CellState
    metrics: dict[str, MetricStep]
    prompts: int

    def summary(self) -> str:
        parts = [f"{m.metric} {m.estimate:.3g} [{m.low:.3g}, {m.high:.3g}] vs step "
                 f"{m.size:g}: {m.state}{' ' + m.direction if m.direction else ''}"
                 for m in self.metrics.values()]
        return f"{self.cell_id}: {self.state} on {self.prompts} prompts ({'; '.join(parts)})"


def twin_table(last: pd.DataFrame, tonight: pd.DataFrame) -> pd.DataFrame:
    """One row per generation both runs made (cell, prompt, seed, repeat): last night's
    and tonight's ``rtf``, word errors and reference words, ``sim`` and ``utmos``, and
    tonight's ``t_total``, under the outcome rules of :func:`evidence` (a generation
    without speech counts as an empty transcript). Quality is left out (NaN) unless both
    runs' quality is meaningful."""
    cols = ["cell_id", "prompt_id", "unit", "rtf", "wer_num", "wer_den", "sim", "utmos"]
    ev_last, ev_now = evidence(last), evidence(tonight)
    a = ev_last.units[cols]
    b = ev_now.units[[*cols, "t_total"]]
    out = a.merge(b, on=["cell_id", "prompt_id", "unit"], suffixes=("_last", "_now"))
    if not ev_last.quality == ev_now.quality == "ok":
        # Random weights or a random ASR: quality figures mean nothing, compare speed only.
        quality = [f"{m}_{night}" for m in cols[4:] for night in ("last", "now")]
        out[quality] = np.nan
    return out


def comparable(last: pd.DataFrame, tonight: pd.DataFrame) -> str | None:
    """Why the two runs cannot be compared twin by twin (None when they can): tonight's
    planned generations must all have twins last night."""
    if not len(last) or not len(tonight):
        return "a run has no records"
    key = ["cell_id", "prompt_id", "seed", "repeat"]
    for name, rows in (("last", last), ("tonight", tonight)):
        missing = [k for k in key if k not in rows.columns]
        if missing:
            return f"the {name} run's records lack {', '.join(missing)}"
    have = set(map(tuple, last[key].astype(str).to_numpy()))
    want = set(map(tuple, tonight[key].astype(str).to_numpy()))
    if not want <= have:
        return (f"{len(want - have)} of tonight's generations have no twin last night "
                "(another spec, prompt set or seeds)")
    return None


def judge_cells(twins: pd.DataFrame, order: Sequence[str], n_prompts: int,
                settings: NightSettings) -> dict[str, CellNight]:
    """Each cell's state from the twins run so far, rows in the prompts' drawn ``order``
    (prompt ids; the prompts each cell ran are a prefix of it)."""
    rank = {p: k for k, p in enumerate(order)}
    return {str(cid): judge_cell(str(cid), g, rank, n_prompts, settings)
            for cid, g in twins.groupby("cell_id", sort=False)}


def judge_cell(cell_id: str, twins: pd.DataFrame, rank: dict[str, int], n_prompts: int,
               settings: NightSettings) -> CellNight:
    """One cell's state from its twins (see :func:`judge_cells`)."""
    g = twins.iloc[np.argsort(twins["prompt_id"].map(rank).to_numpy(), kind="stable")]

    def values(name: str) -> npt.NDArray[np.float64]:
        return g[name].to_numpy(np.float64)

    units = PairedUnits(
        rtf_before=values("rtf_last"), rtf_after=values("rtf_now"),
        errors_before=values("wer_num_last"), errors_after=values("wer_num_now"),
        ref_words=values("wer_den_now"), sim_before=values("sim_last"),
        sim_after=values("sim_now"), mos_before=values("utmos_last"),
        mos_after=values("utmos_now"), cluster=tuple(g["prompt_id"].astype(str)))
    metrics = step_changes(units, settings.sizes, confidence=settings.confidence,
                           n_population=n_prompts, tight_at=TIGHT_AT,
                           none_confidence=settings.none_confidence)
    states = {m.state for m in metrics.values()}
    state: CellState = ("step" if "step" in states else
                        "open" if "open" in states or not metrics else "none")
    return CellNight(cell_id, state, metrics, int(g["prompt_id"].nunique()))


def batches(order: Sequence[str], settings: NightSettings) -> list[tuple[str, ...]]:
    """The prompts in ``order`` cut into looks: ``first_batch``, then ``batch`` each."""
    out = [tuple(order[:settings.first_batch])]
    for start in range(settings.first_batch, len(order), settings.batch):
        out.append(tuple(order[start:start + settings.batch]))
    return out


def shuffled(prompt_ids: Sequence[str], seed: int) -> list[str]:
    """A seeded shuffle of the prompts (sorted first, so the order does not depend on the
    records' row order)."""
    order = sorted(set(prompt_ids))
    np.random.default_rng(seed).shuffle(order)
    return order
