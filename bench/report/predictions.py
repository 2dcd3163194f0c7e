"""The report section "The research's predictions, measured": the rows of
:mod:`bench.analysis.predictions` as text, for the Markdown summary and the HTML template."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from bench.analysis.predictions import (
    PredictionRow,
    latency_table,
    measure_predictions,
)
from bench.analysis.prices import Prices
from bench.scoring.stats import Interval

TITLE = "The research's predictions, measured"
COLUMNS = ("proposal", "hardware", "predicted", "measured speed-up [95 % CI]",
           "quality change [95 % CI]", "peak memory, fit", "cost / audio hour (x baseline)",
           "verdict")
DASH = "\N{EN DASH}"


def section(records: pd.DataFrame, manifest: dict[str, Any], prices: Prices,
            n_boot: int = 1000) -> dict[str, Any] | None:
    """Everything the section shows, as text cells; None when the spec has no predictions."""
    rows = measure_predictions(records, manifest, prices, n_boot=n_boot)
    if not rows:
        return None
    latency = latency_table(records)
    return {
        "title": TITLE,
        "columns": COLUMNS,
        "rows": [row_cells(r, prices.currency) for r in rows],
        "sources": [(r.name, r.source) for r in rows if r.source],
        "latency": [latency_cells(r) for r in latency.to_dict("records")],
    }


def row_cells(r: PredictionRow, currency: str) -> dict[str, str]:
    """One prediction row as the strings of :data:`COLUMNS` (plus ``name``)."""
    if r.measured_seconds is not None or r.reference:
        measured = (DASH if r.measured_seconds is None else
                    f"{_interval(r.measured_seconds, '{:.2f}')} s wall-clock per text"
                    + (f" for {r.audio_seconds:.1f} s of audio" if r.audio_seconds else ""))
    elif r.speedup is None:
        measured = DASH
    else:
        measured = f"{_interval(r.speedup, '{:.2f}')}x ({r.speedup_of}, {r.n_pairs} pairs)"
    predicted = r.predicted
    if r.flop_speedup is not None:
        predicted += f"; FLOP model {r.flop_speedup:.2f}x"
    return {
        "name": r.name,
        "proposal": f"{r.name} ({r.proposal})" if r.proposal else r.name,
        "hardware": r.hardware,
        "predicted": predicted,
        "measured speed-up [95 % CI]": measured,
        "quality change [95 % CI]": quality_text(r),
        "peak memory, fit": memory_text(r),
        "cost / audio hour (x baseline)": cost_text(r, currency),
        "verdict": f"{r.verdict}: {r.why}" if r.why else r.verdict,
    }


def quality_text(r: PredictionRow) -> str:
    if not r.quality:
        return "not scored" if r.measured_seconds is None and r.reference == "" else DASH
    parts = []
    for metric, iv in r.quality.items():
        if metric in ("wer", "cer"):
            parts.append(f"{metric.upper()} {_interval(_scaled(iv, 100), '{:+.2f}')} pts")
        else:
            parts.append(f"{metric} {_interval(iv, '{:+.3f}')}")
    text = "; ".join(parts)
    return text if r.quality_meaningful else f"{text} (not meaningful: random weights)"


def memory_text(r: PredictionRow) -> str:
    if r.peak_memory_bytes is None:
        return DASH
    text = f"{r.peak_memory_bytes / 1e9:.2f} GB {r.memory_kind}"
    return f"{text}; {r.fit}" if r.fit else text


def cost_text(r: PredictionRow, currency: str) -> str:
    if r.cost_per_audio_hour is None:
        return DASH
    text = f"{r.cost_per_audio_hour:.4g} {currency}"
    return text + (f" (x{r.cost_ratio:.2f})" if r.cost_ratio is not None else "")


def latency_cells(row: Mapping[Any, Any]) -> dict[str, str]:
    return {
        "cell": f"{row['cell_label']} ({row['cell_id']})",
        "n": str(row["n_ok"]),
        "latency p50/p90/p99 s": _triple(row, "latency"),
        "TTFB p50/p90/p99 s": _triple(row, "ttfb"),
        "median RTF": _num(row["rtf_median"]),
        "throughput (audio s / worker s)": _num(row["throughput"]),
    }


def markdown(data: dict[str, Any]) -> str:
    """The section as Markdown (a table of predictions, their sources, the latency table)."""
    lines = [f"### {data['title']}", "",
             "| " + " | ".join(data["columns"]) + " |",
             "|" + "---|" * len(data["columns"])]
    for row in data["rows"]:
        lines.append("| " + " | ".join(_md(row[c]) for c in data["columns"]) + " |")
    if data["sources"]:
        lines += ["", "Sources (the research's words):"]
        lines += [f"- {_md(name)}: {_md(source)}" for name, source in data["sources"]]
    if data["latency"]:
        keys = list(data["latency"][0])
        lines += ["", "Latency per request (seconds; TTFB = time to the first decodable "
                  "audio) beside RTF:", "", "| " + " | ".join(keys) + " |",
                  "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_md(r[k]) for k in keys) + " |" for r in data["latency"]]
    return "\n".join(lines) + "\n"


def _interval(iv: Interval, fmt: str) -> str:
    if not math.isfinite(iv.estimate):
        return DASH
    if not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return fmt.format(iv.estimate)
    return f"{fmt.format(iv.estimate)} [{fmt.format(iv.low)}, {fmt.format(iv.high)}]"


def _scaled(iv: Interval, factor: float) -> Interval:
    return Interval(iv.estimate * factor, iv.low * factor, iv.high * factor)


def _triple(row: Mapping[Any, Any], name: str) -> str:
    return " / ".join(_num(row[f"{name}_p{q}"]) for q in (50, 90, 99))


def _num(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) and math.isfinite(value) else DASH


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
