"""``echo-bench dashboard``: a static site of every spec's runs over time.

Layout of ``--out`` (plain files: open ``index.html`` from disk, no server, nothing
fetched from elsewhere)::

    index.html               specs, their runs and step changes; runs skipped and why
    <spec>/index.html        step changes listed first; per GPU, every cell's trends
    <spec>/<cell>.html       one cell: each figure across runs, every point a link

Figures come from the per-run summaries (:mod:`bench.analysis.run_summary`, computed
once per run), and step changes from :func:`bench.analysis.history.flag_rows`, the rule
``echo-bench history`` prints (the step rule of :mod:`bench.analysis.steps`, with its
sizes): the dashboard has no rule of its own. Points link
to the run's ``report.html`` (relative to the page, so the site works beside the
results folder it was built from), or to its manifest where no report was rendered.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from bench.analysis.history import StepChange, describe_rule, flag_rows, history_rows
from bench.analysis.run_summary import Skipped, collect_summaries
from bench.report.dashboard_svg import Point, trend_svg
from bench.store.layout import MANIFEST, safe_slug


@dataclass(frozen=True)
class Trend:
    """A figure drawn across runs: summary columns, display scale and unit, and the
    :data:`bench.analysis.history.STEP_RULES` metric whose steps it marks."""

    name: str
    label: str
    value: str
    lo: str | None
    hi: str | None
    scale: float = 1.0
    unit: str = ""
    step_metric: str | None = None


TRENDS: tuple[Trend, ...] = (
    Trend("rtf", "median RTF (95 % CI)", "rtf_median", "rtf_lo", "rtf_hi", step_metric="rtf"),
    Trend("wer", "corpus WER % (95 % CI)", "corpus_wer", "corpus_wer_lo", "corpus_wer_hi",
          scale=100, step_metric="wer_errors"),
    Trend("sim", "SIM (95 % CI)", "sim", "sim_lo", "sim_hi", step_metric="sim"),
    Trend("utmos", "UTMOS (95 % CI)", "utmos", "utmos_lo", "utmos_hi", step_metric="utmos"),
    Trend("dnsmos", "DNSMOS OVRL (95 % CI)", "dnsmos_ovrl", "dnsmos_ovrl_lo", "dnsmos_ovrl_hi",
          step_metric="dnsmos_ovrl"),
    Trend("memory", "peak memory GB", "peak_memory", None, None, scale=1e-9, unit=" GB"),
)

_DIRECTION = {"slower": "worse", "faster": "better", "worse": "worse", "better": "better"}


@dataclass(frozen=True)
class StepRow:
    """A step change as the site lists it."""

    spec: str
    run_id: str
    date: str
    commit: str
    hardware: str
    cell_id: str
    cell_label: str
    figure: str
    change: str
    interval: str  # the change's anytime-valid interval, in its own words
    n_pairs: int
    direction: str  # "worse" or "better"


@dataclass
class Dashboard:
    """What a build wrote: the index page, runs drawn per spec, the runs skipped with
    their reasons, every step change, and how many run summaries were computed now."""

    index: Path
    runs: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    steps: list[StepRow] = field(default_factory=list)
    computed: int = 0


def build_dashboard(root: str | os.PathLike[str], out: str | os.PathLike[str], *,
                    factor: float = 1.1, alpha: float = 0.05,
                    workers: int | None = None) -> Dashboard:
    """Write the site for the runs in ``root``'s history index into ``out``."""
    root, out = Path(root), Path(out)
    collected = collect_summaries(root, complete_only=True, workers=workers)
    result = Dashboard(index=out / "index.html", skipped=collected.skipped,
                       computed=collected.computed)
    by_spec: dict[str, list[dict[str, Any]]] = {}
    for summary in collected.summaries:
        by_spec.setdefault(str(summary.get("spec_name")), []).append(summary)
    listing = []
    for spec, summaries in sorted(by_spec.items()):
        rows = flag_rows(history_rows(summaries), factor=factor, alpha=alpha)
        links = _report_links(root, collected.dirs, out / _slug(spec))
        steps = _step_rows(spec, rows)
        skipped = [s for s in collected.skipped if s.spec_name == spec]
        _write_spec(out / _slug(spec), spec, rows, links, steps, skipped)
        result.runs[spec] = len(summaries)
        result.steps += steps
        listing.append((spec, summaries, steps))
    _write(result.index, _index_page(listing, result.skipped, factor, alpha))
    return result


# --------------------------------------------------------------------------- data


def _slug(name: str) -> str:
    return safe_slug(name, 80) or "unnamed"


def _report_links(root: Path, dirs: Mapping[str, Path], page_dir: Path) -> dict[str, str]:
    """run id -> link from ``page_dir`` to its report (its manifest without one)."""
    links = {}
    for run_id, run_dir in dirs.items():
        report = run_dir / "report.html"
        target = report if report.is_file() else run_dir / MANIFEST
        links[run_id] = Path(os.path.relpath(target.resolve(), page_dir.resolve())).as_posix()
    return links


def _changes(row: Mapping[str, Any]) -> list[StepChange]:
    return [c for c in row.get("changes") or [] if c.step]


def _step_rows(spec: str, rows: Iterable[Mapping[str, Any]]) -> list[StepRow]:
    labels = {t.step_metric: t for t in TRENDS if t.step_metric}
    out = []
    for row in rows:
        for c in _changes(row):
            trend = labels[c.metric]
            out.append(StepRow(
                spec=spec, run_id=str(row["run_id"]), date=_date(row),
                commit=str(row.get("git_commit") or "-")[:9], hardware=str(row["hardware"]),
                cell_id=str(row["cell_id"]), cell_label=str(row.get("cell_label") or ""),
                figure=trend.label.split(" (")[0], change=_change_text(c),
                interval=_interval_text(c), n_pairs=c.n_pairs, direction=_DIRECTION[c.step]))
    return sorted(out, key=lambda s: (s.date, s.run_id), reverse=True)


def _change_text(c: StepChange) -> str:
    if c.metric == "rtf":
        return f"x{c.change:.3f} ({(c.change - 1) * 100:+.1f} %)"
    if c.metric == "wer_errors":
        return f"{c.change * 100:+.2f} WER points"
    return f"{c.change:+.3f}"


def _interval_text(c: StepChange) -> str:
    if c.metric == "rtf":
        return f"[x{c.low:.3f}, x{c.high:.3f}]"
    if c.metric == "wer_errors":
        return f"[{c.low * 100:+.2f}, {c.high * 100:+.2f}] points"
    return f"[{c.low:+.3f}, {c.high:+.3f}]"


def _date(row: Mapping[str, Any]) -> str:
    return str(row.get("started_at") or "")[:10]


def _points(rows: Sequence[Mapping[str, Any]], trend: Trend, links: Mapping[str, str]
            ) -> list[Point]:
    points = []
    for row in rows:
        value = _number(row.get(trend.value)) * trend.scale
        lo = _number(row.get(trend.lo)) * trend.scale if trend.lo else math.nan
        hi = _number(row.get(trend.hi)) * trend.scale if trend.hi else math.nan
        notes = []
        if row.get("adaptive"):
            notes.append("staged run (adaptive, or checked against the last full run): "
                         "cells may stop early, on fewer generations")
        if row.get("random_weights"):
            notes.append("random weights: speed only, quality not meaningful")
        step = ""
        for c in _changes(row):
            if c.metric == trend.step_metric:
                step = _DIRECTION[c.step]
                notes.append(f"STEP {c.step}: {_change_text(c)} {_interval_text(c)}, "
                             f"{c.n_pairs} pairs")
        interval = (f" [{lo:.4g}, {hi:.4g}]" if math.isfinite(lo) and math.isfinite(hi)
                    else "")
        title = (f"{row['run_id']} · {_date(row)} · commit "
                 f"{str(row.get('git_commit') or '-')[:9]} · {trend.label.split(' (')[0]} "
                 f"{value:.4g}{interval}" + "".join(f" · {n}" for n in notes))
        points.append(Point(value, lo, hi, links.get(str(row["run_id"]), ""), title,
                            hollow=bool(row.get("adaptive") or row.get("random_weights")),
                            step=step))
    return points


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else math.nan


def _recorded(rows: Iterable[Mapping[str, Any]], trend: Trend) -> bool:
    return any(math.isfinite(_number(r.get(trend.value))) for r in rows)


# --------------------------------------------------------------------------- pages


CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;
max-width:1260px;padding:12px;color:#222}
h1{font-size:22px;margin:6px 0}h2{font-size:18px;margin:18px 0 6px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:12px 0 4px}
table{border-collapse:collapse}td,th{padding:3px 6px;border-bottom:1px solid #eee;
text-align:left;vertical-align:middle}th{background:#f4f4f4}
.worse{color:#b00}.better{color:#080}.note{color:#555}.tick{font-size:10px;fill:#555}
.none{font-size:11px;fill:#999}.cells td{padding:2px 3px}.cells th{font-size:12px}
a{color:#1a5fa8}svg.trend{display:block}td.label{width:150px;font-size:12px}
.legend span{margin-right:14px}
"""

LEGEND = ('<p class="legend note"><span>● run (click: its report)</span>'
          '<span>○ adaptive or random-weight run</span>'
          '<span class="worse">▲ step: worse / slower</span>'
          '<span class="better">▼ step: better / faster</span>'
          '<span>band: 95 % interval</span></p>')


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=1280"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")


def _write(path: Path, text: str) -> None:
    """Whole files only: a browser tab or an upload never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _steps_table(steps: Sequence[StepRow], links: Mapping[str, str], *,
                 cell_links: bool) -> str:
    if not steps:
        return '<p class="note" id="steps">No step changes.</p>'
    head = ("<tr><th>date</th><th>run</th><th>commit</th><th>GPU</th><th>cell</th>"
            "<th>figure</th><th>change</th><th>interval</th><th>pairs</th></tr>")
    body = []
    for s in steps:
        cell = escape(s.cell_label)
        if cell_links:
            cell = f'<a href="{escape(_slug(s.cell_id))}.html">{cell}</a>'
        body.append(
            f'<tr class="{s.direction}"><td>{escape(s.date)}</td>'
            f'<td><a href="{escape(links.get(s.run_id, ""))}">{escape(s.run_id)}</a></td>'
            f"<td><code>{escape(s.commit)}</code></td><td>{escape(s.hardware)}</td>"
            f"<td>{cell}</td><td>{escape(s.figure)}</td>"
            f'<td class="{s.direction}">{escape(s.change)} ({s.direction})</td>'
            f"<td>{escape(s.interval)}</td><td>{s.n_pairs}</td></tr>")
    return f'<table id="steps">{head}{"".join(body)}</table>'


def _skipped_table(skipped: Sequence[Skipped]) -> str:
    if not skipped:
        return ""
    rows = "".join(f"<tr><td>{escape(s.run_id)}</td><td>{escape(s.spec_name)}</td>"
                   f"<td>{escape(s.reason)}</td></tr>" for s in skipped)
    return (f'<h2>Runs skipped ({len(skipped)})</h2><table id="skipped"><tr><th>run</th>'
            f"<th>spec (index)</th><th>why</th></tr>{rows}</table>")


def _index_page(listing: Sequence[tuple[str, Sequence[Mapping[str, Any]], Sequence[StepRow]]],
                skipped: Sequence[Skipped], factor: float, alpha: float) -> str:
    rows = []
    for spec, summaries, steps in listing:
        first = str(summaries[0].get("started_at") or "")[:10]
        last = str(summaries[-1].get("started_at") or "")[:10]
        worse = sum(s.direction == "worse" for s in steps)
        rows.append(f'<tr><td><a href="{escape(_slug(spec))}/index.html">{escape(spec)}</a></td>'
                    f"<td>{len(summaries)}</td><td>{first} .. {last}</td>"
                    f'<td>{len(steps)} (<span class="worse">{worse} worse</span>)</td></tr>')
    table = ("<table id=\"specs\"><tr><th>spec</th><th>runs</th><th>dates</th>"
             f"<th>step changes</th></tr>{''.join(rows)}</table>" if rows
             else "<p>No finished runs in the history index.</p>")
    body = (f"<h1>echo-bench dashboard</h1><p class=\"note\">{_rule_note(factor, alpha)}</p>"
            f"{table}{_skipped_table(skipped)}")
    return _page("echo-bench dashboard", body)


def _rule_note(factor: float, alpha: float) -> str:
    rule = describe_rule(factor, alpha)
    return f"{escape(rule[0].upper() + rule[1:])} (the rule of <code>echo-bench history</code>)."


def _write_spec(folder: Path, spec: str, rows: Sequence[Mapping[str, Any]],
                links: Mapping[str, str], steps: Sequence[StepRow],
                skipped: Sequence[Skipped]) -> None:
    cells: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for row in rows:
        cells.setdefault(str(row["hardware"]), {}).setdefault(str(row["cell_id"]), []).append(row)
    n_runs = len({r["run_id"] for r in rows})
    sections = []
    for hardware, by_cell in cells.items():
        trends = [t for t in TRENDS if any(_recorded(c, t) for c in by_cell.values())]
        head = "".join(f"<th>{escape(t.label)}</th>" for t in trends)
        body = []
        for cell_id, cell_rows in by_cell.items():
            label = str(cell_rows[-1].get("cell_label") or cell_id)
            short = label.replace(f" gpu={hardware}", "")  # the section names the GPU
            page = f"{_slug(cell_id)}.html"
            # Points once per figure: the small chart here and the cell's page share them.
            points = {t.name: _points(cell_rows, t, links) for t in trends}
            charts = "".join(
                f'<td><a href="{escape(page)}#{t.name}">'
                f"{trend_svg(points[t.name], width=168, height=60, links=False, axis=False)}"
                f"</a>{_latest(cell_rows, t)}</td>" for t in trends)
            body.append(f'<tr><td class="label"><a href="{escape(page)}">{escape(short)}</a>'
                        f'<br><span class="note">{len(cell_rows)} runs</span></td>{charts}</tr>')
            charted = [(t, points[t.name]) for t in trends if _recorded(cell_rows, t)]
            _write(folder / page, _cell_page(spec, hardware, label, cell_rows, charted,
                                             [s for s in steps if s.cell_id == cell_id], links))
        sections.append(f'<h2 id="gpu-{escape(_slug(hardware))}">{escape(hardware)}</h2>'
                        f'<table class="cells"><tr><th>cell</th>{head}</tr>{"".join(body)}</table>')
    page = (f'<p><a href="../index.html">all specs</a></p><h1>{escape(spec)}: {n_runs} runs</h1>'
            f"<h2>Step changes ({len(steps)}), newest first</h2>"
            f"{_steps_table(steps, links, cell_links=True)}{LEGEND}{''.join(sections)}"
            f"{_skipped_table(skipped)}")
    _write(folder / "index.html", _page(f"{spec}: dashboard", page))


def _latest(rows: Sequence[Mapping[str, Any]], trend: Trend) -> str:
    value = _number(rows[-1].get(trend.value)) * trend.scale
    text = f"last {value:.4g}{trend.unit}" if math.isfinite(value) else "last: none"
    return f'<div class="note">{text}</div>'


def _cell_page(spec: str, hardware: str, label: str, rows: Sequence[Mapping[str, Any]],
               charted: Sequence[tuple[Trend, list[Point]]], steps: Sequence[StepRow],
               links: Mapping[str, str]) -> str:
    dates = [_date(r)[2:] for r in rows]
    charts = "".join(
        f'<h3 id="{t.name}">{escape(t.label)}</h3>'
        f"{trend_svg(points, width=1220, height=230, labels=dates, unit=t.unit)}"
        for t, points in charted)
    body = (f'<p><a href="index.html">{escape(spec)}</a> · <a href="../index.html">all specs'
            f"</a></p><h1>{escape(label)}</h1><p class=\"note\">{escape(hardware)}, "
            f"{len(rows)} runs, {escape(dates[0])} .. {escape(dates[-1])}</p>"
            f"<h2>Step changes ({len(steps)})</h2>{_steps_table(steps, links, cell_links=False)}"
            f"{LEGEND}{charts}")
    return _page(f"{label}: {spec}", body)
