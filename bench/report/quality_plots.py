"""The speed frontier against the metrics beyond WER (SIM, UTMOS): one panel each.

Median RTF (log x, lower is faster) against the cell's mean score with its bootstrap
interval (higher is better); the cells no other cell beats on both are joined by a step
line, and control rows (the set's own recordings, which cost no generation) are drawn as
horizontal reference lines. Only rows whose quality means something are drawn: SIM of
random weights (about 0.43 with bars in the smoke run) is noise, and a plot of noise with
"not meaningful" on its axis is still read as a measurement. Same style as
:mod:`bench.report.plots`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench.analysis.quality import Metric, meaningful_rows
from bench.report.plots import _figure, _png, colour


def frontier_beyond_wer(figures: pd.DataFrame, controls: pd.DataFrame,
                        metrics: Sequence[Metric]) -> bytes | None:
    """PNG of RTF against each frontier metric present, over the rows whose quality is
    meaningful; None when there is no such metric or no such generated cell with an RTF."""
    figures, controls = meaningful_rows(figures), meaningful_rows(controls)
    drawn = [m for m in metrics if m.frontier and figures[m.name].notna().any()]
    generated = figures[~figures["control"].astype(bool)]
    if not drawn or not generated["rtf_median"].notna().any():
        return None
    with _figure(4.2 * len(drawn), 3.8, ncols=len(drawn)) as (fig, axes):
        for ax, metric in zip(axes, drawn, strict=True):
            y = generated[metric.name].astype(float)
            err = np.vstack([(y - generated[f"{metric.name}_lo"]).clip(lower=0).fillna(0),
                             (generated[f"{metric.name}_hi"] - y).clip(lower=0).fillna(0)])
            ax.errorbar(generated["rtf_median"], y, yerr=err, fmt="o", color=colour(0),
                        ecolor=colour(0), alpha=0.8, markersize=5, zorder=3)
            front = generated[generated[f"front_{metric.name}"].astype(bool)]
            front = front.sort_values("rtf_median")
            if len(front):
                ax.step(front["rtf_median"], front[metric.name], where="post",
                        color=colour(0), linewidth=1.2, label="frontier", zorder=2)
            for i, (_, row) in enumerate(controls.iterrows()):
                if pd.notna(row.get(metric.name)):
                    ax.axhline(float(row[metric.name]), color=colour(i + 1), linestyle="--",
                               linewidth=1, label=f"control: {row['cell_label']}")
            ax.set_xscale("log")
            ax.set_xlabel("median RTF (log scale; lower is faster)")
            ax.set_ylabel(metric.label)
            ax.set_title(f"Speed against {metric.label}: upper-left is better")
            ax.legend(loc="best", frameon=False)
        return _png(fig)
