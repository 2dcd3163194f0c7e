"""The report's "Checked against the last full run" section of a history-aware run
(``[history]``): which run each cell was checked against, what was found (a step, no
step, or still open when the draws ran out) with each metric's interval, and what was
not run, read from the run's log (``nightly.json``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bench.analysis.run_analysis import RunAnalysis
from bench.spec.history_aware import HISTORY_LOG
from bench.store.files import read_json

_FOUND = {"step": "step", "none": "no regression", "open": "open (every draw run)"}
_UNITS = {"speed": "RTF x", "wer": "WER pts", "sim": "SIM", "mos": "UTMOS", "dnsmos": "DNSMOS"}


@dataclass
class HistorySection:
    """What the section shows: the reference and the run's spend, one row per cell."""

    summary: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)


def history_section(analysis: RunAnalysis) -> HistorySection | None:
    """None for a run that was not checked against an earlier one."""
    path = analysis.run_dir / HISTORY_LOG
    if not path.is_file():
        return None
    log = read_json(path)
    ref = log.get("reference") or {}
    stages = log.get("stages") or []
    n_draws = int(log.get("n_draws") or 0)
    full = int(log.get("full_generations") or 0)
    ran = len(analysis.records)
    spent = float(stages[-1].get("seconds") or 0.0) if stages else 0.0
    ref_seconds = float(log.get("full_seconds_reference") or 0.0)
    rule = log.get("rule") or {}
    sizes = rule.get("sizes") or {}
    settings = log.get("settings") or {}
    commit = str(ref.get("git_commit") or "")[:10]
    confidence = float(rule.get("confidence", 0.95))
    share = f" ({ran / full:.0%})" if full else ""
    compute = f" ({spent / ref_seconds:.0%})" if ref_seconds > 0 else ""
    summary = [
        f"Checked against {ref.get('run_id')} (the last full run of this spec, started "
        f"{ref.get('started_at')}{', commit ' + commit if commit else ''}), twin by twin: "
        "the same prompt, seed and repeat.",
        f"Ran {ran} of the spec's {full} generations{share}; compute {spent:.1f} s against "
        f"the full run's {ref_seconds:.1f} s{compute}.",
        f"Every cell ran {settings.get('first_batch')} of the {n_draws} draws (a prompt and a "
        f"seed) first, then {settings.get('batch')} per look while a regression beyond its "
        "step was still possible. Steps: speed x"
        f"{sizes.get('speed_factor')}, corpus WER {sizes.get('wer_points')} points, SIM "
        f"{sizes.get('sim')}, UTMOS {sizes.get('mos')}; a step is flagged at "
        f"{confidence:.0%} (a cell that did not change is flagged with chance at most "
        f"{1 - confidence:.0%}), \"no regression\" at "
        f"{float(rule.get('none_confidence', 0.8)):.0%} (one-sided: the bound shown). A cell "
        "stops once no regression is possible; an improvement is flagged only if it shows "
        "by then.",
        f"Quality: {log.get('quality') or 'not compared'}. Stopped: "
        f"{log.get('stop') or 'not yet (the run is unfinished)'}. What was not run "
        "stands as the reference run measured it; the weekly full run audits it.",
    ]
    cells = log.get("cells") or {}
    labels = dict(zip(analysis.cells.index.astype(str), analysis.cells["cell_label"],
                      strict=True))
    rows = []
    for cid, label in labels.items():
        found = cells.get(cid) or {}
        draws = int(found.get("draws") or 0)
        metrics = found.get("metrics") or {}
        rows.append({
            "cell_id": cid, "cell_label": label, "draws": draws,
            "not_run": max(0, n_draws - draws),
            "found": _FOUND.get(str(found.get("state")), "not decided"),
            "step": found.get("state") == "step",
            "detail": "; ".join(_metric_text(m, v) for m, v in metrics.items()),
        })
    return HistorySection(summary, rows)


def _metric_text(metric: str, m: dict[str, Any]) -> str:
    """The change with its interval (the step's level) against the step; "no step" with
    the one-sided bound it was read from."""
    state = {"step": f"step {m.get('direction', '')}".strip(), "none": "no regression",
             "open": "open"}.get(str(m.get("state")), str(m.get("state")))
    bound = m.get("bound")
    if m.get("state") == "none" and isinstance(bound, int | float) and math.isfinite(bound):
        state += f" (bound {bound:.3g})"
    return (f"{_UNITS.get(metric, metric)} {m['estimate']:.3g} [{m['low']:.3g}, "
            f"{m['high']:.3g}] vs {m['size']:g}: {state}")


def markdown(section: HistorySection) -> str:
    lines = ["## Checked against the last full run", "", *section.summary, "",
             "| cell | draws run | not run | found | per metric: change [interval] vs step |",
             "|---|---:|---:|---|---|"]
    for r in section.rows:
        lines.append(f"| {r['cell_label']} `{r['cell_id']}` | {r['draws']} | {r['not_run']} | "
                     f"{r['found']} | {r['detail']} |")
    return "\n".join(lines)
