"""How firmly a run's prompts support its headline and its frontier: both recomputed on
bootstrap resamples of the prompts.

The headline's choice is a point decision on noisy figures (the fastest cell whose corpus
WER is within the budget of the baseline's). When a contender's WER sits near the budget's
edge, or two cells are nearly as fast, another draw of prompts of the same kind would
often name another cell, and no interval on a single cell says so. Each resample draws
the run's prompts with replacement (every generation of a drawn prompt comes with it, in
every cell at once, as the paired intervals do), recomputes every cell's median RTF and
corpus WER, and applies :func:`bench.analysis.headline.headline` with the full run's
baselines and usability (a cell with a failed or silent generation stays out, whichever
prompts are drawn). The share of resamples naming the full run's choice is its stability.
The same resamples give the main frontier's: how often the whole set comes out the same,
and how often each cell is on it.

The adaptive replay prints it beside its agreement: where the full run's own choice is
unstable, a policy agrees with it only by running the contenders on nearly every prompt.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.analysis.evidence import (
    PAIRED_BASELINE_WER,
    Evidence,
    cell_summary,
)
from bench.analysis.frontier import frontier_set
from bench.analysis.headline import baseline_of, headline, pick_headline
from bench.scoring.stats import cluster_codes, resample_counts

DEFAULT_RESAMPLES = 200
#: Below this many prompts the resamples are too few distinct draws to mean much (the
#: adaptive first batch's floor at 95 %, :func:`bench.spec.adaptive.min_first_batch`).
FEW_PROMPTS = 6


#: The cell-summary columns :func:`bench.analysis.headline.headline` reads (usability
#: included; the frontier reads a subset); a test checks the choices agree with the whole
#: frame's.
_HEADLINE_READS = ("cell_id", "cell_label", "hardware", "rtf_median", "corpus_wer", "quality",
                   "n_ok", "n_failed", "n_nan", "n_silent", PAIRED_BASELINE_WER)


@dataclass(frozen=True)
class HeadlineStability:
    """One hardware's headline under ``n_resamples`` prompt resamples: the full run's
    choice (``""`` for none), the share of resamples naming it, and the other choices
    named, most frequent first (cell id -> share)."""

    hardware: str
    choice: str
    same: float
    n_resamples: int
    others: dict[str, float]
    n_prompts: int

    def text(self, names: Mapping[str, str] | None = None) -> str:
        """In words, for the report and the replay summary; the runners-up by their
        ``names`` (cell id -> label) where given, else by id."""
        names = names or {}
        head = f"same choice in {self.same:.0%} of {self.n_resamples} prompt resamples"
        if self.others:
            head += " (else " + ", ".join(
                f"{names.get(cid, cid) or 'none'} {share:.0%}"
                for cid, share in list(self.others.items())[:3]) + ")"
        if self.n_prompts < FEW_PROMPTS:
            head += (f"; only {self.n_prompts} prompt{'s' if self.n_prompts != 1 else ''}: "
                     f"resamples of so few say little")
        return head


@dataclass(frozen=True)
class FrontierStability:
    """The main frontier under ``n_resamples`` prompt resamples: the share of resamples
    whose set is exactly the full run's, and per cell the share in which it is on its
    hardware's frontier."""

    same_set: float
    membership: dict[str, float]
    n_resamples: int


@dataclass(frozen=True)
class Stability:
    """The headline's stability per hardware and the main frontier's, from one set of
    prompt resamples."""

    headline: dict[str, HeadlineStability]
    frontier: FrontierStability


def resampled_stability(ev: Evidence, wer_budget_points: float, baseline_cell: str | None = None,
              n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Stability:
    """The headline and the main frontier (:func:`bench.analysis.frontier.frontier_set`)
    over ``n_resamples`` seeded prompt resamples of ``ev`` (see the module docstring);
    no headlines, and a NaN frontier share, when the run has no prompts. A frontier set
    rests on every near-tie on it at once, so it is far less stable than the headline;
    each cell's membership share says which of its places are firm."""
    if not len(ev.units):
        return Stability({}, FrontierStability(math.nan, {}, n_resamples))
    baselines, cells, picked = pick_headline(cell_summary(ev), ev, wer_budget_points,
                                             baseline_cell)
    base_of = baseline_of(cells, baselines)
    speed_only = ev.quality != "ok"
    full_choices = {c.hardware: c.cell_id for c in picked}
    full_front = frontier_set(cells, speed_only=speed_only)
    per_cell = _PerCell(ev.units, list(cells.index), base_of)
    tallies: dict[str, Counter[str]] = {hw: Counter() for hw in full_choices}
    same_front = 0
    on_front: Counter[str] = Counter()
    # Only what the headline and the frontier read, as plain Python objects: copying and
    # reading the settings columns, or Arrow-backed strings, 200 times would cost several
    # times more.
    frame = cells[[c for c in _HEADLINE_READS if c in cells.columns]].astype(object)
    for weights in resample_counts(per_cell.n_prompts, n_resamples, seed):
        resampled = frame.copy()
        (resampled["rtf_median"], resampled["corpus_wer"],
         resampled[PAIRED_BASELINE_WER]) = per_cell.figures(weights)
        for pick in headline(resampled, baselines, wer_budget_points):
            tallies.setdefault(pick.hardware, Counter())[pick.cell_id] += 1
        front = frontier_set(resampled, speed_only=speed_only)
        same_front += front == full_front
        on_front.update(front)
    headlines = {}
    for hw, choice in full_choices.items():
        tally = tallies[hw]
        others = {cid: n / n_resamples for cid, n in tally.most_common() if cid != choice}
        headlines[hw] = HeadlineStability(hw, choice, tally[choice] / n_resamples,
                                          n_resamples, others, per_cell.n_prompts)
    membership = {str(c): on_front[str(c)] / n_resamples for c in cells.index}
    return Stability(headlines, FrontierStability(same_front / n_resamples, membership,
                                                  n_resamples))


_Sums = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None


class _PerCell:
    """Each cell's generations arranged so one resample's figures are a few array
    operations: RTFs sorted with their prompt's index (for a weighted median), and word
    errors and reference words summed per prompt, the cell's own and its baseline's on
    the same units (the paired reference of the WER budget)."""

    def __init__(self, units: pd.DataFrame, cell_ids: list[str],
                 baseline_of: Mapping[str, str]) -> None:
        codes = cluster_codes(list(units["prompt_id"].astype(str)), len(units))
        self.n_prompts = int(codes.max()) + 1
        self.rtf: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]] = []
        self.wer: list[_Sums] = []
        self.base_wer: list[_Sums] = []
        cell_of = units["cell_id"].astype(str).to_numpy()
        unit = cluster_codes(list(units["unit"].astype(str)), len(units))
        ok_all = units["ok"].to_numpy(dtype=bool)
        rtf_all = units["rtf"].to_numpy(dtype=np.float64)
        num_all = units["wer_num"].to_numpy(dtype=np.float64)
        den_all = units["wer_den"].to_numpy(dtype=np.float64)
        for cid in cell_ids:
            mine = cell_of == cid
            ok = ok_all & mine
            rtf = rtf_all[ok]
            keep = ~np.isnan(rtf)
            order = np.argsort(rtf[keep], kind="stable")
            self.rtf.append((rtf[keep][order], codes[ok][keep][order]))
            self.wer.append(self._sums(codes, num_all, den_all, mine))
            shared = np.zeros(int(unit.max()) + 1, dtype=bool)
            shared[unit[mine]] = True  # the units this cell ran, by code
            base = cell_of == baseline_of.get(cid, "")
            self.base_wer.append(self._sums(codes, num_all, den_all, base & shared[unit]))

    def _sums(self, codes: npt.NDArray[np.int64], num: npt.NDArray[np.float64],
              den: npt.NDArray[np.float64], rows: npt.NDArray[np.bool_]) -> _Sums:
        scored = rows & ~np.isnan(den)
        if not scored.any():
            return None
        return (np.bincount(codes[scored], np.nan_to_num(num[scored]),
                            self.n_prompts).astype(np.float64),
                np.bincount(codes[scored], den[scored], self.n_prompts).astype(np.float64))

    def figures(self, weights: npt.NDArray[np.float64]
                ) -> tuple[list[float], list[float], list[float]]:
        """Every cell's median RTF, corpus WER and its baseline's corpus WER on the same
        units, when prompt k is drawn weights[k] times."""
        medians = [_weighted_median(values, weights[prompts]) for values, prompts in self.rtf]
        return medians, _ratios(self.wer, weights), _ratios(self.base_wer, weights)


def _ratios(sums: list[_Sums], weights: npt.NDArray[np.float64]) -> list[float]:
    out = []
    for pair in sums:
        den = float(pair[1] @ weights) if pair is not None else 0.0
        out.append(float(pair[0] @ weights) / den if pair is not None and den > 0 else math.nan)
    return out


def _weighted_median(ordered: npt.NDArray[np.float64], weights: npt.NDArray[np.float64]
                     ) -> float:
    """The median of ``ordered`` (ascending) with each value repeated weights[i] times, as
    numpy's median of the repeated values would give it (infinities count as the largest
    values, and a middle pair holding one is infinite, as in the cell summary)."""
    total = int(weights.sum())
    if total == 0:
        return math.nan
    ends = np.cumsum(weights)
    lo = ordered[int(np.searchsorted(ends, (total - 1) // 2, side="right"))]
    hi = ordered[int(np.searchsorted(ends, total // 2, side="right"))]
    return float(hi) if math.isinf(hi) else float((lo + hi) / 2)
