"""How good a choice is: a headline's choice judged by regret, not by agreement.

Two cells can be equally good answers: near-ties in speed are normal, and the full run's
own choice among them turns on which prompts ran (:mod:`bench.analysis.stability`). So a
choice is *as good* when it is acceptable and nearly as fast as the best acceptable cell:

* against the truth of a constructed run (``truth.json``, written by the generator beside
  its records: cell id -> expected corpus WER on its prompt set, median RTF, hardware,
  usable): true WER within the budget of the baseline's true WER, and true RTF within
  ``tolerance`` of the truly best such cell;
* against a full run, where no truth is known: the full run's own figures in place of
  the truth, its choice's median RTF as the best.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis.evidence import PAIRED_BASELINE_WER
from bench.core.errors import UserError
from bench.scoring.outcomes import usable_mask

#: A choice within this share of the best acceptable cell's RTF is as good (the issue's
#: and the replay's yardstick; the policy itself stops near-ties at a tighter 3 %).
AS_GOOD_TOLERANCE = 0.05


@dataclass(frozen=True)
class CellTruth:
    """A constructed cell's truth: expected corpus WER (fraction) on the run's prompts,
    median RTF, hardware, and whether every generation produces speech."""

    wer: float
    rtf: float
    hardware: str
    usable: bool = True


def load_truth(path: Path) -> dict[str, CellTruth]:
    """``truth.json``: ``{cell id: {"wer", "rtf", "hardware"[, "usable"]}}``."""
    try:
        raw = json.loads(Path(path).read_text())
        return {str(cid): CellTruth(float(t["wer"]), float(t["rtf"]), str(t["hardware"]),
                                    bool(t.get("usable", True)))
                for cid, t in raw.items()}
    except FileNotFoundError:
        raise UserError(f"truth file {path} not found; pass the truth.json a constructed "
                        "run's generator wrote beside its records") from None
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise UserError(f"truth file {path} is not a map of cell id -> {{wer, rtf, hardware}}"
                        f" ({type(err).__name__}: {err}); regenerate it") from None


@dataclass(frozen=True)
class Yardstick:
    """Per hardware, what a choice is held to: ``limit`` per cell (the highest WER that is
    within the budget) and ``best`` (the RTF of the fastest acceptable cell; NaN when no
    cell is acceptable, where only "no choice" is as good)."""

    wer: Mapping[str, float]
    rtf: Mapping[str, float]
    usable: Mapping[str, bool]
    limit: Mapping[str, float]
    best: Mapping[str, float]
    tolerance: float = AS_GOOD_TOLERANCE

    def acceptable(self, cid: str) -> bool:
        wer, limit = self.wer.get(cid, math.nan), self.limit.get(cid, math.nan)
        within = math.isnan(limit) or wer <= limit + 1e-12
        return bool(self.usable.get(cid, False)) and within

    def as_good(self, hardware: str, cid: str) -> bool:
        best = self.best.get(hardware, math.nan)
        if not cid or math.isnan(best):
            return not cid and math.isnan(best)
        return self.acceptable(cid) and self.rtf[cid] <= best * (1.0 + self.tolerance) + 1e-12


def truth_yardstick(truth: Mapping[str, CellTruth], baselines: Mapping[str, str],
                    wer_budget_points: float, speed_only: bool,
                    tolerance: float = AS_GOOD_TOLERANCE) -> Yardstick:
    """The yardstick of a constructed run's truth; ``baselines``: hardware -> cell id."""
    budget = wer_budget_points / 100.0
    limit = {}
    for cid, t in truth.items():
        base = truth.get(baselines.get(t.hardware, ""))
        limit[cid] = math.nan if speed_only or base is None else base.wer + budget
    stick = Yardstick({c: t.wer for c, t in truth.items()}, {c: t.rtf for c, t in truth.items()},
                      {c: t.usable for c, t in truth.items()}, limit, {}, tolerance)
    best: dict[str, float] = {}
    for cid, t in truth.items():  # the fastest acceptable cell per hardware
        best.setdefault(t.hardware, math.nan)
        if stick.acceptable(cid) and (math.isnan(best[t.hardware]) or t.rtf < best[t.hardware]):
            best[t.hardware] = t.rtf
    return replace(stick, best=best)


def run_yardstick(cells: pd.DataFrame, choices: Mapping[str, str], wer_budget_points: float,
                  speed_only: bool, tolerance: float = AS_GOOD_TOLERANCE) -> Yardstick:
    """The yardstick of a full run (``cells``: its summary with the paired baseline
    WER, :func:`bench.analysis.headline.pick_headline`): its figures stand for the truth
    and its choice's median RTF is the best (hardware -> cell id in ``choices``)."""
    budget = wer_budget_points / 100.0
    ids = [str(c) for c in cells.index]
    paired = (cells[PAIRED_BASELINE_WER] if PAIRED_BASELINE_WER in cells.columns
              else pd.Series(math.nan, index=cells.index))
    limit = {c: math.nan if speed_only else float(p) + budget
             for c, p in zip(ids, paired, strict=True)}
    rtf = dict(zip(ids, cells["rtf_median"].astype(float), strict=True))
    best = {hw: rtf[c] if c else math.nan for hw, c in choices.items()}
    return Yardstick(dict(zip(ids, cells["corpus_wer"].astype(float), strict=True)), rtf,
                     dict(zip(ids, usable_mask(cells), strict=True)), limit, best, tolerance)


def share(flags: list[Any]) -> float:
    return sum(bool(f) for f in flags) / len(flags) if flags else math.nan
