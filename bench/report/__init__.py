"""Reports of a run: a self-contained HTML page, or a short Markdown summary.

Typical use (what ``echo-bench sweep`` calls when a sweep ends)::

    path = render_run_report(run_dir)               # <run_dir>/report.html
    path = render_run_report(run_dir, fmt="md")     # <run_dir>/report.md
"""

from __future__ import annotations

from pathlib import Path

from bench.analysis.headline import DEFAULT_WER_BUDGET_POINTS
from bench.analysis.prices import load_prices
from bench.analysis.run_analysis import analyze_run, compare_runs
from bench.core.errors import UserError

FORMATS: dict[str, str] = {"html": "report.html", "md": "report.md"}


def render_run_report(run_dir: Path, *, out: Path | None = None, baseline: Path | None = None,
                      fmt: str = "html", prices: Path | None = None,
                      wer_budget_points: float = DEFAULT_WER_BUDGET_POINTS,
                      baseline_cell: str | None = None, audio: bool = True) -> Path:
    """Write the report of ``run_dir`` and return its path.

    Args:
        run_dir: a run directory (``manifest.json``, ``records.jsonl``, ...).
        out: file to write; default ``<run_dir>/report.html`` (or ``report.md``). Audio
            clips are linked relative to this file's folder.
        baseline: an earlier run directory to compare with, cell by cell.
        fmt: "html" or "md".
        prices: a price file (TOML) instead of the shipped Modal prices.
        wer_budget_points: WER allowance over the baseline cell, in percentage points.
        baseline_cell: the cell id speed-ups are measured against (default: 40 steps,
            independent CFG, 640 latents on the same hardware).
        audio: link sample clips (off for a report copied away from its run folder).
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / FORMATS[fmt]
    price_table = load_prices(prices)
    analysis = analyze_run(run_dir, prices=price_table, baseline_cell=baseline_cell,
                           wer_budget_points=wer_budget_points)
    comparison = None
    baseline_name = None
    if baseline is not None:
        before = analyze_run(baseline, prices=price_table, wer_budget_points=wer_budget_points)
        comparison = compare_runs(analysis, before)
        baseline_name = str(before.manifest.get("run_id", Path(baseline).name))
    if fmt == "html":
        from bench.report.html import render_html

        text = render_html(analysis, out, comparison, baseline_name, audio=audio)
    else:
        from bench.report.markdown import render_markdown

        text = render_markdown(analysis, comparison, baseline_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)  # a reader (a browser tab, CI upload) never sees half a report
    return out


__all__ = ["FORMATS", "render_run_report"]
