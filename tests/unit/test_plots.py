"""What the report's speed figures draw, read from the matplotlib figure (not pixels):
random-weight WER is never plotted, the real-weights frontier still is."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from bench.report import plots


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Figure]]:
    """The figures the plot functions draw, kept instead of rendered to PNG."""
    figures: list[Figure] = []

    def keep(fig: Figure) -> bytes:
        figures.append(fig)
        return b""

    monkeypatch.setattr(plots, "_png", keep)
    yield figures


def cells() -> pd.DataFrame:
    """Four scored cells on one CPU: RTF 0.1-0.4, WER 2-5 (as fractions, 0.02-0.05)."""
    rtf = [0.1, 0.2, 0.3, 0.4]
    wer = [0.05, 0.03, 0.04, 0.02]
    return pd.DataFrame({
        "cell_id": list("abcd"), "hardware": ["cpu"] * 4,
        "cell_label": [f"steps={s} cfg={m} dtype=float32" for s, m in
                       [(4, "none"), (8, "none"), (4, "joint"), (8, "joint")]],
        "cfg_mode": ["none", "none", "joint", "joint"], "num_steps": [4, 8, 4, 8],
        "sequence_length": [64] * 4,
        "rtf_median": rtf, "rtf_p10": [r * 0.9 for r in rtf],
        "rtf_p90": [r * 1.2 for r in rtf[:3]] + [np.inf],  # d had a silent generation
        "corpus_wer": wer, "corpus_wer_lo": [w - 0.01 for w in wer],
        "corpus_wer_hi": [w + 0.01 for w in wer], "front_hw": [True, True, False, True],
    }).set_index("cell_id", drop=False)


def texts(fig: Figure) -> str:
    ax = fig.axes[0]
    title = fig.get_suptitle()
    return " ".join([title, ax.get_title(), ax.get_xlabel(), ax.get_ylabel()])


def test_random_weights_frontier_draws_speed_per_cell_and_no_wer(drawn: list[Figure]) -> None:
    table = cells()
    plots.frontier(table, quality_meaningful=False)
    (fig,) = drawn
    (ax,) = fig.axes
    assert "WER" not in ax.get_ylabel() and "WER" not in ax.get_xlabel()
    assert "not meaningful" in texts(fig)  # the figure itself says why
    # One bar per cell, its length the median RTF; nothing plotted on a WER scale.
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert sorted(b.get_width() for b in bars) == pytest.approx(sorted(table["rtf_median"]))
    assert not [c for c in ax.collections if isinstance(c, PathCollection)]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert "steps=8 cfg=joint" in labels  # the setting every cell shares is left out


def test_real_weights_frontier_still_plots_wer(drawn: list[Figure]) -> None:
    table = cells()
    plots.frontier(table, quality_meaningful=True)
    (fig,) = drawn
    ax = fig.axes[0]
    assert ax.get_ylabel() == "corpus WER (%)" and ax.get_xscale() == "log"
    points = np.vstack([c.get_offsets() for c in ax.collections
                        if isinstance(c, PathCollection) and len(c.get_offsets())])
    expected = np.column_stack([table["rtf_median"], table["corpus_wer"] * 100])
    order = np.argsort(points[:, 0])
    np.testing.assert_allclose(points[order], expected[np.argsort(expected[:, 0])])


def test_steps_figure_drops_the_wer_panel_for_random_weights(drawn: list[Figure]) -> None:
    plots.steps(cells(), quality_meaningful=False)
    plots.steps(cells(), quality_meaningful=True)
    random, real = drawn
    assert len(random.axes) == 1 and "WER" not in random.axes[0].get_ylabel()
    assert len(real.axes) == 2 and "WER" in real.axes[1].get_ylabel()
