"""The HTML report of one run: one self-contained file (plots embedded as data: URIs, no
network fetches), rendered from ``templates/report.html.j2`` with autoescaping on, so
every prompt, spec value and error message reaches the page as text, never as markup.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from bench.analysis.cells import NOT_MEANINGFUL
from bench.analysis.history import flag_step_changes, history_table
from bench.analysis.memory_fit import CUDA_CONTEXT_BYTES, memory_need
from bench.analysis.noise import DISPERSION_NAME, REPEAT_DISPERSION_NAME, UNSTABLE_DISPERSION
from bench.analysis.quality import quality_html, quality_section
from bench.analysis.run_analysis import RunAnalysis
from bench.report import plots
from bench.report import predictions as predictions_report
from bench.report.adaptive import adaptive_section
from bench.report.nightly import history_section
from bench.report.quality_plots import frontier_beyond_wer
from bench.report.run_cost import run_cost_text
from bench.scoring.outcomes import column

#: Sample clips linked per cell (the first prompts, so every cell offers the same ones).
SAMPLES_PER_CELL = 2
#: Environment fields shown first, in this order; the rest follow.
ENV_FIRST: tuple[str, ...] = (
    "gpu_names", "driver_version", "cuda_version", "cuda_available", "cpu_model", "cpu_count",
    "git_commit", "git_dirty", "lock_sha256", "hostname", "platform", "python_version",
    "echo_bench_version",
)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("bench.report", "templates"),
        # Autoescape every template, whatever its extension: prompts and errors are
        # user text and must never become markup.
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=fmt_number, pct=fmt_pct, gb=fmt_gb, money=fmt_money,
                       sortkey=sort_key, two_lines=two_lines)
    return env


# --------------------------------------------------------------------------- formatting


# Shown for a missing figure (an en dash: a hyphen reads as a minus sign in a number column).
DASH = "\N{EN DASH}"


def fmt_number(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; a dash when missing."""
    if not plots.is_finite(value):
        return DASH
    return f"{float(value):.{digits}g}"


def fmt_pct(value: Any, digits: int = 2) -> str:
    """A fraction as a percentage ("3.14 %"); a dash when missing."""
    return f"{float(value) * 100:.{digits}f} %" if plots.is_finite(value) else DASH


def fmt_gb(value: Any) -> str:
    """Bytes as GB (1e9 bytes); a dash when missing."""
    return f"{float(value) / 1e9:.2f} GB" if plots.is_finite(value) else DASH


def fmt_money(value: Any) -> str:
    """An amount of money with enough digits for cents and fractions of a cent."""
    if not plots.is_finite(value):
        return DASH
    amount = float(value)
    return f"{amount:.2f}" if amount >= 1 else f"{amount:.4f}" if amount >= 0.001 else f"{amount:.2e}"


def sort_key(value: Any) -> str:
    """The value a table column sorts by (numbers as numbers, missing last)."""
    if isinstance(value, bool):
        return str(int(value))
    if plots.is_finite(value):
        return repr(float(value))
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def two_lines(text: str, sep: str = " [") -> Markup | str:
    """``text`` split at the first ``sep``, the rest on a smaller line of its own: an
    interval under its estimate keeps a wide table within the page (escaped either way)."""
    head, found, tail = str(text).partition(sep)
    if not found:
        return head
    return Markup('{}<span class="rng">{}</span>').format(head, found.lstrip() + tail)


def quality_text(row: Mapping[Any, Any], name: str = "corpus_wer") -> str:
    """A WER/CER figure with its interval, or why there is none."""
    status = row.get("quality")
    if status == "not scored":
        return "not scored"
    if status != "ok":
        return NOT_MEANINGFUL
    value = row.get(name)
    lo, hi = row.get(f"{name}_lo", math.nan), row.get(f"{name}_hi", math.nan)
    if not plots.is_finite(value):
        return DASH
    # The interval in the estimate's unit without repeating " %": narrower columns.
    interval = (f" [{float(lo) * 100:.2f}{DASH}{float(hi) * 100:.2f}]"
                if plots.is_finite(lo) and plots.is_finite(hi) else "")
    return fmt_pct(value) + interval


def memory_text(row: Mapping[Any, Any], on_device: bool) -> tuple[float, str]:
    """(bytes to sort by, text) of a cell's memory: resident weights + working peak when
    measured, else the peak reserved on the GPU, or the host RSS of a CPU run."""
    if not on_device:
        return row.get("peak_rss", math.nan), fmt_gb(row.get("peak_rss"))
    need, basis = memory_need(row)
    if basis == "peak reserved":
        return need, fmt_gb(need)
    return need, (f"{fmt_gb(row.get('weights_resident'))} + "
                  f"{fmt_gb(row.get('working_peak'))}")


def other_settings(label: str) -> str:
    """A cell label without the parts the table shows in their own columns."""
    shown = ("steps=", "cfg=", "len=", "gpu=")
    return " ".join(p for p in label.split() if not p.startswith(shown)) or "defaults"


# --------------------------------------------------------------------------- content


def _samples(analysis: RunAnalysis, out_dir: Path) -> dict[str, list[dict[str, str]]]:
    """Per cell, up to SAMPLES_PER_CELL clips that exist, linked relative to the report."""
    records = analysis.records
    ok = records[(column(records, "status") == "ok") & column(records, "audio_path").notna()]
    found: dict[str, list[dict[str, str]]] = {}
    for row in ok.to_dict("records"):
        clips = found.setdefault(str(row["cell_id"]), [])
        if len(clips) >= SAMPLES_PER_CELL:
            continue
        path = analysis.run_dir / str(row["audio_path"])
        if not path.is_file():
            continue
        rel = Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()
        clips.append({"src": rel, "prompt_id": str(row.get("prompt_id")),
                      "text": str(row.get("text") or ""),
                      "transcript": str(row.get("transcript") or "")})
    return found


def _environment_rows(manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    env = dict(manifest.get("environment") or {})
    ordered = [k for k in ENV_FIRST if k in env] + sorted(k for k in env if k not in ENV_FIRST)
    rows = []
    for key in ordered:
        value = env[key]
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items() if v is not None)
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "none"
        rows.append((key, DASH if value is None else str(value)))
    return rows


def _history_png(analysis: RunAnalysis) -> bytes | None:
    """The history plot of this run's spec under its results folder, when there is one."""
    spec_name = analysis.manifest.get("spec_name")
    table = history_table(analysis.run_dir.parent, spec_name)
    if len(table) == 0 or table["run_id"].nunique() < 2:
        return None
    return plots.history(flag_step_changes(table))


def render_html(analysis: RunAnalysis, out: Path, comparison: pd.DataFrame | None = None,
                baseline_run: str | None = None, *, audio: bool = True) -> str:
    """The report page as a string; ``out`` (where it will be written) anchors the
    relative links to audio clips (none with ``audio=False``)."""
    cells = analysis.cells
    meaningful = analysis.quality_status == "ok"
    picks = {c.hardware: c.cell_id for c in analysis.choices}
    images = {
        "frontier": plots.frontier(cells, meaningful),
        "steps": plots.steps(cells, meaningful),
        "stages": plots.stages(cells),
        "memory": plots.memory(cells),
        "cost": plots.cost(cells, analysis.prices.currency, picks),
    }
    history = _history_png(analysis)
    if history is not None:
        images["history"] = history
    rows = cells.to_dict("records")
    on_device = bool(cells["peak_reserved"].astype(float).notna().any())
    membership = (analysis.frontier_stability.membership
                  if analysis.frontier_stability is not None else {})
    for row in rows:
        row["front_share"] = membership.get(str(row["cell_id"]))
        row["wer_text"] = quality_text(row)
        row["mean_wer_text"] = quality_text(row, "mean_wer")
        row["cer_text"] = quality_text(row, "cer")
        row["other_settings"] = other_settings(str(row["cell_label"]))
        row["memory_bytes"], row["memory_text"] = memory_text(row, on_device)
        # The noise column sorts by the figure that decides the flag.
        row["noise_max"] = max((float(row.get(k, math.nan)) for k in
                                ("dispersion", "repeat_dispersion")
                                if plots.is_finite(row.get(k))), default=math.nan)
    spec = analysis.manifest.get("spec") or {}
    quality = quality_section(analysis.run_dir, analysis.records)
    quality_png = (frontier_beyond_wer(quality.figures, quality.controls, quality.metrics)
                   if len(quality.figures) else None)
    context = {
        "run_id": analysis.manifest.get("run_id", analysis.run_dir.name),
        "manifest": analysis.manifest,
        "quality_status": analysis.quality_status,
        "not_meaningful": NOT_MEANINGFUL,
        "choices": analysis.choices,
        "stability": {hw: s.text(analysis.cell_labels) for hw, s in analysis.stability.items()},
        "frontier_stability": analysis.frontier_stability,
        "baselines": list(analysis.baselines.values()),
        "notes": analysis.notes,
        "cells": rows,
        # WER columns only where some cell's WER means something: a column of one
        # repeated "not meaningful" sentence is said once in the text above the table.
        "show_wer": any(row.get("quality") == "ok" for row in rows),
        "labels": {str(r["cell_id"]): str(r["cell_label"]) for r in rows},
        "wer_budget": analysis.wer_budget_points,
        "vram": analysis.vram.to_dict("records"),
        "vram_budgets": [c for c in analysis.vram.columns if c.endswith(" GB")],
        "context_gb": CUDA_CONTEXT_BYTES / 1e9,
        "unstable_threshold": UNSTABLE_DISPERSION,
        "dispersion_name": DISPERSION_NAME,
        "repeat_dispersion_name": REPEAT_DISPERSION_NAME,
        "pace_range": analysis.pace_range,
        "on_device": on_device,
        "failures": analysis.failures.to_dict("records"),
        "samples": _samples(analysis, out.parent) if audio else {},
        "samples_per_cell": SAMPLES_PER_CELL,
        "environment": _environment_rows(analysis.manifest),
        "spec_json": json.dumps(spec.get("raw", spec), indent=2, ensure_ascii=False,
                                default=str),
        "prices": analysis.prices,
        "run_cost": run_cost_text(analysis.manifest),
        "images": {name: plots.data_uri(png) for name, png in images.items()},
        "comparison": None if comparison is None else comparison.to_dict("records"),
        "baseline_run": baseline_run,
        "adaptive": adaptive_section(analysis),
        "checked": history_section(analysis),
        "quality_block": Markup(quality_html(quality)),
        "quality_plot": None if quality_png is None else plots.data_uri(quality_png),
        "research": predictions_report.section(analysis.records, analysis.manifest,
                                               analysis.prices),
    }
    template = _environment().get_template("report.html.j2")
    return template.render(**context)
