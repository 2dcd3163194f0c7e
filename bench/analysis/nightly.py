"""The history-aware nightly: which cells tonight's run must measure further, given a full
run of the same spec on the same prompts and seeds (last night's, or the last audit).

Most nights nothing changed, and the reference run's figures for the very same prompts
and seeds are in the store. Tonight therefore runs every cell on a small first batch of
*draws* (a draw is one prompt with one seed, its repeats included), pairs each
generation with its twin in the reference run (same prompt, seed and repeat: an
unchanged sampler makes the same or nearly the same audio, so the twins' differences
are small: pairing is the control variate with coefficient 1), and asks the step rule
(:mod:`bench.analysis.steps`) per cell and metric whether a regression beyond its step
is still possible. A cell goes on to the next look only while some metric is ``open``; a
cell is done when every metric is ``none`` (no regression: the reference figures stand)
or one is a ``step`` (flagged, either way, on the cell's own spread and at least a first
batch's worth of draws). Improvements are not chased: a faster cell is flagged only if
its speed-up shows before no regression is possible.

Why draws and not prompts: Echo-TTS samples a fixed-length sequence per chunk whatever
the text, so a generation costs the same on a two-word prompt as on a long one, and a
draw is the smallest thing the run can buy. Drawing single generations in a random
order (without replacement from the run's draws) makes each look a simple random sample
of the run, so the without-replacement confidence sequence holds, and the first look
costs half what a prompt with both its seeds would.

Why the cells share one noise scale (``pooled``, for "no regression" only): every cell
of the run measures the same draws on the same night, and the twins' spread is the
run-to-run noise of the machines and the GPU's non-determinism, not the cell's. Three draws give a cell two
degrees of freedom, and sigma's upper bound from two is more than twice the plug-in;
twenty cells give forty. A cell noisier than the rest keeps its own plug-in spread.

The intervals are the without-replacement form over the run's draws, so every look is
valid, and a cell that runs every draw gets the full comparison's answer. A weekly full
run stays the audit of what this skips.

Not decided here: whether the frontier or the headline could move by less than the
step sizes (a change below every step size is, by this rule, no change).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.analysis.evidence import evidence
from bench.analysis.sequential import paired_differences, paired_log_ratios
from bench.analysis.steps import METRICS, MetricStep, StepSizes, metric_steps
from bench.spec.history_aware import DEFAULT_BATCH, DEFAULT_FIRST_BATCH

CellState = Literal["step", "none", "open"]
FloatArray = npt.NDArray[np.float64]

#: Where the interval is tightest, in draws: about the first looks, where most cells end.
TIGHT_AT = 4.0


@dataclass(frozen=True)
class NightSettings:
    """The nightly's rule: step ``sizes``; ``confidence`` of a flagged step (a cell that
    did not change is flagged with chance at most 1 - confidence); ``none_confidence`` of
    "no regression" (a regression exactly at its size goes unflagged on a night with
    chance at most 1 - none_confidence, a larger one far less often, and the next nights
    draw other generations; the weekly full run audits it); ``words_confidence``, the
    words "no WER regression" rests on: a step of the size shows at least one extra
    error with that chance (Poisson), so twice the size is missed with chance at most
    (1 - words_confidence) squared; and the looks (``first_batch`` draws, then ``batch``
    per look).

    Chosen on constructed pairs of nights with generator seeds 0-3 (reported on others):
    an unchanged night spent 17 % of the full run with "no regression" at 0.85, 15 % at
    0.8; the words floor at 0.8 keeps a planted +2-point WER step flagged in 94-97 % of
    replays (at 0.7 it fell to 90 %), at 0.85 in 95-98 % for 1.3 points more spend."""

    sizes: StepSizes = field(default_factory=StepSizes)
    confidence: float = 0.95
    none_confidence: float = 0.8
    words_confidence: float = 0.8
    first_batch: int = DEFAULT_FIRST_BATCH
    batch: int = DEFAULT_BATCH
    tight_at: float = TIGHT_AT


@dataclass(frozen=True)
class CellNight:
    """One cell's comparison with the reference run: each metric's step, and the cell's
    state ("step": some metric stepped; "none": no metric can have; "open": run
    further), on ``draws`` draws."""

    cell_id: str
    state: CellState
    metrics: dict[str, MetricStep]
    draws: int

    def summary(self) -> str:
        parts = [f"{m.metric} {m.estimate:.3g} [{m.low:.3g}, {m.high:.3g}] vs step "
                 f"{m.size:g}: {m.state}{' ' + m.direction if m.direction else ''}"
                 for m in self.metrics.values()]
        return f"{self.cell_id}: {self.state} on {self.draws} draws ({'; '.join(parts)})"

    def to_dict(self) -> dict[str, object]:
        return {"state": self.state, "draws": self.draws, "metrics": {
            m: {"estimate": s.estimate, "low": s.low, "high": s.high, "size": s.size,
                "state": s.state, "direction": s.direction, "bound": s.bound}
            for m, s in self.metrics.items()}}


def draw_of_unit(unit: str) -> str:
    """``prompt/seed`` of an evidence unit ``prompt/seed/repeat``."""
    return unit.rsplit("/", 1)[0]


def twin_table(reference: pd.DataFrame, tonight: pd.DataFrame) -> pd.DataFrame:
    """One row per generation both runs made (cell, prompt, seed, repeat): the
    reference's (``_last``) and tonight's (``_now``) ``rtf``, word errors and reference
    words, ``sim`` and ``utmos``, tonight's ``t_total``, and the ``draw``, under the
    outcome rules of :func:`evidence` (a generation without speech counts as an empty
    transcript). Quality is left out (NaN) unless both runs' quality is meaningful."""
    cols = ["cell_id", "prompt_id", "unit", "rtf", "wer_num", "wer_den", "sim", "utmos"]
    ev_last, ev_now = evidence(reference), evidence(tonight)
    a = ev_last.units[cols]
    b = ev_now.units[[*cols, "t_total"]]
    out = a.merge(b, on=["cell_id", "prompt_id", "unit"], suffixes=("_last", "_now"))
    out["draw"] = out["unit"].astype(str).map(draw_of_unit)
    if not ev_last.quality == ev_now.quality == "ok":
        # Random weights or a random ASR: quality figures mean nothing, compare speed only.
        quality = [f"{m}_{night}" for m in cols[4:] for night in ("last", "now")]
        out[quality] = np.nan
    return out


def comparable(reference: pd.DataFrame, tonight: pd.DataFrame) -> str | None:
    """Why the two runs cannot be compared twin by twin (None when they can): tonight's
    planned generations must all have twins in the reference run."""
    if not len(reference) or not len(tonight):
        return "a run has no records"
    key = ["cell_id", "prompt_id", "seed", "repeat"]
    for name, rows in (("reference", reference), ("tonight", tonight)):
        missing = [k for k in key if k not in rows.columns]
        if missing:
            return f"the {name} run's records lack {', '.join(missing)}"
    have = set(map(tuple, reference[key].astype(str).to_numpy()))
    want = set(map(tuple, tonight[key].astype(str).to_numpy()))
    if not want <= have:
        return (f"{len(want - have)} of tonight's generations have no twin in the reference "
                "run (another spec, prompt set or seeds)")
    return None


@dataclass(frozen=True)
class TwinMatrix:
    """The twins as arrays: per metric, ``num``/``den`` summed per (draw, cell), rows in
    ``draws`` order, columns in ``cells`` order (den 0: not run), and tonight's compute
    ``seconds`` per (draw, cell). Built once; a look is a choice of rows and columns."""

    cells: tuple[str, ...]
    draws: tuple[str, ...]
    num: dict[str, FloatArray]
    den: dict[str, FloatArray]
    seconds: FloatArray

    @classmethod
    def of(cls, twins: pd.DataFrame) -> TwinMatrix:
        cells = tuple(dict.fromkeys(twins["cell_id"].astype(str)))
        draws = tuple(sorted(set(twins["draw"].astype(str))))
        row = pd.Index(draws).get_indexer(pd.Index(twins["draw"].astype(str)))
        col = pd.Index(cells).get_indexer(pd.Index(twins["cell_id"].astype(str)))
        shape = (len(draws), len(cells))

        def summed(values: FloatArray) -> FloatArray:
            out = np.zeros(shape)
            np.add.at(out, (row, col), values)
            return out

        def values(name: str) -> FloatArray:
            return twins[name].to_numpy(np.float64)

        pairs = {"speed": paired_log_ratios(values("rtf_last"), values("rtf_now")),
                 "wer": paired_differences(values("wer_num_last"), values("wer_num_now"),
                                           values("wer_den_now")),
                 "sim": paired_differences(values("sim_last"), values("sim_now")),
                 "mos": paired_differences(values("utmos_last"), values("utmos_now"))}
        num = {m: summed(n) for m, (n, d) in pairs.items() if (d > 0).any()}
        den = {m: summed(d) for m, (n, d) in pairs.items() if (d > 0).any()}
        return cls(cells, draws, num, den, summed(np.nan_to_num(values("t_total"))))

    def judge(self, rows: Sequence[int] | npt.NDArray[np.intp], columns: Sequence[int],
              settings: NightSettings,
              n_draws: int | None = None) -> dict[str, CellNight]:
        """The cells ``columns`` judged together on the draws ``rows`` (in the order they
        were drawn) out of the run's ``n_draws`` draws (default: the matrix's)."""
        r, c = np.asarray(rows, dtype=np.intp), np.asarray(columns, dtype=np.intp)
        per_metric: dict[str, list[MetricStep]] = {}
        for metric in METRICS:
            if metric not in self.num:
                continue
            den = self.den[metric][np.ix_(r, c)]
            if not (den > 0).any():
                continue
            per_metric[metric] = metric_steps(
                metric, self.num[metric][np.ix_(r, c)], den, settings.sizes,
                confidence=settings.confidence, none_confidence=settings.none_confidence,
                n_population=n_draws or len(self.draws), tight_at=settings.tight_at,
                pooled=True, regressions_only=True,
                words_confidence=settings.words_confidence)
        out = {}
        for j, col in enumerate(c):
            metrics = {m: steps[j] for m, steps in per_metric.items()}
            states = {m.state for m in metrics.values()}
            state: CellState = ("step" if "step" in states else
                                "open" if "open" in states or not metrics else "none")
            ran = int((self.seconds[r, col] > 0).sum()) if len(r) else 0
            out[self.cells[col]] = CellNight(self.cells[col], state, metrics, ran)
        return out

    def rows_of(self, order: Sequence[str]) -> list[int]:
        """Row indices of the draws in ``order``."""
        index = {d: k for k, d in enumerate(self.draws)}
        return [index[d] for d in order if d in index]

