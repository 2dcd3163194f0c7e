"""The report's plots, as PNG bytes (matplotlib's Agg canvas; no display, no pyplot state).

One style for all: Okabe-Ito colours (distinguishable with the common colour-vision
deficiencies), a marker per CFG mode so colour is never the only cue, labelled axes
with units. Each function takes the per-cell table of :func:`bench.analysis.cells.summarize_cells`
(with costs and frontiers added) and returns ``bytes`` of a PNG.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.analysis.cells import NOT_MEANINGFUL, STAGES

#: Okabe & Ito (2008), "Color Universal Design": black first for single series.
OKABE_ITO: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
)
CFG_MARKERS: dict[str, str] = {"independent": "o", "joint": "s", "alternating": "^", "none": "D"}
LINESTYLES: tuple[str, ...] = ("-", "--", ":", "-.")
STAGE_NAMES: dict[str, str] = {
    "t_text_encode": "text encode", "t_speaker_encode": "speaker encode",
    "t_sampling": "sampling", "t_decode": "decode",
}
_RC: Any = {  # typed loosely: matplotlib types rc keys as a closed Literal set

    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "figure.dpi": 100, "savefig.dpi": 100,
}
DPI = 100


def colour(index: int) -> str:
    """The index-th palette colour (cycles past eight series)."""
    return OKABE_ITO[index % len(OKABE_ITO)]


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI, to embed a plot in a self-contained page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@contextmanager
def _figure(width: float = 7.0, height: float = 4.2, ncols: int = 1
            ) -> Iterator[tuple[Figure, list[Axes]]]:
    with rc_context(_RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        FigureCanvasAgg(fig)
        axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
        yield fig, axes


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    with rc_context(_RC):
        fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _message(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


# Only figures of meaningful quality draw WER (random weights get speed-only figures).
WER_LABEL = "corpus WER (%)"


def _hardware_colours(cells: pd.DataFrame) -> dict[str, str]:
    return {hw: colour(i) for i, hw in enumerate(dict.fromkeys(cells["hardware"]))}


#: The speed-only figure's titles, by why there is no quality axis.
SPEED_ONLY_TITLES: dict[str, str] = {
    "not scored": "Median RTF per cell (quality not scored)",
    "not meaningful": f"Median RTF per cell\nno WER drawn: quality {NOT_MEANINGFUL}",
}


def frontier(cells: pd.DataFrame, quality_meaningful: bool = True) -> bytes:
    """Median RTF (log x) against corpus WER (%) per cell, the Pareto front of each
    hardware as a step line. Runs without a meaningful WER (unscored, or scored with
    random weights or a random ASR) get median RTF per cell instead, with its p10-p90
    range, and the title says why: a WER axis of random figures would be the first
    thing a reader sees and it would mean nothing."""
    with _figure(7.0, 4.6) as (fig, (ax,)):
        wer = cells["corpus_wer"].astype(float) * 100
        if not wer.notna().any():
            return _rtf_bars(fig, ax, cells, SPEED_ONLY_TITLES["not scored"])
        if not quality_meaningful:
            return _rtf_bars(fig, ax, cells, SPEED_ONLY_TITLES["not meaningful"])
        hw_colours = _hardware_colours(cells)
        for hw, group in cells.groupby("hardware", sort=False):
            c = hw_colours[str(hw)]
            for mode, sub in group.groupby("cfg_mode", sort=False):
                ax.scatter(sub["rtf_median"], sub["corpus_wer"] * 100, color=c,
                           marker=CFG_MARKERS.get(str(mode), "o"), s=36, zorder=3,
                           edgecolor="white", linewidth=0.5)
            front = group[group["front_hw"].astype(bool)].sort_values("rtf_median")
            if len(front):
                ax.step(front["rtf_median"], front["corpus_wer"] * 100, where="post",
                        color=c, linewidth=1.2, label=f"{hw} frontier", zorder=2)
            ax.errorbar(group["rtf_median"], group["corpus_wer"] * 100,
                        yerr=_yerr(group), fmt="none", ecolor=c, alpha=0.35, zorder=1)
        for mode, marker in CFG_MARKERS.items():
            if (cells["cfg_mode"] == mode).any():
                ax.scatter([], [], marker=marker, color="grey", label=f"CFG {mode}")
        ax.set_xscale("log")
        ax.set_xlabel("median RTF (compute s per audio s, log scale; lower is faster)")
        ax.set_ylabel(WER_LABEL)
        ax.set_title("Speed/quality frontier: lower-left is better")
        ax.legend(loc="best", frameon=False)
        return _png(fig)


def _yerr(group: pd.DataFrame) -> np.ndarray:
    wer = group["corpus_wer"].astype(float)
    lo = (wer - group["corpus_wer_lo"].astype(float)).clip(lower=0).fillna(0)
    hi = (group["corpus_wer_hi"].astype(float) - wer).clip(lower=0).fillna(0)
    return np.vstack([lo.to_numpy(), hi.to_numpy()]) * 100


def _rtf_bars(fig: Figure, ax: Axes, cells: pd.DataFrame, title: str) -> bytes:
    ordered = cells.sort_values("rtf_median", ascending=False)
    hw_colours = _hardware_colours(cells)
    y = np.arange(len(ordered))
    median = ordered["rtf_median"].astype(float)
    ax.barh(y, median, color=[hw_colours[h] for h in ordered["hardware"]],
            xerr=_rtf_range(ordered), error_kw={"ecolor": "#444444", "capsize": 2,
                                                "linewidth": 0.8})
    ax.set_yticks(y, _distinct_labels([str(label) for label in ordered["cell_label"]]))
    ax.set_xlabel("median RTF, whisker p10-p90\n(compute s per audio s; lower is faster)")
    # Over the figure, not the axes: long cell labels make the axes narrow and an axes
    # title would run off the right edge.
    fig.suptitle(title, fontsize=10)
    if len(hw_colours) > 1:
        for hw, c in hw_colours.items():
            ax.barh([], [], color=c, label=hw)
        ax.legend(frameon=False, loc="lower right")
    fig.set_figheight(max(3.0, 0.25 * len(ordered) + 1.2))
    return _png(fig)


def _distinct_labels(labels: list[str]) -> list[str]:
    """Cell labels without the settings every cell shares (``dtype=float32`` on each bar
    says nothing and squeezes the plot); unchanged where nothing would be left."""
    words = [label.split() for label in labels]
    shared = set.intersection(*(set(w) for w in words)) if words else set()
    short = [" ".join(x for x in w if x not in shared) for w in words]
    return short if all(short) else labels


def _rtf_range(cells: pd.DataFrame) -> np.ndarray:
    """Whisker lengths (below, above) from the median RTF to its p10 and p90; none where
    a bound is missing or infinite (a silent generation's RTF)."""
    median = cells["rtf_median"].astype(float).to_numpy()
    below = median - cells["rtf_p10"].astype(float).to_numpy()
    above = cells["rtf_p90"].astype(float).to_numpy() - median
    out = np.vstack([below, above])
    out[~np.isfinite(out)] = 0.0
    return np.clip(out, 0.0, None)


def steps(cells: pd.DataFrame, quality_meaningful: bool = True) -> bytes:
    """Median RTF and corpus WER against diffusion steps, one line per CFG mode (line
    style per sequence length and hardware). Runs without a meaningful WER (unscored,
    random weights or ASR) get the speed panel only."""
    has_wer = quality_meaningful and bool(cells["corpus_wer"].astype(float).notna().any())
    with _figure(9.0 if has_wer else 6.5, 3.8, ncols=2 if has_wer else 1) as (fig, axes):
        left = axes[0]
        variants = list(dict.fromkeys(zip(cells["sequence_length"], cells["hardware"], strict=True)))
        modes = list(dict.fromkeys(cells["cfg_mode"]))
        several_hw = len(set(cells["hardware"])) > 1
        for (mode, length, hw), group in cells.groupby(
                ["cfg_mode", "sequence_length", "hardware"], sort=False):
            group = group.sort_values("num_steps")
            style = LINESTYLES[variants.index((length, hw)) % len(LINESTYLES)]
            c = colour(modes.index(mode))
            marker = CFG_MARKERS.get(str(mode), "o")
            label = f"{mode}, len {length}" + (f", {hw}" if several_hw else "")
            left.plot(group["num_steps"], group["rtf_median"], label=label, color=c,
                      linestyle=style, marker=marker, markersize=4)
            if has_wer:
                axes[1].plot(group["num_steps"], group["corpus_wer"] * 100, color=c,
                             linestyle=style, marker=marker, markersize=4)
        step_values = sorted({int(v) for v in cells["num_steps"] if is_finite(v)})
        for ax in axes:
            ax.set_xlabel("diffusion steps")
            ax.set_xticks(step_values)
        left.set_ylabel("median RTF (lower is faster)")
        left.set_title("Speed vs steps (colour: CFG mode; line style: sequence length)")
        left.legend(frameon=False, ncols=2 if len(modes) * len(variants) > 6 else 1)
        if has_wer:
            axes[1].set_ylabel(WER_LABEL)
            axes[1].set_title("Quality vs steps")
        return _png(fig)


def stages(cells: pd.DataFrame) -> bytes:
    """Median time per pipeline stage for each cell, as stacked horizontal bars (s)."""
    with _figure(8.0, max(3.0, 0.28 * len(cells) + 1.4)) as (fig, (ax,)):
        y = np.arange(len(cells))
        left = np.zeros(len(cells))
        for i, stage in enumerate(STAGES):
            values = cells[f"{stage}_median"].astype(float).fillna(0).to_numpy()
            ax.barh(y, values, left=left, color=colour(i), label=STAGE_NAMES[stage])
            left += values
        ax.set_yticks(y, [str(label) for label in cells["cell_label"]])
        ax.invert_yaxis()
        ax.set_xlabel("median time per generation (s)")
        ax.set_title("Where the time goes: stage breakdown")
        ax.legend(frameon=False, loc="lower right")
        return _png(fig)


def memory(cells: pd.DataFrame) -> bytes:
    """Peak memory against sequence length: device memory reserved where measured (CUDA),
    else the process's peak RSS (CPU runs), in GB."""
    with _figure(6.5, 3.8) as (fig, (ax,)):
        reserved = cells["peak_reserved"].astype(float)
        on_device = reserved.notna().any()
        values = (reserved if on_device else cells["peak_rss"].astype(float)) / 1e9
        # Colour by CFG mode (rows per step drive activation memory), line style by hardware.
        hardware = list(dict.fromkeys(cells["hardware"]))
        modes = list(dict.fromkeys(cells["cfg_mode"]))
        for (hw, mode), group in cells.assign(_gb=values).groupby(["hardware", "cfg_mode"],
                                                                 sort=False):
            peak = group.groupby("sequence_length")["_gb"].max()
            ax.plot(peak.index, peak.to_numpy(), color=colour(modes.index(mode)),
                    linestyle=LINESTYLES[hardware.index(hw) % len(LINESTYLES)],
                    marker=CFG_MARKERS.get(str(mode), "o"), label=f"{hw}, CFG {mode}")
        ax.set_xlabel("sequence length (latents per chunk)")
        ax.set_ylabel("peak reserved GPU memory (GB)" if on_device
                      else "peak process RSS (GB; CPU run, no GPU memory)")
        ax.set_title("Peak memory vs sequence length")
        ax.legend(frameon=False, fontsize=7)
        return _png(fig)


def cost(cells: pd.DataFrame, currency: str = "USD", highlight: dict[str, str] | None = None
         ) -> bytes:
    """Cost per hour of audio of every cell, grouped by hardware (one dot per cell); the
    cells named in ``highlight`` (hardware -> cell id, e.g. the headline picks) ringed."""
    with _figure(6.5, 3.8) as (fig, (ax,)):
        priced = cells[cells["cost_per_audio_hour"].astype(float).notna()]
        if not len(priced):
            _message(ax, "no price for this hardware (see the price file)")
            return _png(fig)
        hardware = list(dict.fromkeys(priced["hardware"]))
        rng = np.random.default_rng(0)  # fixed jitter: the same run draws the same plot
        names = []
        for i, hw in enumerate(hardware):
            group = priced[priced["hardware"] == hw]
            x = pd.Series(i + rng.uniform(-0.15, 0.15, len(group)), index=group.index)
            ax.scatter(x, group["cost_per_audio_hour"], color=colour(i), s=24, zorder=3)
            pick = (highlight or {}).get(str(hw))
            if pick is not None and pick in group.index:
                ax.scatter([x[pick]], [group.loc[pick, "cost_per_audio_hour"]], s=140,
                           facecolor="none", edgecolor="black", linewidth=1.2, zorder=4,
                           label="headline choice" if i == 0 else None)
            basis = str(group["price_basis"].iloc[0]) if "price_basis" in group else str(hw)
            names.append(str(hw) if basis == str(hw) else f"{hw}\n(priced as {basis})")
        ax.set_xticks(range(len(hardware)), names)
        ax.set_xlim(-0.5, len(hardware) - 0.5)
        ax.set_yscale("log")
        ax.set_ylabel(f"{currency} per hour of audio (log scale)")
        ax.set_title("Cost per hour of audio produced")
        if highlight:
            ax.legend(frameon=False)
        return _png(fig)


def history(table: pd.DataFrame, max_cells: int = 8) -> bytes:
    """Median RTF of each cell across runs (oldest left); step changes flagged with a
    triangle (up: slower). Takes :func:`bench.analysis.history.flag_step_changes` output."""
    with _figure(8.0, 3.8) as (fig, (ax,)):
        if not len(table):
            _message(ax, "no earlier runs")
            return _png(fig)
        runs = list(dict.fromkeys(table["run_id"]))
        cells = list(dict.fromkeys(table["cell_id"]))[:max_cells]
        for i, cell_id in enumerate(cells):
            rows = table[table["cell_id"] == cell_id]
            x = [runs.index(r) for r in rows["run_id"]]
            ax.plot(x, rows["rtf_median"], color=colour(i), marker="o", markersize=3,
                    label=str(rows["cell_label"].iloc[-1]))
            steps_rows = rows[rows.get("step", pd.Series("", index=rows.index)) != ""]
            for _, row in steps_rows.iterrows():
                ax.scatter([runs.index(row["run_id"])], [row["rtf_median"]], s=70,
                           marker="^" if row["step"] == "slower" else "v",
                           facecolor="none", edgecolor="black", zorder=4)
        ax.set_xticks(range(len(runs)), [_short_run(r) for r in runs], rotation=30, ha="right")
        ax.set_xlabel("run (oldest left)")
        ax.set_ylabel("median RTF (lower is faster)")
        title = "History of median RTF"
        if len(set(table["cell_id"])) > max_cells:
            title += f" (first {max_cells} cells)"
        ax.set_title(title)
        ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _png(fig)


def _short_run(run_id: str) -> str:
    # Run ids start with the UTC stamp YYYYmmdd-HHMMSS; that is what tells runs apart.
    parts = str(run_id).split("-")
    return "-".join(parts[:2]) if len(parts) >= 2 and parts[0].isdigit() else str(run_id)[:20]


def is_finite(value: Any) -> bool:
    """True for a real, finite number."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
