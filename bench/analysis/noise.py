"""How noisy a cell's timings were, and what the machine was doing meanwhile.

A median hides its spread, but the spread of a cell's raw times is mostly its workload:
its prompts differ in length, chunk count and context, so their times differ on the
quietest machine. Noise is measured on what *should* be equal instead:

* **time per unit of work** (``dispersion``): each generation's total time over what its
  work would take at the cell's own median rate per stage. A stage's work is what its
  cost grows with inside one cell: sampling, the FLOPs of :func:`bench.analysis.flop_model.
  sampling_flops` (NFE x FLOPs per forward row at the sequence length and the prompt's
  context, :mod:`echo_tts.flops`); decoding, the latents decoded (chunks x sequence
  length); text encoding, the text bytes plus one BOS per chunk; speaker encoding, the
  speaker tokens per chunk. A quiet machine gives every generation a ratio near 1,
  however different the prompts;
* **across repeats** (``repeat_dispersion``, where the spec repeats generations): each
  generation's total time over the median of its prompt and seed's repeats, which did
  exactly the same work (no cost model involved).

In an interleaved run a slowdown of the whole machine (another tenant, a clock drop)
hits every cell's generations in the same stretch of rounds alike, and the rounds keep the
comparisons fair. It is measured once, for the run, as the **machine pace**
(:func:`machine_pace`): the rolling median, in execution order over about one round of
generations, of every cell's work ratios. Both figures above are taken relative to it, so
a cell is left with the spread that is its own.

Each figure is the 10th-90th percentile range of those ratios over their median
(:func:`dispersion`), and a cell is flagged *unstable* when either exceeds
:data:`UNSTABLE_DISPERSION`. Beside them, the machine's state while the cell ran, from the
per-generation snapshots (:mod:`bench.run.machine`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.analysis.flop_model import sampling_flops
from bench.scoring.outcomes import is_number

#: (p90 - p10) / median of the per-generation ratios above which a cell is flagged
#: unstable. Generations on a quiet machine spread by a few percent per unit of work; for
#: Gaussian jitter the p10-p90 range is 1.9 x the interquartile range, so 20 % here is
#: as sensitive as the 10 % IQR / median this flag used before, and a burst that slows
#: a tenth of a cell's generations by half or more is well past it.
UNSTABLE_DISPERSION = 0.20
#: Fewer ratios than this give no dispersion (a spread of two values says nothing).
MIN_TIMINGS = 3
#: Throttle reasons that slow a busy GPU (the others say it idled or synced clocks).
SLOWING_REASONS = frozenset({"sw_power_cap", "hw_slowdown", "sw_thermal", "hw_thermal",
                             "hw_power_brake"})
#: What the report says the figures are (one line each).
DISPERSION_NAME = "spread of time per unit of work"
REPEAT_DISPERSION_NAME = "spread across repeats"
#: Fewer cells than this in an interleaved group give no machine pace: with one or two
#: cells a window of neighbours is mostly the cell itself, and its own burst would be
#: taken for the machine's.
MIN_PACE_CELLS = 3
#: The pace window never spans fewer generations than this (a round of three cells is
#: too short a stretch for a median to ignore a burst on one of them).
MIN_PACE_WINDOW = 5


def dispersion(values: Any) -> float:
    """(p90 - p10) / median of the finite positive ``values``; NaN below
    :data:`MIN_TIMINGS`.

    The 10th-90th percentile range, not the interquartile range: a burst that hits a few
    generations of a cell leaves its quartiles alone (a quarter of the values must move
    before a quartile does), yet it is exactly what the flag is for; the percentiles
    still ignore one stray generation in a cell of ten or more (a garbage-collector
    pause does not make a cell untrustworthy). The report's other ranges are p10-p90 too.
    """
    x = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(np.float64)
    x = x[np.isfinite(x) & (x > 0)]
    if x.size < MIN_TIMINGS:
        return math.nan
    p10, median, p90 = np.percentile(x, [10, 50, 90])
    return float((p90 - p10) / median)


def _count(value: Any) -> float:
    """``value`` as a positive float, else NaN."""
    return float(value) if is_number(value) and float(value) > 0 else math.nan


def _seconds(value: Any) -> float:
    return float(value) if is_number(value) and float(value) >= 0 else math.nan


def _chunks(r: Mapping[str, Any]) -> float:
    chunks = _count(r.get("n_chunks"))
    return 1.0 if math.isnan(chunks) else chunks


def _text_work(r: Mapping[str, Any]) -> float:
    text = r.get("normalized_text")
    if not isinstance(text, str):
        text = r.get("text")
    size = len(text.encode("utf-8")) if isinstance(text, str) else 0
    return size + _chunks(r)  # one BOS per chunk: an empty text still costs a pass


def _speaker_work(r: Mapping[str, Any]) -> float:
    # The reference is encoded once per sampler call over its tokens (1: unconditioned).
    tokens = _count(r.get("speaker_tokens"))
    return _chunks(r) * (1.0 if math.isnan(tokens) else tokens)


def _decode_work(r: Mapping[str, Any]) -> float:
    length = _count(r.get("sequence_length"))
    return _chunks(r) * (1.0 if math.isnan(length) else length)


#: Each timed stage and the work its time should be proportional to inside one cell.
STAGE_WORK: dict[str, Callable[[Mapping[str, Any]], float]] = {
    "t_text_encode": _text_work,
    "t_speaker_encode": _speaker_work,
    "t_sampling": sampling_flops,
    "t_decode": _decode_work,
}


def work_ratios(ok: pd.DataFrame) -> npt.NDArray[np.float64]:
    """Per generation (aligned with ``ok``'s rows): its timed seconds over the seconds its
    work would take at the cell's median rate per stage (1 = as fast per unit of work as
    the cell's typical generation). NaN for a generation missing a stage's time or work.

    Records without stage times (older or hand-made ones) fall back to ``t_total`` over
    the sampling FLOPs, the stage that dominates a real model's time.
    """
    records: list[dict[str, Any]] = [{str(k): v for k, v in r.items()}
                                     for r in ok.to_dict("records")]
    stages = {s: w for s, w in STAGE_WORK.items() if s in ok.columns}
    if not stages and "t_total" in ok.columns:
        stages = {"t_total": sampling_flops}
    n = len(records)
    seconds = np.full((n, len(stages)), math.nan)
    work = np.full((n, len(stages)), math.nan)
    for i, r in enumerate(records):
        for j, (stage, of) in enumerate(stages.items()):
            seconds[i, j] = _seconds(r.get(stage))
            work[i, j] = of(r)
    if not n or not stages:
        return np.full(n, math.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_unit = seconds / work
        # The median rate resists the very generations a burst slowed.
        rate = np.array([np.nanmedian(c) if np.isfinite(c).any() else math.nan
                         for c in per_unit.T])
        expected = (work * rate).sum(axis=1)
        observed = seconds.sum(axis=1)
    ratio = observed / expected
    ratio[~(np.isfinite(seconds).all(axis=1) & np.isfinite(work).all(axis=1)
            & np.isfinite(ratio))] = math.nan
    return ratio


def machine_pace(records: pd.DataFrame) -> pd.Series:
    """Per ok generation of a run (indexed like ``records``): how slow the machine ran
    around it, 1 = the run's usual pace.

    Within each interleaved group of at least :data:`MIN_PACE_CELLS` cells, the work
    ratios of every cell (:func:`work_ratios`, each against its own cell's median rate)
    are put in execution order (``order_seq``) and their rolling median is taken over one
    round's worth of generations (as many as the group has cells; at least
    :data:`MIN_PACE_WINDOW`), centred. A slowdown of the machine lasting about half a round
    or more moves that median for every cell it touched; a burst on one cell's generation
    does not, since its neighbours in the window are other cells'. Generations that did
    not run interleaved (a sequential run: the neighbours are the cell's own) get NaN and
    are taken at pace 1, so a disturbance there stays in the cell's figures, where it
    biased its median.
    """
    ok = records[records["status"] == "ok"] if "status" in records.columns else records
    pace = pd.Series(math.nan, index=ok.index)
    if not {"cell_id", "order_seq", "order_group", "order_interleaved"} <= set(ok.columns):
        return pace
    interleaved = ok[[v is True for v in ok["order_interleaved"]]]
    for _, group in interleaved.groupby("order_group", sort=False):
        cells = group["cell_id"].nunique()
        if cells < MIN_PACE_CELLS:
            continue
        ratios = pd.Series(math.nan, index=group.index)
        for _, cell in group.groupby("cell_id", sort=False):
            ratios[cell.index] = work_ratios(cell)
        in_order = ratios[pd.to_numeric(group["order_seq"], errors="coerce")
                          .sort_values(kind="stable").index]
        local = in_order.rolling(max(cells, MIN_PACE_WINDOW), center=True,
                                 min_periods=1).median()
        pace[local.index] = local.where(np.isfinite(local) & (local > 0), 1.0)
    return pace


def pace_range(pace: pd.Series) -> tuple[float, float] | None:
    """The 10th and 90th percentiles of a run's :func:`machine_pace` over its median (the
    report's one line on the machine); None where no generation had a pace."""
    x = pace.to_numpy(np.float64)
    x = x[np.isfinite(x)]
    if x.size < MIN_TIMINGS:
        return None
    p10, median, p90 = np.percentile(x, [10, 50, 90])
    return float(p10 / median), float(p90 / median)


def repeat_ratios(ok: pd.DataFrame, pace: pd.Series | None = None) -> npt.NDArray[np.float64]:
    """Each generation's ``t_total`` (over its ``pace``, where given) over the median of
    its prompt and seed's repeats, for the prompts and seeds repeated at least twice in the
    cell (others are left out)."""
    if not {"prompt_id", "seed", "t_total"} <= set(ok.columns):
        return np.array([], dtype=np.float64)
    total = pd.to_numeric(ok["t_total"], errors="coerce")
    if pace is not None:
        total = total / pace.reindex(ok.index).fillna(1.0)
    frame = pd.DataFrame({"prompt": ok["prompt_id"].astype(str),
                          "seed": ok["seed"].astype(str), "t": total})
    frame = frame[np.isfinite(frame["t"]) & (frame["t"] > 0)]
    sizes = frame.groupby(["prompt", "seed"])["t"].transform("size")
    frame = frame[sizes >= 2]
    if not len(frame):
        return np.array([], dtype=np.float64)
    median = frame.groupby(["prompt", "seed"])["t"].transform("median")
    return (frame["t"] / median).to_numpy(np.float64)


def cell_noise(ok: pd.DataFrame, pace: pd.Series | None = None) -> dict[str, Any]:
    """A cell's noise figures from its ok records: ``dispersion`` (spread of time per unit
    of work, :func:`work_ratios`), ``repeat_dispersion`` (spread across repeats of a prompt
    and seed, :func:`repeat_ratios`; NaN without repeats), both relative to the machine's
    ``pace`` where given (:func:`machine_pace`, indexed like ``ok``), ``unstable`` (either
    beyond :data:`UNSTABLE_DISPERSION`), ``interleaved`` (ran in rounds with other cells), and
    the machine's state while it ran: ``load_avg_max``, ``cpu_mhz_min``,
    ``gpu_sm_clock_min``, ``gpu_temp_max`` and ``gpu_throttled`` (slowing throttle reasons
    seen, or "")."""
    def col(name: str) -> pd.Series:
        return ok[name] if name in ok.columns else pd.Series([], dtype=object)

    def extreme(name: str, pick: str) -> float:
        x = pd.to_numeric(col(name), errors="coerce").dropna()
        return float(getattr(x, pick)()) if len(x) else math.nan

    at_pace = 1.0 if pace is None else pace.reindex(ok.index).fillna(1.0).to_numpy()
    spread = dispersion(work_ratios(ok) / at_pace)
    across_repeats = dispersion(repeat_ratios(ok, pace))
    reasons = sorted({r for v in col("gpu_throttle").dropna() for r in str(v).split(",")}
                     & SLOWING_REASONS)
    return {"dispersion": spread, "repeat_dispersion": across_repeats,
            # NaN compares False: a cell too small to judge is not flagged.
            "unstable": bool(spread > UNSTABLE_DISPERSION
                             or across_repeats > UNSTABLE_DISPERSION),
            "interleaved": bool(any(v is True for v in col("order_interleaved"))),
            "load_avg_max": extreme("load_avg_1m", "max"),
            "cpu_mhz_min": extreme("cpu_mhz", "min"),
            "gpu_sm_clock_min": extreme("gpu_sm_clock_mhz", "min"),
            "gpu_temp_max": extreme("gpu_temp_c", "max"),
            "gpu_throttled": ",".join(reasons)}
