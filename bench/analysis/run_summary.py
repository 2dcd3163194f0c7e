"""A run's per-cell summary for trends over many runs, computed once and kept in the run.

``echo-bench history`` and ``echo-bench dashboard`` read a year of nightly runs; parsing
every run's records each time grows with every night. So each run is summarised once into
``<run>/summary.json`` (:data:`bench.store.layout.SUMMARY`), keyed by the sizes and
modification times of the files it was computed from (manifest, records, scores) and by
:data:`SUMMARY_VERSION`: a run scored or resumed later, or a newer summariser, is
summarised again; an unchanged run is only stat'ed and its small JSON read.

A summary keeps what the trend and the paired step test need, not only medians: per cell
the figures with intervals (median RTF with a distribution-free 95 % interval from order
statistics; corpus WER, SIM and MOS with the 95 % cluster-bootstrap intervals the report
uses) and, per generation (keyed ``prompt/seed/repeat`` as :func:`bench.analysis.cells.
pair_index` pairs twins), RTF, word errors and reference words, SIM and MOS.
Failed and silent generations count as empty transcripts (:mod:`bench.scoring.outcomes`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.cells import hardware_of, pair_index, quality_is_meaningful, scored_rows
from bench.scoring.outcomes import column, has_scores, is_number, outcome, quality_scores
from bench.scoring.stats import ratio_interval
from bench.store.files import atomic_target, read_json
from bench.store.layout import MANIFEST, RECORDS, SCORES, SUMMARY, StoreError

log = logging.getLogger(__name__)

#: Bumped when what a summary holds changes, so older summary files are recomputed.
SUMMARY_VERSION = 1

#: Quality figures beyond WER summarised per cell (means, higher is better).
QUALITY_METRICS: tuple[str, ...] = ("sim", "utmos", "dnsmos_ovrl")

#: Memory fields read for a cell's peak, first present wins (GPU runs, then CPU).
PEAK_FIELDS: tuple[str, ...] = ("peak_allocated_bytes", "peak_rss_bytes")

_N_BOOT = 200  # as history's WER intervals have always used


def source_key(run_dir: Path) -> dict[str, list[int]]:
    """Size and mtime (ns) of each file a summary is computed from; stat only."""
    key: dict[str, list[int]] = {}
    for name in (MANIFEST, RECORDS, SCORES):
        try:
            st = (run_dir / name).stat()
        except FileNotFoundError:
            continue
        key[name] = [st.st_size, st.st_mtime_ns]
    return key


def load_run_summary(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], bool]:
    """The run's summary and whether it was computed now (False: read from its file).

    Raises :class:`StoreError` when the run's files cannot be read. A summary that
    cannot be written (a read-only copy of a run) is still returned, and logged.
    """
    run_dir = Path(run_dir)
    key = source_key(run_dir)
    path = run_dir / SUMMARY
    if path.is_file():
        try:
            kept = read_json(path)
        except StoreError:
            kept = {}  # a torn or foreign file: computed again below
        if kept.get("version") == SUMMARY_VERSION and kept.get("source") == key:
            return kept, False
    summary = summarize_run(run_dir)
    summary["source"] = key
    try:
        with atomic_target(path) as tmp:  # compact: the per-generation lists are long
            tmp.write_text(json.dumps(summary, separators=(",", ":")), encoding="utf-8")
    except OSError as err:
        log.warning("could not keep %s (%s); it is computed again next time", path, err)
    return summary, True


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """The summary of one run (see the module docstring); raises StoreError if unreadable."""
    from bench.store.records import load_records

    manifest = read_json(run_dir / MANIFEST)
    records = load_records(run_dir)
    spec = manifest.get("spec") or {}
    adaptive = bool(spec.get("adaptive")) or bool(column(records, "adaptive_stage").notna().any())
    cells = _cells(records) if len(records) and "cell_id" in records.columns else []
    return {
        "version": SUMMARY_VERSION,
        "run_id": manifest.get("run_id"),
        "spec_name": manifest.get("spec_name"),
        "spec_hash": manifest.get("spec_hash"),
        "git_commit": (manifest.get("environment") or {}).get("git_commit"),
        "started_at": manifest.get("started_at"),
        "status": manifest.get("status"),
        "adaptive": adaptive,
        "n_records": len(records),
        "cells": cells,
    }


def _cells(records: pd.DataFrame) -> list[dict[str, Any]]:
    run_scored = has_scores(records)
    scored_all = scored_rows(records)
    run_meaningful = quality_is_meaningful(scored_all if len(scored_all) else records)
    out = []
    for cell_id, group in records.groupby("cell_id", sort=False):
        ok = group[column(group, "status") == "ok"]
        counts = outcome(group.to_dict("records"))
        cell_scored = scored_rows(ok)
        meaningful = (quality_is_meaningful(cell_scored) if len(cell_scored)
                      else run_meaningful and quality_is_meaningful(group))
        keys = list(pair_index(group))
        position = {k: i for i, k in enumerate(keys)}
        figures: dict[str, list[float | None]] = {
            name: [None] * len(keys) for name in ("rtf", "wer_errors", "ref_words",
                                                  *QUALITY_METRICS)}
        for k, v in zip(pair_index(ok), column(ok, "rtf"), strict=True):
            if is_number(v):
                figures["rtf"][position[k]] = float(v)
        rated, scores = quality_scores(group, scored=run_scored)
        for k, s in zip(pair_index(rated), scores, strict=True):
            figures["wer_errors"][position[k]] = float(
                s.substitutions + s.deletions + s.insertions)
            figures["ref_words"][position[k]] = float(s.ref_words)
        for name in QUALITY_METRICS:
            for k, v in zip(pair_index(ok), column(ok, name), strict=True):
                if is_number(v):
                    figures[name][position[k]] = float(v)
        prompts = list(column(group, "prompt_id"))
        row: dict[str, Any] = {
            "cell_id": str(cell_id),
            "cell_label": _first(column(group, "cell_label")),
            "hardware": hardware_of(_first(column(group, "gpu")),
                                    _first(column(group, "device_name"))),
            "random_weights": bool(column(group, "random_weights").map(_true).any()),
            "quality": ("not scored" if not scores
                        else "ok" if meaningful else "not meaningful"),
            "n": counts.n, "n_ok": len(ok), "failure_rate": counts.failure_rate,
            "peak_memory": _peak(group),
        }
        row.update(_median_interval(figures["rtf"], "rtf"))
        row.update(_ratio("corpus_wer", figures["wer_errors"], figures["ref_words"], prompts))
        for name in QUALITY_METRICS:
            row.update(_ratio(name, figures[name], [None if v is None else 1.0
                                                    for v in figures[name]], prompts))
        row["keys"] = keys
        # Only figures some generation has (an unscored run keeps RTF alone).
        row["figures"] = {n: v for n, v in figures.items() if any(x is not None for x in v)}
        out.append(_json_safe(row))
    return out


def _median_interval(values: list[float | None], name: str) -> dict[str, float]:
    """Median with a distribution-free 95 % interval: the order statistics j, k around
    n/2 +- 1.96 sqrt(n)/2 (normal approximation to the binomial), clipped to the data."""
    x = np.sort(np.asarray([v for v in values if v is not None], dtype=np.float64))
    n = x.size
    if not n:
        return {f"{name}_median": math.nan, f"{name}_lo": math.nan, f"{name}_hi": math.nan}
    half = 1.96 * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)
    hi = min(n - 1, math.ceil(n / 2 + half))
    return {f"{name}_median": float(np.median(x)), f"{name}_lo": float(x[lo]),
            f"{name}_hi": float(x[hi])}


def _ratio(name: str, num: list[float | None], den: list[float | None], prompts: list[Any]
           ) -> dict[str, float]:
    """sum(num) / sum(den) over generations with both, with the report's cluster-bootstrap
    interval (prompts resampled)."""
    keep = [i for i, (a, b) in enumerate(zip(num, den, strict=True))
            if a is not None and b is not None]
    if not keep or not sum(float(den[i] or 0) for i in keep):
        return {name: math.nan, f"{name}_lo": math.nan, f"{name}_hi": math.nan}
    interval = ratio_interval([num[i] for i in keep], [den[i] for i in keep],
                              [prompts[i] for i in keep], n_boot=_N_BOOT, seed=0)
    return {name: interval.estimate, f"{name}_lo": interval.low, f"{name}_hi": interval.high}


def _peak(group: pd.DataFrame) -> float:
    for name in PEAK_FIELDS:
        values = [float(v) for v in column(group, name) if is_number(v)]
        if values:
            return max(values)
    return math.nan


def _first(values: pd.Series) -> Any:
    present = values.dropna()
    return present.iloc[0] if len(present) else None


def _true(value: Any) -> bool:
    return value is True or (isinstance(value, np.bool_) and bool(value))


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    """NaN as null (strict JSON), numpy scalars as Python numbers."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[name] = value
    return out


@dataclass(frozen=True)
class Skipped:
    """A run left out of a trend, and why (one line)."""

    run_id: str
    spec_name: str
    reason: str


@dataclass
class Collected:
    """Summaries of the runs in a results folder's history index, oldest start first,
    the runs skipped with their reasons, and how many summaries were computed now."""

    summaries: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    computed: int = 0


def collect_summaries(root: str | os.PathLike[str], spec_name: str | None = None, *,
                      complete_only: bool = False) -> Collected:
    """The summary of every run listed under ``root`` (optionally of one spec).

    A run whose folder is missing or unreadable, whose manifest names another spec than
    the index does, or (``complete_only``) that did not finish, is skipped with the
    reason; the others are summarised once (:func:`load_run_summary`)."""
    from bench.store.history import list_runs

    root = Path(root)
    out = Collected()
    for entry in list_runs(root, spec_name):
        run_id = str(entry.get("run_id"))
        listed = str(entry.get("spec_name"))

        def skip(reason: str, run_id: str = run_id, listed: str = listed) -> None:
            out.skipped.append(Skipped(run_id, listed, reason))

        if complete_only and entry.get("status") != "complete":
            skip(f"incomplete: its status is {entry.get('status')!r}, not 'complete'")
            continue
        run_dir = root / str(entry.get("path") or run_id)
        if not (run_dir / MANIFEST).is_file():
            skip(f"no {MANIFEST} in {run_dir}: the folder is missing or not a run")
            continue
        try:
            summary, computed = load_run_summary(run_dir)
        except (StoreError, OSError, ValueError, KeyError) as err:
            skip(f"unreadable: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
            continue
        if summary.get("spec_name") != entry.get("spec_name"):
            skip(f"from another spec: its manifest says {summary.get('spec_name')!r}, "
                 f"the index {listed!r}")
            continue
        if complete_only and summary.get("status") != "complete":
            skip(f"incomplete: its manifest's status is {summary.get('status')!r}")
            continue
        if not summary.get("cells"):
            skip("no records")
            continue
        out.computed += computed
        out.summaries.append(summary)
    return out
