"""The headline: per GPU, the baseline cell and the fastest settings whose quality stays
within the budget, with its speed-up against the baseline (:mod:`bench.analysis.speedup` computes it).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.analysis.cells import NOT_MEANINGFUL
from bench.analysis.evidence import (
    PAIRED_BASELINE_WER,
    PAIRED_CELL_WER,
    SETTINGS,
    Evidence,
    add_paired_baseline_wer,
)
from bench.analysis.resolution import wer_resolution
from bench.core.errors import UserError
from bench.scoring.outcomes import column, usable, usable_mask

#: The production default that speed-ups are measured against, on each GPU.
DEFAULT_BASELINE: dict[str, Any] = {"num_steps": 40, "cfg_mode": "independent",
                                    "sequence_length": 640}

#: Among cells with the default baseline's sampler settings (a speed-options sweep has
#: several), the one that runs the production path: fewest of these changed.
PLAIN_EXECUTION: dict[str, Any] = {"compile": False, "cuda_graphs": False,
                                   "attention": "sliced", "batch_size": 1}

DEFAULT_WER_BUDGET_POINTS = 0.5


@dataclass(frozen=True)
class Baseline:
    """The cell speed-ups on one hardware are measured against, and why it was chosen."""

    hardware: str
    cell_id: str
    reason: str


def choose_baselines(cells: pd.DataFrame, baseline_cell: str | None = None
                     ) -> dict[str, Baseline]:
    """The baseline cell per hardware.

    Default: the cell with :data:`DEFAULT_BASELINE` settings on that hardware (of several,
    the one closest to :data:`PLAIN_EXECUTION`). With
    ``baseline_cell`` (a cell id): that cell on its own hardware, and the cell with the
    same settings on each other hardware. Where no cell matches, the slowest cell (highest
    median RTF) stands in and ``reason`` says so.
    """
    if not len(cells):
        return {}
    if baseline_cell is not None:
        if baseline_cell not in cells.index:
            raise UserError(f"baseline cell {baseline_cell!r} is not in this run; pick one of "
                            f"{', '.join(map(str, cells.index))}")
        chosen = cells.loc[baseline_cell]
        settings = {k: chosen[k] for k in SETTINGS
                    if k not in ("cell_label", "gpu", "device_name") and _present(chosen[k])}
        wanted = f"cell {baseline_cell} ({chosen['cell_label']})"
    else:
        settings = dict(DEFAULT_BASELINE)
        wanted = "40 steps, independent CFG, 640 latents"
    out: dict[str, Baseline] = {}
    matches = np.ones(len(cells), dtype=bool)
    for k, v in settings.items():
        matches &= (column(cells, k) == v).to_numpy(dtype=bool)
    # Columns a run predates (e.g. attention) count as their default.
    changed = sum((cells[k] != v).to_numpy(dtype=int) if k in cells.columns
                  else np.zeros(len(cells), dtype=int) for k, v in PLAIN_EXECUTION.items())
    hardware_of = cells["hardware"].astype(str).to_numpy()
    for hw in dict.fromkeys(hardware_of):
        here = hardware_of == hw
        if baseline_cell is not None and bool((cells.index[here] == baseline_cell).any()):
            out[hw] = Baseline(hw, baseline_cell, f"chosen: {wanted}")
            continue
        match = np.flatnonzero(here & matches)
        if baseline_cell is None and match.size:
            match = match[np.argsort(np.asarray(changed)[match], kind="stable")]
        if match.size:
            out[hw] = Baseline(hw, str(cells.index[match[0]]),
                               f"{wanted} (the production default)" if baseline_cell is None
                               else f"same settings as {wanted}")
        else:
            group = cells[here]
            rtf = group["rtf_median"].astype(float)
            slowest = str(rtf.idxmax()) if rtf.notna().any() else str(group.index[0])
            out[hw] = Baseline(hw, slowest, f"no cell with {wanted} on {hw}; the slowest cell "
                               "(highest median RTF) stands in")
    return out


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Choice:
    """The fastest acceptable cell on one hardware (see :func:`headline`)."""

    hardware: str
    cell_id: str
    cell_label: str
    rtf: float
    speedup_rtf: float
    corpus_wer: float
    wer_limit: float
    cost_per_audio_hour: float
    speed_only: bool
    note: str


def pick_headline(cells: pd.DataFrame, ev: Evidence,
                  wer_budget_points: float = DEFAULT_WER_BUDGET_POINTS,
                  baseline_cell: str | None = None, *, among: Collection[str] | None = None
                  ) -> tuple[dict[str, Baseline], pd.DataFrame, list[Choice]]:
    """The one way to the headline, for the report, its stability, the adaptive policy
    and its replay: the baselines (:func:`choose_baselines`), each cell's budget held
    against its baseline's WER on the units it ran
    (:func:`bench.analysis.evidence.add_paired_baseline_wer`), then the choice
    (:func:`headline`).
    Each choice's note says what the run resolves against the budget
    (:mod:`bench.analysis.resolution`). Returns the baselines, ``cells`` with the paired
    column, and the choices."""
    baselines = choose_baselines(cells, baseline_cell)
    cells = add_paired_baseline_wer(cells, ev, baseline_of(cells, baselines))
    choices = headline(cells, baselines, wer_budget_points, among=among)
    if ev.quality == "ok":  # the budget against what the run resolves
        resolved = wer_resolution(ev, cells, {hw: b.cell_id for hw, b in baselines.items()},
                                  wer_budget_points)
        choices = [replace(c, note=f"{c.note}; {resolved[c.hardware].text()}")
                   if c.hardware in resolved else c for c in choices]
    return baselines, cells, choices


def headline(cells: pd.DataFrame, baselines: Mapping[str, Baseline],
             wer_budget_points: float = DEFAULT_WER_BUDGET_POINTS, *,
             among: Collection[str] | None = None) -> list[Choice]:
    """Per hardware: the cell with the lowest median RTF whose corpus WER is at most the
    baseline's plus ``wer_budget_points`` percentage points (0.5 -> +0.005).

    Only usable cells compete (:func:`bench.scoring.outcomes.usable`: every generation produced
    speech); under a WER budget, only cells with a WER. A cell without quality figures
    never switches the budget off for the others. When the hardware's quality is not
    meaningful (random weights or ASR) or not scored at all, the choice is the fastest
    usable cell, marked ``speed_only``. With no cell left, the choice names none
    (``cell_id`` empty) and its note says why.

    ``among`` (an adaptive run): only these cells and the baselines compete, the cells
    the policy left in contention (:attr:`bench.analysis.adaptive.Decision.contenders`).
    A cell the policy stopped, say for being no more than the speed tolerance faster
    than a cell surely within the budget, has a WER from a few prompts; its point
    estimate must not outbid the cells the policy kept.
    """
    choices = []
    for hardware, group in cells.groupby("hardware", sort=False):
        hw = str(hardware)
        base = baselines.get(hw)
        if base is None:
            continue
        ranked = group[group["rtf_median"].notna()].sort_values("rtf_median", kind="stable")
        if not len(ranked):
            continue
        eligible = usable_mask(ranked)
        if among is not None:
            kept = set(among) | {base.cell_id}
            eligible &= np.asarray([str(c) in kept for c in ranked.index], dtype=bool)
        candidates = ranked[eligible]
        left_out = int((~usable_mask(group)).sum())
        base_row: dict[Any, Any] = cells.loc[base.cell_id].to_dict()
        base_wer = float(base_row["corpus_wer"])
        statuses = set(group["quality"])
        meaningful = "not meaningful" not in statuses and math.isfinite(base_wer)
        limit = base_wer + wer_budget_points / 100.0 if meaningful else math.nan
        if meaningful:
            limits = _paired(candidates, PAIRED_BASELINE_WER, base_wer) + wer_budget_points / 100.0
            wers = _paired(candidates, PAIRED_CELL_WER, candidates["corpus_wer"])
            within = wers <= limits + 1e-12
            fits = candidates[within]
            limit = float(limits[within][0]) if within.any() else limit  # the pick's own
            note = (f"fastest usable cell with corpus WER within {wer_budget_points:g} points "
                    f"of the baseline ({base_wer * 100:.2f} % + {wer_budget_points:g})")
        else:
            fits = candidates
            why = (f"quality {NOT_MEANINGFUL}" if "not meaningful" in statuses
                   else "quality not scored")
            note = f"speed-only choice: {why}; the fastest usable cell is shown"
        if left_out:
            note += (f"; {left_out} cell{'s' if left_out != 1 else ''} with failed, NaN or "
                     "silent generations left out")
        if not usable(base_row):
            note += f"; the baseline itself has {_no_speech_text(base_row)}"
        if len(fits):
            pick: dict[Any, Any] = fits.iloc[0].to_dict()
            if meaningful:  # the WER the budget was checked with: on the shared units
                pick["corpus_wer"] = float(wers[within][0])
            choices.append(_choice(hw, pick, limit, not meaningful, note))
        else:
            choices.append(Choice(
                hardware=hw, cell_id="", cell_label="no cell qualifies", rtf=math.nan,
                speedup_rtf=math.nan, corpus_wer=math.nan, wer_limit=limit,
                cost_per_audio_hour=math.nan, speed_only=not meaningful,
                note=f"no recommendation: no usable cell{' within the budget' if meaningful else ''}"
                     f" ({note})"))
    return choices


def baseline_of(cells: pd.DataFrame, baselines: Mapping[str, Baseline]) -> dict[str, str]:
    """cell id -> its hardware's baseline cell id (cells whose hardware has none left out)."""
    return {str(cid): baselines[str(hw)].cell_id
            for cid, hw in zip(cells.index, cells["hardware"], strict=True)
            if str(hw) in baselines}


def _paired(cells: pd.DataFrame, name: str, fallback: Any) -> npt.NDArray[np.float64]:
    """A paired WER column (:func:`bench.analysis.evidence.add_paired_baseline_wer`: the
    baseline's, or the cell's own, over the units both ran, which matters when cells ran
    different prompts, as in an adaptive run), ``fallback`` where it is missing."""
    paired = (cells[name].to_numpy(dtype=np.float64) if name in cells.columns
              else np.full(len(cells), math.nan))
    return np.where(np.isfinite(paired), paired, np.asarray(fallback, dtype=np.float64))


def _choice(hardware: str, pick: Mapping[Any, Any], limit: float, speed_only: bool,
            note: str) -> Choice:
    return Choice(
        hardware=hardware, cell_id=str(pick["cell_id"]), cell_label=str(pick["cell_label"]),
        rtf=float(pick["rtf_median"]), speedup_rtf=float(pick.get("speedup_rtf", math.nan)),
        corpus_wer=float(pick["corpus_wer"]), wer_limit=limit,
        cost_per_audio_hour=float(pick.get("cost_per_audio_hour", math.nan)),
        speed_only=speed_only, note=note)


def _no_speech_text(row: Mapping[Any, Any]) -> str:
    parts = [f"{int(row.get(k) or 0)} {what}" for k, what in (
        ("n_failed", "failed"), ("n_nan", "NaN"), ("n_silent", "silent")) if row.get(k)]
    return (", ".join(parts) or "no completed") + " generations"
