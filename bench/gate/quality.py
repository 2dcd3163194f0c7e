"""Gate checks on naturalness: UTMOS non-inferiority, beside WER, CER and SIM.

UTMOS is a predicted mean opinion score (1-5, higher is better). Like SIM, the gate judges
the *loss* (baseline minus candidate) against ``[gate] utmos_margin`` with a paired,
prompt-clustered bootstrap interval: the candidate passes when the whole interval of the
loss lies below the margin. Generations the metric skipped (``utmos`` missing, with a
``utmos_skipped`` reason) are left out of the pairs; a run with no UTMOS at all gets no
check rather than a fake one. Random weights are already reported by the WER check as
"not meaningful", so no naturalness check is added for them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.analysis.cells import column
from bench.gate.verdict import Check, GateThresholds, _first_per_pair, _non_inferiority
from bench.scoring.stats import bootstrap_ratio_replicates, percentile_interval

__all__ = ["check_naturalness", "paired_mean_loss"]


def paired_mean_loss(base: pd.DataFrame, cand: pd.DataFrame, name: str, *, n_boot: int,
                     seed: int) -> tuple[int, float, float, float] | None:
    """(prompts, baseline - candidate mean of ``name``, 95 % CI) over (prompt, seed) pairs
    scored on both sides; None when no pair is."""
    a = _first_per_pair(base, name)
    b = _first_per_pair(cand, name)
    keys = sorted(set(a) & set(b), key=repr)
    if not keys:
        return None
    values = np.array([[a[k], b[k]] for k in keys])
    clusters = [k[0] for k in keys]
    reps = bootstrap_ratio_replicates(values, np.ones_like(values), clusters, n_boot=n_boot,
                                      seed=seed)
    low, high = percentile_interval(reps[:, 0] - reps[:, 1])
    return len(set(clusters)), float(values[:, 0].mean() - values[:, 1].mean()), low, high


def check_naturalness(base: pd.DataFrame, cand: pd.DataFrame, t: GateThresholds
                      ) -> list[Check]:
    """The UTMOS non-inferiority check, or none when UTMOS was not scored or the weights
    are random."""
    both = pd.concat([base, cand], ignore_index=True)
    if any(bool(v) is True for v in column(both, "random_weights").dropna()):
        return []
    loss = paired_mean_loss(base, cand, "utmos", n_boot=t.n_boot, seed=t.seed)
    if loss is None:
        return []
    n, delta, low, high = loss
    return [_non_inferiority("quality.utmos", "UTMOS loss", n, delta, low, high,
                             t.utmos_margin, t.min_prompts, "")]
