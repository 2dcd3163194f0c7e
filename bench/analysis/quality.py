"""Quality beyond WER, per cell: the protocol's WER, SIM, UTMOS and DNSMOS with intervals,
the speed frontiers against each, and the control rows beside them.

Score lines may carry, per generation (written by the scoring metrics): ``sim`` (cosine
of speaker embeddings of the output and the prompt's speaker reference), ``sim_gt``
(against the prompt's ground-truth recording), ``sim_model``, ``utmos``, ``dnsmos_sig``,
``dnsmos_bak``, ``dnsmos_ovrl``, and ``<metric>_skipped`` (why a metric was not scored,
e.g. "too short"). Every figure here is a mean over generations with a 95 % cluster
bootstrap interval that resamples prompts (seeds of one prompt move together), the same
routine as WER (:mod:`bench.scoring.stats`). A metric no record carries is left out.

When the TTS weights (or the ASR) are random, a row's quality figures are not printed
(a number from noise would be read as a measurement) and the rows left out are named
once, in one line (:func:`not_meaningful_line`), not cell by cell.

Pure functions of record tables (:func:`bench.store.run_store.load_records`); the report, the
history and the notebook can share them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.cells import NOT_MEANINGFUL
from bench.analysis.evidence import quality_is_meaningful
from bench.analysis.frontier import pareto_mask
from bench.scoring.outcomes import column, has_scores, quality_scores
from bench.scoring.protocols import DEFAULT_PROTOCOL, PROTOCOLS, get_protocol, headline_wer
from bench.scoring.stats import ratio_interval
from bench.scoring.wer import summarize

__all__ = [
    "METRICS",
    "Metric",
    "QualitySection",
    "meaningful_rows",
    "metric_columns",
    "not_meaningful_line",
    "quality_figures",
    "quality_html",
    "quality_markdown",
    "quality_section",
]


@dataclass(frozen=True)
class Metric:
    """A per-generation quality column: its record name, label and direction."""

    name: str
    label: str
    higher_is_better: bool = True
    frontier: bool = False  # drawn as a speed frontier of its own


METRICS: tuple[Metric, ...] = (
    Metric("sim", "SIM", frontier=True),
    Metric("sim_gt", "SIM vs ground truth"),
    Metric("utmos", "UTMOS", frontier=True),
    Metric("dnsmos_ovrl", "DNSMOS OVRL"),
    Metric("dnsmos_sig", "DNSMOS SIG"),
    Metric("dnsmos_bak", "DNSMOS BAK"),
)


def _finite(value: Any) -> bool:
    return (isinstance(value, int | float | np.integer | np.floating)
            and not isinstance(value, bool) and math.isfinite(float(value)))


def metric_columns(records: pd.DataFrame) -> list[Metric]:
    """The metrics that at least one record carries a number for."""
    return [m for m in METRICS if any(_finite(v) for v in column(records, m.name))]


def _metric_figures(ok: pd.DataFrame, metric: Metric, *, n_boot: int, seed: int
                    ) -> dict[str, Any]:
    values = column(ok, metric.name)
    present = np.asarray([_finite(v) for v in values])
    x = np.asarray([float(v) if p else 0.0 for v, p in zip(values, present, strict=True)])
    out: dict[str, Any] = {f"{metric.name}_n": int(present.sum())}
    skipped = column(ok, f"{metric.name}_skipped").dropna()
    out[f"{metric.name}_n_skipped"] = len(skipped)
    reasons = skipped.astype(str).value_counts()
    out[f"{metric.name}_skip_reasons"] = "; ".join(f"{n} {r}" for r, n in reasons.items())
    if not present.any():
        out.update({metric.name: math.nan, f"{metric.name}_lo": math.nan,
                    f"{metric.name}_hi": math.nan})
        return out
    interval = ratio_interval(x, present.astype(np.float64),
                              list(column(ok, "prompt_id")), n_boot=n_boot, seed=seed)
    out.update({metric.name: interval.estimate, f"{metric.name}_lo": interval.low,
                f"{metric.name}_hi": interval.high})
    return out


def _protocol_of(rows: pd.DataFrame) -> str:
    names = {str(v) for v in column(rows, "wer_protocol").dropna()}
    if not names:
        return DEFAULT_PROTOCOL if len(rows) else ""
    return names.pop() if len(names) == 1 else "mixed"


def quality_figures(records: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
                    metrics: Sequence[Metric] | None = None) -> pd.DataFrame:
    """One row per cell (first-appearance order), indexed by ``cell_id``.

    Columns: ``cell_label``; ``meaningful`` (False: random weights or ASR); ``control``;
    ``wer_protocol`` and ``wer`` / ``wer_lo`` / ``wer_hi`` (the protocol's headline WER:
    mean per-utterance or corpus); per metric present: ``<m>``, ``<m>_lo``, ``<m>_hi``,
    ``<m>_n``, ``<m>_n_skipped`` and ``<m>_skip_reasons``; ``rtf_median`` (ok rows).
    """
    rows: list[dict[str, Any]] = []
    if not len(records) or "cell_id" not in records.columns:
        return pd.DataFrame(rows)
    # Every metric asked for gets its columns (NaN where this table has no figure), so a
    # table of cells and one of controls are read with the same metric list.
    metrics = metric_columns(records) if metrics is None else list(metrics)
    run_scored = has_scores(records)
    for cell_id, group in records.groupby("cell_id", sort=False):
        ok = group[column(group, "status") == "ok"]
        # WER under the failures-and-silence rule (bench.scoring.outcomes), as in the cells table.
        scored, scores = quality_scores(group, scored=run_scored)
        rtf = [float(v) for v in column(ok, "rtf") if _finite(v)]
        row: dict[str, Any] = {
            "cell_id": cell_id,
            "cell_label": next(iter(column(group, "cell_label").dropna()), cell_id),
            "control": any(bool(v) is True for v in column(group, "control").dropna()),
            "meaningful": quality_is_meaningful(ok),
            "wer_protocol": _protocol_of(scored),
            "rtf_median": float(np.median(rtf)) if rtf else math.nan,
        }
        row["wer"] = row["wer_lo"] = row["wer_hi"] = math.nan
        if scores and row["wer_protocol"] in PROTOCOLS:
            quality = summarize(scores, n_boot=n_boot, seed=seed,
                                cluster=list(column(scored, "prompt_id")))
            value, (low, high) = headline_wer(quality, get_protocol(row["wer_protocol"]))
            row.update(wer=value, wer_lo=low, wer_hi=high)
        for metric in metrics:
            row.update(_metric_figures(ok, metric, n_boot=n_boot, seed=seed))
        rows.append(row)
    figures = pd.DataFrame(rows).set_index("cell_id", drop=False)
    return add_quality_frontiers(figures, metrics)


def add_quality_frontiers(figures: pd.DataFrame, metrics: Sequence[Metric]) -> pd.DataFrame:
    """``front_<metric>``: no other generated cell is both faster (median RTF) and better
    on that metric; controls are never on a front (they were not generated)."""
    out = figures.copy()
    generated = ~out["control"].astype(bool).to_numpy()
    rtf = np.where(generated, out["rtf_median"].to_numpy(dtype=np.float64), np.nan)
    for metric in (m for m in metrics if m.frontier):
        values = out[metric.name].to_numpy(dtype=np.float64)
        out[f"front_{metric.name}"] = pareto_mask(rtf, -values if metric.higher_is_better
                                                  else values)
    return out


# --------------------------------------------------------------------------- a report block


@dataclass
class QualitySection:
    """What the report shows: the run's cells and its control rows, with one protocol."""

    figures: pd.DataFrame
    controls: pd.DataFrame
    metrics: list[Metric]
    protocol: str
    notes: list[str] = field(default_factory=list)

    @property
    def meaningful(self) -> bool:
        return bool(len(self.figures)) and bool(self.figures["meaningful"].all())


def quality_section(run_dir: Path, records: pd.DataFrame | None = None, *,
                    n_boot: int = 1000) -> QualitySection:
    """The quality block of a run: its cells and the control runs in ``<run>/controls``."""
    from bench.scoring.controls import control_dirs
    from bench.store.records import load_records

    records = load_records(run_dir) if records is None else records
    control_records = [load_records(d) for d in control_dirs(run_dir)]
    metrics = metric_columns(pd.concat([records, *control_records]))
    figures = quality_figures(records, n_boot=n_boot, metrics=metrics)
    frames = [quality_figures(r, n_boot=n_boot, metrics=metrics) for r in control_records]
    controls = pd.concat(frames) if frames else pd.DataFrame()
    protocols = set(column(figures, "wer_protocol").dropna()) - {""}
    protocol = protocols.pop() if len(protocols) == 1 else ("mixed" if protocols else "")
    notes = []
    if protocol == "mixed":
        notes.append("generations were scored under different WER protocols; re-score with "
                     "`echo-bench score RUN --protocol NAME`")
    return QualitySection(figures, controls, metrics, protocol, notes)


def _fmt(value: float, lo: float, hi: float, *, pct: bool) -> str:
    if not math.isfinite(value):
        return "—"
    if pct:
        return f"{value * 100:.2f} % [{lo * 100:.2f}, {hi * 100:.2f}]"
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def _cells_of(row: pd.Series, metrics: Sequence[Metric]) -> list[str]:
    out = [_fmt(row["wer"], row["wer_lo"], row["wer_hi"], pct=True)]
    for m in metrics:
        text = _fmt(row[m.name], row[f"{m.name}_lo"], row[f"{m.name}_hi"], pct=False)
        if row[f"{m.name}_n_skipped"]:
            text += f" ({row[f'{m.name}_n_skipped']} not scored)"
        out.append(text)
    return out


def meaningful_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a figures table whose quality means something (not random weights or
    ASR): the only ones a table or a figure shows."""
    if not len(frame):
        return frame
    return frame[frame["meaningful"].astype(bool)]


def not_meaningful_line(section: QualitySection) -> str:
    """One sentence for the rows left out as not meaningful; "" when there are none.

    A table of random-weight figures is a table of one sentence repeated (the smoke
    report's was 17 rows x 5 columns of it), so the rows are named once instead."""
    left_out = [prefix + str(label)
                for prefix, frame in (("", section.figures), ("control: ", section.controls))
                if len(frame)
                for label in frame.loc[~frame["meaningful"].astype(bool), "cell_label"]]
    if not left_out:
        return ""
    scored = ", ".join(["WER", *(m.label for m in section.metrics)])
    if len(left_out) == len(section.figures) + len(section.controls):
        which = f"all {len(left_out)} rows ({len(section.figures)} cells"
        which += f", {len(section.controls)} control)" if len(section.controls) else ")"
    else:
        which = f"{len(left_out)} rows ({', '.join(left_out)})"
    return (f"Quality {NOT_MEANINGFUL}: the TTS weights or the ASR are random, so no "
            f"figure of {scored} is shown for {which}; they stay in the run's scores.")


def _table_rows(section: QualitySection) -> list[tuple[str, pd.Series]]:
    return [(prefix + str(row["cell_label"]), row)
            for prefix, frame in (("", section.figures), ("control: ", section.controls))
            for _, row in meaningful_rows(frame).iterrows()]


def quality_markdown(section: QualitySection, escape: Any = str) -> list[str]:
    """Markdown lines of the quality block (empty when nothing was scored)."""
    figures = section.figures
    if not len(figures) or not (figures["wer"].notna().any() or section.metrics):
        return []
    protocol = PROTOCOLS.get(section.protocol)
    wer_label = protocol.headline_label if protocol else f"WER ({section.protocol})"
    lines = [""]
    rows = _table_rows(section)
    if rows:
        head = ["cell", wer_label, *[m.label for m in section.metrics]]
        lines += [f"**Quality** ({wer_label}; means with 95 % bootstrap intervals over "
                  "prompts; SIM and MOS higher is better)", "",
                  "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        lines += ["| " + " | ".join([escape(label), *_cells_of(row, section.metrics)]) + " |"
                  for label, row in rows]
    shown = meaningful_rows(figures)
    for metric in (m for m in section.metrics if m.frontier):
        flag = f"front_{metric.name}"
        front = shown[shown[flag].astype(bool)] if flag in shown.columns else shown[:0]
        if len(front) and section.meaningful:
            lines += ["", f"Frontier of speed against {metric.label}: "
                      + ", ".join(escape(label) for label in front["cell_label"])]
    line = not_meaningful_line(section)
    if line:
        lines += ["", f"> **Quality beyond WER**: {escape(line)}"]
    lines += [f"- {escape(note)}" for note in section.notes]
    return lines


def quality_html(section: QualitySection) -> str:
    """The quality block as an HTML table (every text escaped); "" when nothing scored."""
    from html import escape

    figures = section.figures
    if not len(figures) or not (figures["wer"].notna().any() or section.metrics):
        return ""
    protocol = PROTOCOLS.get(section.protocol)
    wer_label = protocol.headline_label if protocol else f"WER ({section.protocol})"
    parts = []
    rows = _table_rows(section)
    if rows:
        head = "".join(f"<th>{escape(h)}</th>"
                       for h in ["cell", wer_label, *[m.label for m in section.metrics]])
        body = []
        for label, row in rows:
            cells = "".join(f'<td class="n">{escape(c)}</td>'
                            for c in _cells_of(row, section.metrics))
            body.append(f"<tr><td>{escape(label)}</td>{cells}</tr>")
        parts += [f"<p>Means with 95 % bootstrap intervals over prompts; SIM and MOS higher "
                  f"is better; WER is the {escape(wer_label)}.</p>",
                  f'<div class="wide"><table id="quality-table"><tr>{head}</tr>'
                  f'{"".join(body)}</table></div>']
    line = not_meaningful_line(section)
    if line:
        parts.append(f'<p class="explain" id="quality-not-meaningful">{escape(line)}</p>')
    parts += [f"<p>{escape(note)}</p>" for note in section.notes]
    return "\n".join(parts)
