"""The history-aware nightly replayed over two stored full runs of the same spec (last
night's and tonight's): what tonight's run would have spent and which cells it would have
flagged, against what comparing the two full runs flags (``echo-bench nightly-replay``).

A replay runs no generation. It shuffles the draws (a prompt with a seed; one seeded
order per replay), cuts them into the nightly's looks
(:func:`bench.spec.history_aware.looks`), and lets every still-open cell read tonight's
stored records of exactly the draws it would have run, paired with last night's twins. What it spends is tonight's compute seconds of those
generations, as a share of tonight's full run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.analysis.nightly import CellNight, NightSettings, TwinMatrix, twin_table
from bench.spec.history_aware import looks


@dataclass(frozen=True)
class NightReplay:
    """Over ``replays`` prompt orders: the mean and 90th percentile share of tonight's
    full compute seconds spent, per cell the share of replays that flagged a step
    (``flagged``), the full comparison per cell (``full``) and the cells it flags
    (``full_flags``), and the share of replays whose flags equal the full comparison's
    (``agreement``)."""

    replays: int
    compute_spent_mean: float
    compute_spent_p90: float
    flagged: dict[str, float]
    full: dict[str, CellNight]
    agreement: float

    @property
    def full_flags(self) -> list[str]:
        return [c for c, night in self.full.items() if night.state == "step"]

    def to_json(self) -> dict[str, object]:
        return {"replays": self.replays, "compute_spent_mean": self.compute_spent_mean,
                "compute_spent_p90": self.compute_spent_p90, "flagged": self.flagged,
                "full_flags": self.full_flags, "agreement": self.agreement,
                "full": {c: n.to_dict() for c, n in self.full.items()}}

    def lines(self) -> list[str]:
        out = [f"{self.replays} replays: tonight would have spent "
               f"{self.compute_spent_mean:.1%} of the full run's compute seconds on average "
               f"(p90 {self.compute_spent_p90:.1%}); flags equal the full comparison's in "
               f"{self.agreement:.0%} of replays",
               "full comparison flags: " + (", ".join(self.full_flags) or "none")]
        for cid, share in self.flagged.items():
            if share or cid in self.full_flags:
                out.append(f"  {cid}: flagged in {share:.0%} of replays; full: "
                           f"{self.full[cid].summary()}")
        return out


def replay_nights(reference: pd.DataFrame, tonight: pd.DataFrame, *, replays: int = 100,
                  seed: int = 0, settings: NightSettings | None = None) -> NightReplay:
    """Replay the history-aware nightly ``replays`` times over two full runs."""
    settings = settings or NightSettings()
    matrix = TwinMatrix.of(twin_table(reference, tonight))
    n, columns = len(matrix.draws), list(range(len(matrix.cells)))
    full_seconds = float(matrix.seconds.sum())
    full = matrix.judge(range(n), columns, settings)
    full_flags = {c for c, night in full.items() if night.state == "step"}
    spent, agree = [], []
    flags = dict.fromkeys(matrix.cells, 0)
    for r in range(replays):
        order = np.random.default_rng(seed + r).permutation(n).astype(np.intp)
        ends = np.cumsum([len(b) for b in looks(list(order), settings.first_batch,
                                                  settings.batch)])
        active, seconds, flagged = columns, 0.0, set()
        for end in ends:
            nights = matrix.judge(order[:end], active, settings)
            done = [j for j in active if nights[matrix.cells[j]].state != "open"]
            if end == n:
                done = active
            for j in done:
                seconds += float(matrix.seconds[order[:end], j].sum())
                if nights[matrix.cells[j]].state == "step":
                    flagged.add(matrix.cells[j])
                    flags[matrix.cells[j]] += 1
            active = [j for j in active if j not in done]
            if not active:
                break
        spent.append(seconds / full_seconds if full_seconds > 0 else np.nan)
        agree.append(flagged == full_flags)
    return NightReplay(replays, float(np.mean(spent)), float(np.percentile(spent, 90)),
                       {c: k / replays for c, k in flags.items()}, full,
                       float(np.mean(agree)))
