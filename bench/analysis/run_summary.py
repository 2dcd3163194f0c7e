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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.cells import hardware_of, pair_index, quality_is_meaningful, scored_rows
from bench.scoring.outcomes import column, has_scores, is_number, outcome, quality_scores
from bench.scoring.stats import bootstrap_ratio_replicates, percentile_interval, ratio_of_sums
from bench.store.files import atomic_target, read_json
from bench.store.layout import MANIFEST, RECORDS, SCORES, SUMMARY, StoreError

log = logging.getLogger(__name__)

#: Bumped when what a summary holds changes, so older summary files are recomputed.
SUMMARY_VERSION = 2

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
    kept = kept_summary(Path(run_dir))
    return (kept, False) if kept is not None else (keep_new_summary(Path(run_dir)), True)


def kept_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary file of the run if it is current (same source files, same version)."""
    path = run_dir / SUMMARY
    if not path.is_file():
        return None
    try:
        kept = read_json(path)
    except StoreError:
        return None  # a torn or foreign file: computed again
    current = kept.get("version") == SUMMARY_VERSION and kept.get("source") == source_key(run_dir)
    return kept if current else None


def keep_new_summary(run_dir: Path) -> dict[str, Any]:
    """Summarise the run now and keep the summary in it (atomically)."""
    key = source_key(run_dir)  # before reading: a change while we read is seen next time
    summary = summarize_run(run_dir)
    summary["source"] = key
    path = run_dir / SUMMARY
    try:
        with atomic_target(path) as tmp:  # compact: the per-generation lists are long
            tmp.write_text(json.dumps(summary, separators=(",", ":")), encoding="utf-8")
    except OSError as err:
        log.warning("could not keep %s (%s); it is computed again next time", path, err)
    return summary


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """The summary of one run (see the module docstring); raises StoreError if unreadable."""
    from bench.store.records import load_records

    manifest = read_json(run_dir / MANIFEST)
    records = load_records(run_dir)
    spec = manifest.get("spec") or {}
    adaptive = bool(spec.get("adaptive")) or bool(column(records, "adaptive_stage").notna().any())
    cells = _cells(records) if len(records) and "cell_id" in records.columns else []
    # The twins' keys once per run (cells of a run share them, unless an adaptive run
    # stopped a cell early): they were a fifth of the file, parsed on every build.
    keys = cells[0]["keys"] if cells else []
    for cell in cells:
        if cell["keys"] == keys:
            del cell["keys"]
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
        "keys": keys,
        "cells": cells,
    }


#: The record fields a summary reads (the rule of bench.scoring.outcomes included); the
#: rest of a wide record table is dropped first, which makes the pass several times faster.
_FIELDS: tuple[str, ...] = (
    "key", "cell_id", "prompt_id", "seed", "repeat", "status", "error", "error_type",
    "audio_nan", "audio_silent", "score_status", "cell_label", "gpu", "device_name",
    "random_weights", "asr_random", "asr_model", "quality_meaningful", "rtf", "text",
    "transcript", "reference_norm", "transcript_norm", "ref_words", "hits", "substitutions",
    "deletions", "insertions", "wer", "cer", "ref_chars", "char_errors", "empty_hyp",
    *QUALITY_METRICS, *PEAK_FIELDS,
)


def _cells(records: pd.DataFrame) -> list[dict[str, Any]]:
    records = records[[c for c in _FIELDS if c in records.columns]].copy()
    for name in records.columns:
        # Arrow-backed strings (pandas 3 reading parquet) are slow to walk row by row,
        # and the outcome rule walks rows; plain objects halve that.
        if pd.api.types.is_string_dtype(records[name].dtype):
            records[name] = records[name].astype(object)
    run_scored = has_scores(records)
    scored_all = scored_rows(records)
    run_meaningful = quality_is_meaningful(scored_all if len(scored_all) else records)
    # One pass over the whole run, then grouped by cell: per-cell passes over table rows
    # cost most of a summary's time.
    keys = list(pair_index(records))
    rated, scores = quality_scores(records, scored=run_scored)
    errors = {i: (float(sc.substitutions + sc.deletions + sc.insertions), float(sc.ref_words))
              for i, sc in zip(rated.index, scores, strict=True)}
    rows = records.to_dict("records")
    by_cell: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_cell.setdefault(str(r["cell_id"]), []).append(i)
    index = list(records.index)
    # The columns the meaningful-quality rule reads, alone: per-cell slices of the whole
    # table cost more than the rest of a cell's figures.
    flags = records[[c for c in ("status", "ref_words", "quality_meaningful", "random_weights",
                                 "asr_random") if c in records.columns]]
    out = []
    for cell_id, members in by_cell.items():
        group = flags.iloc[members]
        mine = [rows[i] for i in members]
        ok_rows = [r for r in mine if r.get("status") == "ok"]
        counts = outcome(mine)
        cell_scored = scored_rows(group[column(group, "status") == "ok"])
        meaningful = (quality_is_meaningful(cell_scored) if len(cell_scored)
                      else run_meaningful and quality_is_meaningful(group))
        figures: dict[str, list[float | None]] = {
            "rtf": [float(r["rtf"]) if r.get("status") == "ok" and is_number(r.get("rtf"))
                    else None for r in mine],
            "wer_errors": [errors[index[i]][0] if index[i] in errors else None
                           for i in members],
            "ref_words": [errors[index[i]][1] if index[i] in errors else None
                          for i in members],
        }
        for name in QUALITY_METRICS:
            figures[name] = [float(r[name]) if r.get("status") == "ok"
                             and is_number(r.get(name)) else None for r in mine]
        prompts = [r.get("prompt_id") for r in mine]
        n_scored = sum(1 for i in members if index[i] in errors)
        row: dict[str, Any] = {
            "cell_id": cell_id,
            "cell_label": _first(r.get("cell_label") for r in mine),
            "hardware": hardware_of(_first(r.get("gpu") for r in mine),
                                    _first(r.get("device_name") for r in mine)),
            "random_weights": any(_true(r.get("random_weights")) for r in mine),
            "quality": ("not scored" if not n_scored
                        else "ok" if meaningful else "not meaningful"),
            "n": counts.n, "n_ok": len(ok_rows), "failure_rate": counts.failure_rate,
            "peak_memory": _peak(mine),
        }
        row.update(_median_interval(figures["rtf"], "rtf"))
        row.update(_ratios(figures, prompts))
        row["keys"] = [keys[i] for i in members]
        # Only figures some generation has (an unscored run keeps RTF alone).
        # Six significant digits: far below any step a test can see, and the file (read
        # every build, for every night) stays small and quick to parse.
        row["figures"] = {n: [None if x is None else float(f"{x:.6g}") for x in v]
                          for n, v in figures.items() if any(x is not None for x in v)}
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


def _ratios(figures: Mapping[str, list[float | None]], prompts: list[Any]
            ) -> dict[str, float]:
    """Corpus WER (errors over reference words) and the means of the quality metrics,
    each with the report's 95 % cluster-bootstrap interval (prompts resampled); a
    generation without a figure adds nothing to its sums. One bootstrap for all: the
    columns share their draws, as separate calls with the same seed would."""
    names = ("corpus_wer", *QUALITY_METRICS)
    nums = [figures["wer_errors"], *(figures[m] for m in QUALITY_METRICS)]
    dens = [figures["ref_words"], *([None if v is None else 1.0 for v in figures[m]]
                                    for m in QUALITY_METRICS)]
    num = np.array([[0.0 if n is None or d is None else n for n, d in zip(a, b, strict=True)]
                    for a, b in zip(nums, dens, strict=True)], dtype=np.float64).T
    den = np.array([[0.0 if n is None or d is None else d for n, d in zip(a, b, strict=True)]
                    for a, b in zip(nums, dens, strict=True)], dtype=np.float64).T
    out: dict[str, float] = {}
    present = den.sum(axis=0) > 0
    estimates = ratio_of_sums(num, den)
    reps = (bootstrap_ratio_replicates(num[:, present], den[:, present], prompts,
                                       n_boot=_N_BOOT, seed=0)
            if present.any() else np.empty((0, 0)))
    column = 0
    for j, name in enumerate(names):
        low = high = math.nan
        if present[j]:
            low, high = percentile_interval(reps[:, column])
            column += 1
        out.update({name: float(estimates[j]) if present[j] else math.nan,
                    f"{name}_lo": low, f"{name}_hi": high})
    return out


def _peak(rows: Sequence[Mapping[Any, Any]]) -> float:
    for name in PEAK_FIELDS:
        values = [float(r[name]) for r in rows if is_number(r.get(name))]
        if values:
            return max(values)
    return math.nan


def _first(values: Iterable[Any]) -> Any:
    """The first value that is not missing (None or NaN)."""
    return next((v for v in values if v is not None
                 and not (isinstance(v, float) and math.isnan(v))), None)


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
    each run's folder by run id, the runs skipped with their reasons, and how many
    summaries were computed now."""

    summaries: list[dict[str, Any]] = field(default_factory=list)
    dirs: dict[str, Path] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    computed: int = 0


def collect_summaries(root: str | os.PathLike[str], spec_name: str | None = None, *,
                      complete_only: bool = False, workers: int | None = None) -> Collected:
    """The summary of every run listed under ``root`` (optionally of one spec).

    A run whose folder is missing or unreadable, whose manifest names another spec than
    the index does, or (``complete_only``) that did not finish, is skipped with the
    reason; the others are summarised once (:func:`load_run_summary`). Runs without a
    current summary are summarised by ``workers`` processes (default: one per CPU) when
    there are several: a first build over a year of nights is the one slow case.
    """
    from bench.store.history import list_runs

    root = Path(root)
    out = Collected()
    listed: list[tuple[dict[str, Any], Path]] = []
    found: dict[Path, dict[str, Any] | str] = {}
    for entry in list_runs(root, spec_name):
        run_id = str(entry.get("run_id"))
        if complete_only and entry.get("status") != "complete":
            out.skipped.append(Skipped(run_id, str(entry.get("spec_name")),
                                       f"incomplete: its status is {entry.get('status')!r}, "
                                       "not 'complete'"))
            continue
        run_dir = root / str(entry.get("path") or run_id)
        listed.append((entry, run_dir))
        if (run_dir / MANIFEST).is_file() and (kept := kept_summary(run_dir)) is not None:
            found[run_dir] = kept
    pending = [d for _, d in listed if d not in found and (d / MANIFEST).is_file()]
    found.update(_summarise_all(pending, workers))
    out.computed = sum(isinstance(found[d], dict) for d in pending)
    for entry, run_dir in listed:
        summary = found.get(run_dir)
        reason = _skip_reason(entry, run_dir, summary, complete_only)
        if reason:
            out.skipped.append(Skipped(str(entry.get("run_id")), str(entry.get("spec_name")),
                                       reason))
        elif isinstance(summary, dict):
            out.summaries.append(summary)
            out.dirs[str(summary.get("run_id"))] = run_dir
    return out


def _skip_reason(entry: dict[str, Any], run_dir: Path, summary: dict[str, Any] | str | None,
                 complete_only: bool) -> str:
    if summary is None:
        return f"no {MANIFEST} in {run_dir}: the folder is missing or not a run"
    if isinstance(summary, str):
        return f"unreadable: {summary}"
    if summary.get("spec_name") != entry.get("spec_name"):
        return (f"from another spec: its manifest says {summary.get('spec_name')!r}, "
                f"the index {entry.get('spec_name')!r}")
    if complete_only and summary.get("status") != "complete":
        return f"incomplete: its manifest's status is {summary.get('status')!r}"
    if not summary.get("cells"):
        return "no records"
    return ""


def _summarise_all(run_dirs: list[Path], workers: int | None
                   ) -> dict[Path, dict[str, Any] | str]:
    """Each run's new summary, or the one-line reason it could not be made."""
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(run_dirs) > 2:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(workers, len(run_dirs))) as pool:
            return dict(zip(run_dirs, pool.map(_summary_or_reason, run_dirs, chunksize=4),
                            strict=True))
    return {d: _summary_or_reason(d) for d in run_dirs}


def _summary_or_reason(run_dir: Path) -> dict[str, Any] | str:
    try:
        return keep_new_summary(run_dir)
    except (StoreError, OSError, ValueError, KeyError) as err:
        return str(err).splitlines()[0] if str(err) else type(err).__name__
