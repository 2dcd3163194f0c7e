"""What a run can resolve: the paired WER difference its prompts pin down, beside the
headline's WER budget.

A budget smaller than what the run resolves cannot be decided by the run: a cell truly
inside it reads as outside it about as often as not, and the headline's choice among the
cells near the edge turns on which prompts ran (:mod:`bench.analysis.stability`). The
resolution is the half-width of an ordinary 95 % interval of the paired corpus WER
difference between the baseline and a typical usable cell on its hardware (the median
over cells of the per-prompt spread), at the prompts the run has; where the budget is
smaller, it says how many prompts the budget would need.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.analysis.evidence import WER, Evidence, paired_prompt_sums
from bench.analysis.sequential import confidence_sequence, fixed_half_width, prompts_needed
from bench.scoring.outcomes import usable_mask


@dataclass(frozen=True)
class Resolution:
    """One hardware: the prompts the comparison rests on, the paired WER difference they
    resolve (``half_width``, a fraction), the budget (a fraction) and the prompts the
    budget would need (0 when the run already resolves it)."""

    hardware: str
    n_prompts: int
    half_width: float
    budget: float
    prompts_needed: int

    def text(self) -> str:
        out = (f"at its {self.n_prompts} prompts the run resolves a paired WER difference "
               f"of about ±{self.half_width * 100:.2f} points (95 %)")
        if self.prompts_needed:
            out += (f": below that, the {self.budget * 100:g}-point budget is not decided by "
                    f"the run; it needs about {self.prompts_needed} prompts")
        return out


def wer_resolution(ev: Evidence, cells: pd.DataFrame, baselines: Mapping[str, str],
                   wer_budget_points: float) -> dict[str, Resolution]:
    """Per hardware with a scored baseline (``baselines``: hardware -> cell id) and at
    least two prompts: see the module docstring. ``cells`` is the cell summary."""
    dense, present = ev.dense, ev.present()
    col = {c: k for k, c in enumerate(dense.cells)}
    budget = wer_budget_points / 100.0
    fine = usable_mask(cells)
    out: dict[str, Resolution] = {}
    for hardware, base in baselines.items():
        others = [col[str(c)] for c, hw, ok in zip(cells.index, cells["hardware"], fine,
                                                   strict=True)
                  if str(hw) == hardware and ok and str(c) != base and str(c) in col]
        if base not in col or not others:
            continue
        num, den = paired_prompt_sums(dense, present, col[base], np.asarray(others), WER)
        seq = confidence_sequence(num, den, None)
        keep = (seq.n >= 2) & np.isfinite(seq.sd) & (seq.den_mean > 0)
        if not keep.any():
            continue
        n = int(np.median(seq.n[keep]))
        sd, den_mean = float(np.median(seq.sd[keep])), float(np.median(seq.den_mean[keep]))
        half = fixed_half_width(sd, den_mean, n)
        need = prompts_needed(sd, den_mean, budget) if half > budget else 0
        if math.isfinite(half):
            out[hardware] = Resolution(hardware, n, half, budget, need)
    return out
