"""The per-generation evidence the adaptive policy, its replay and the headline's
stability read from a record table, and the light cell summary computed from it.

A replay or a resampled headline needs thousands of cell summaries; :func:`cell_summary`
gives the columns of :func:`bench.analysis.cells.summarize_cells` the headline, the
baselines and the frontier read, from one table computed once (a test checks they agree).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.analysis.cells import SETTINGS, hardware_of, quality_is_meaningful, scored_rows
from bench.scoring.outcomes import (
    NO_SPEECH_SCORES,
    column,
    has_scores,
    is_number,
    no_speech,
    quality_scores,
)

#: Quality metrics with a frontier of their own in the report (higher is better).
FRONTIER_METRICS: dict[str, str] = {"sim": "SIM", "utmos": "UTMOS"}


@dataclass
class Evidence:
    """What the policy reads from a record table, computed once so a replay can take
    subsets of it cheaply: ``units`` has one row per generation (``cell_id``,
    ``prompt_id``, ``unit`` "prompt/seed/repeat", ``ok``, ``no_speech``, ``rtf`` (speech
    RTF, inf when a finished generation produced no speech), ``wer_num``/``wer_den``
    (word errors and reference words under :mod:`bench.scoring.outcomes`; NaN when not
    scored), each frontier metric, ``t_total``); ``info`` one row per cell (settings,
    label, hardware); ``quality`` the run's quality status."""

    units: pd.DataFrame
    info: pd.DataFrame
    quality: str  # "ok" | "not meaningful" | "not scored"

    def subset(self, mask: npt.NDArray[np.bool_]) -> Evidence:
        return Evidence(self.units[mask], self.info, self.quality)


def evidence(records: pd.DataFrame) -> Evidence:
    """The policy's view of ``records`` (see :class:`Evidence`)."""
    rows = records.to_dict("records")
    units = pd.DataFrame({
        "cell_id": column(records, "cell_id").astype(str).to_numpy(),
        "prompt_id": column(records, "prompt_id").astype(str).to_numpy(),
        "unit": [f"{r.get('prompt_id')}/{r.get('seed')}/{r.get('repeat')}" for r in rows],
        "ok": [r.get("status") == "ok" for r in rows],
        "no_speech": [no_speech(r) or r.get("score_status") in NO_SPEECH_SCORES for r in rows],
        "t_total": [float(r["t_total"]) if is_number(r.get("t_total")) else math.nan
                    for r in rows],
    }, index=records.index)
    units["rtf"] = [math.inf if dead else float(r["rtf"]) if is_number(r.get("rtf"))
                    else math.nan for r, dead in zip(rows, units["no_speech"], strict=True)]
    units["wer_num"] = math.nan
    units["wer_den"] = math.nan
    scored = has_scores(records)
    rated, scores = quality_scores(records, scored=scored)
    if len(rated):
        units.loc[rated.index, "wer_num"] = [float(s.word_errors) for s in scores]
        units.loc[rated.index, "wer_den"] = [float(s.ref_words) for s in scores]
    for name in FRONTIER_METRICS:
        units[name] = [float(v) if is_number(v) else math.nan for v in column(records, name)]
    info = records.groupby(column(records, "cell_id").astype(str), sort=False).first()
    info = info.reindex(columns=[c for c in ("cell_label", *SETTINGS) if c in records.columns])
    info["hardware"] = [hardware_of(g, d) for g, d in zip(
        column(info, "gpu"), column(info, "device_name"), strict=True)]
    rated_rows = scored_rows(records)
    quality = ("not scored" if not scored else "ok" if quality_is_meaningful(
        rated_rows if len(rated_rows) else records) else "not meaningful")
    return Evidence(units, info, quality)


def cell_summary(ev: Evidence) -> pd.DataFrame:
    """The columns of :func:`bench.analysis.cells.summarize_cells` that the headline,
    the baselines and the frontier read (``rtf_median`` over finished generations with
    no speech as infinitely slow, ``corpus_wer``, the failure counts, ``quality``), from
    :class:`Evidence`; a replay needs thousands of these (a test checks they agree)."""
    u = ev.units
    rows = []
    for cid, g in u.groupby("cell_id", sort=False):
        ok = g[g["ok"]]
        rtf = ok["rtf"].to_numpy(dtype=np.float64)
        rtf = rtf[~np.isnan(rtf)]
        den = float(g["wer_den"].sum(min_count=1)) if g["wer_den"].notna().any() else math.nan
        scored = bool(g["wer_den"].notna().any())
        rows.append({
            "cell_id": cid, **ev.info.loc[str(cid)].to_dict(),
            "n": len(g), "n_ok": len(ok), "n_failed": int((~g["ok"]).sum()),
            "n_nan": 0, "n_silent": int(ok["no_speech"].sum()),
            "rtf_median": _median(rtf),
            "corpus_wer": (float(g["wer_num"].sum()) / den if scored and den > 0 else math.nan),
            "quality": ev.quality if scored else "not scored",
        })
    return pd.DataFrame(rows).set_index("cell_id", drop=False)


def _median(values: npt.NDArray[np.float64]) -> float:
    """numpy's median where infinities count as the largest values (as in summarize_cells)."""
    if not values.size:
        return math.nan
    ordered = np.sort(values)
    mid = (ordered.size - 1) / 2
    lo, hi = ordered[math.floor(mid)], ordered[math.ceil(mid)]
    return float(hi) if math.isinf(hi) else float((lo + hi) / 2)


#: The column :func:`add_paired_baseline_wer` adds and the headline's budget reads.
PAIRED_BASELINE_WER = "baseline_wer_paired"


def add_paired_baseline_wer(cells: pd.DataFrame, units: pd.DataFrame,
                            baseline_of: Mapping[str, str]) -> pd.DataFrame:
    """``cells`` with :data:`PAIRED_BASELINE_WER`: per cell, its baseline's corpus WER over
    the (prompt, seed, repeat) units the cell ran too (NaN when they share none or the
    baseline is unscored). ``baseline_of`` maps each cell id to its baseline's.

    In a full run every cell ran the baseline's units, so this is the baseline's own
    corpus WER. In an adaptive run a cell stopped early ran a few prompts only, and its
    WER on those is only comparable with the baseline's on the same prompts: held against
    the baseline's over every prompt, an easy first batch would pass a cell that the
    policy had found out of budget on the very prompts it ran."""
    per_unit = {cid: g.drop_duplicates("unit").set_index("unit")[["wer_num", "wer_den"]]
                for cid, g in units.groupby(units["cell_id"].astype(str), sort=False)}
    values = []
    for cid in cells.index.astype(str):
        base = per_unit.get(baseline_of.get(cid, ""))
        mine = per_unit.get(cid)
        if base is None or mine is None:
            values.append(math.nan)
            continue
        shared = base.reindex(mine.dropna().index).dropna()  # both scored
        den = float(shared["wer_den"].sum())
        values.append(float(shared["wer_num"].sum()) / den if den > 0 else math.nan)
    return cells.assign(**{PAIRED_BASELINE_WER: values})
