"""A short Markdown summary of a run, for pull-request comments and CI job summaries.

Plain GitHub-flavoured Markdown: a headline table (one row per hardware), the frontier
cells, failures by count, and — given a baseline run — the changes per cell. Text from
prompts, specs or errors is escaped so it cannot break the table or inject markup.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from bench.analysis.cells import NOT_MEANINGFUL
from bench.analysis.quality import quality_markdown, quality_section
from bench.analysis.run_analysis import RunAnalysis
from bench.report import adaptive as adaptive_report
from bench.report import nightly as nightly_report
from bench.report import predictions as predictions_report
from bench.report.html import DASH, fmt_money, fmt_number, fmt_pct
from bench.report.run_cost import run_cost_text
from bench.scoring.outcomes import usable

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def escape(text: Any) -> str:
    """``text`` safe inside a Markdown table cell: special characters backslashed, line
    breaks flattened, HTML angle brackets neutralised."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _wer(analysis: RunAnalysis, value: float) -> str:
    status = analysis.quality_status
    if status == "not meaningful":
        return NOT_MEANINGFUL
    if status == "not scored":
        return "not scored"
    return fmt_pct(value)


def render_markdown(analysis: RunAnalysis, comparison: pd.DataFrame | None = None,
                    baseline_run: str | None = None) -> str:
    """The summary as Markdown text."""
    m = analysis.manifest
    commit = str((m.get("environment") or {}).get("git_commit") or DASH)[:9]
    lines = [
        f"### echo-bench: {escape(m.get('spec_name', ''))} — run `{m.get('run_id', '')}`",
        "",
        f"{len(analysis.cells)} cells · status {escape(m.get('status', 'unknown'))} · "
        f"commit `{commit}` · {int(analysis.cells['n_ok'].sum())} ok, "
        f"{int(analysis.cells['n_failed'].sum())} failed generations",
        "",
    ]
    cost = run_cost_text(m)
    if cost:
        lines += [escape(cost), ""]
    if analysis.quality_status == "not meaningful":
        lines += ["> **Quality figures not meaningful: random weights.** The choices below "
                  "are on speed alone.", ""]
    elif analysis.quality_status == "not scored":
        lines += ["> **Quality not scored.** The choices below are on speed alone.", ""]
    lines += [
        f"**Best settings per hardware** (corpus WER budget: baseline + "
        f"{analysis.wer_budget_points:g} points; RTF = compute s per audio s, lower is faster)",
        "",
        "| hardware | choose | median RTF | speed-up vs baseline (RTF ratio) | corpus WER | "
        f"{analysis.prices.currency} / audio hour |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for c in analysis.choices:
        pick = f"{escape(c.cell_label)} (`{c.cell_id}`)" if c.cell_id else \
            f"**none**: {escape(c.cell_label)}"
        lines.append(
            f"| {escape(c.hardware)} | {pick} | "
            f"{fmt_number(c.rtf)} | {fmt_number(c.speedup_rtf)}x | "
            f"{_wer(analysis, c.corpus_wer)} | {fmt_money(c.cost_per_audio_hour)} |")
    lines.append("")
    lines += [f"- {escape(c.hardware)}: {escape(c.note)}" for c in analysis.choices]
    lines += [f"- {escape(hw)}: how firmly the prompts support the choice: "
              f"{escape(s.text(analysis.cell_labels))}" for hw, s in analysis.stability.items()]
    lines += [f"- {escape(note)}" for note in analysis.notes]
    lines += _no_speech_lines(analysis.cells)
    front = analysis.cells[analysis.cells["front_all"].astype(bool)]
    if len(front):
        lines += ["", "Frontier (no other cell is both faster and better): "
                  + ", ".join(f"{escape(label)}" for label in front["cell_label"])]
    lines += quality_markdown(quality_section(analysis.run_dir, analysis.records), escape)
    failures = analysis.failures
    if len(failures):
        lines += ["", f"**{len(failures)} failed generations**:"]
        for error, count in failures["error"].value_counts().head(5).items():
            lines.append(f"- {count} x {escape(error)}")
    if comparison is not None and len(comparison):
        lines += ["", f"**Changes against run `{escape(baseline_run or '')}`** "
                  "(paired by cell id; RTF ratio > 1 is slower)", "",
                  "| cell | RTF before | RTF now | now / before | Δ corpus WER [95 % CI] |",
                  "|---|---:|---:|---:|---:|"]
        for r in comparison.to_dict("records"):
            delta = (_wer(analysis, r["delta_wer"]) if analysis.quality_status != "ok"
                     else _signed_pct(r["delta_wer"], r["delta_wer_lo"], r["delta_wer_hi"]))
            lines.append(f"| {escape(r['cell_label'])} | {fmt_number(r['rtf_baseline'])} | "
                         f"{fmt_number(r['rtf_candidate'])} | {fmt_number(r['rtf_ratio'])} | "
                         f"{delta} |")
    research = predictions_report.section(analysis.records, analysis.manifest, analysis.prices)
    if research is not None:
        lines += ["", predictions_report.markdown(research)]
    adaptive = adaptive_report.adaptive_section(analysis)
    if adaptive is not None:
        lines += ["", adaptive_report.markdown(adaptive)]
    checked = nightly_report.history_section(analysis)
    if checked is not None:
        lines += ["", nightly_report.markdown(checked)]
    return "\n".join(lines) + "\n"


def _no_speech_lines(cells: pd.DataFrame) -> list[str]:
    """The cells that are never recommended, with their share of generations without
    speech (failed, NaN or silent; these count as empty transcripts in every WER)."""
    bad = [r for r in cells.to_dict("records") if not usable(r)]
    if not bad:
        return []
    out = ["", "**Never recommended** (generations that failed or came out NaN or silent; "
           "each counts as an empty transcript in the WER):"]
    for r in bad:
        out.append(f"- {escape(r['cell_label'])} (`{r['cell_id']}`): "
                   f"{int(r['n_failed'])} failed, {int(r['n_nan'])} NaN, "
                   f"{int(r['n_silent'])} silent of {int(r['n'])} "
                   f"({fmt_pct(r['failure_rate'], 0)} no speech)")
    return out


def _signed_pct(value: float, lo: float, hi: float) -> str:
    if not math.isfinite(value):
        return DASH
    return f"{value * 100:+.2f} pts [{lo * 100:+.2f}, {hi * 100:+.2f}]"
