"""Per-cell aggregates of a record table: time statistics, pooled RTF, quality with
intervals, failures, noise. The frontier, cost, headline and whole-run analysis build on
it (``frontier``, ``cost``, ``headline``, ``run_analysis`` beside this module).

Everything in bench.analysis is a pure function of a record table (``bench.store.run_store.load_records``) plus,
for cost, a price table; the report, the notebook and the history command share it.

Units: times in seconds, RTF in compute seconds per second of audio (lower is better),
memory in bytes (GB = 1e9 bytes where shown), WER/CER as fractions (0.05 = 5 %), money
in the price file's currency (USD) per hour of audio produced.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.analysis.evidence import (
    SETTINGS,
    Evidence,
    cell_summary,
    evidence,
    hardware_of,
    quality_is_meaningful,
    scored_rows,
)
from bench.analysis.noise import cell_noise, machine_pace
from bench.scoring.outcomes import (
    NO_SPEECH_SCORES,
    aligned_numbers,
    column,
    has_scores,
    is_number,
    outcome,
    quality_scores,
    truthy,
)

#: Per-generation figures summarised per cell by median, p10 and p90.
TIME_STATS: tuple[str, ...] = (
    "rtf", "rtf_full", "t_text_encode", "t_speaker_encode", "t_sampling", "t_decode",
    "t_total", "t_sampling_per_nfe",
)
#: Stage columns in pipeline order (their medians are what the stage breakdown shows).
STAGES: tuple[str, ...] = ("t_text_encode", "t_speaker_encode", "t_sampling", "t_decode")
NOT_MEANINGFUL = "not meaningful (random weights)"


# --------------------------------------------------------------------------- helpers


def _numbers(values: Iterable[Any]) -> npt.NDArray[np.float64]:
    """Finite floats of ``values`` (None, NaN and non-numbers dropped)."""
    out = []
    for v in values:
        if v is None or isinstance(v, bool | str):
            continue
        f = float(v)
        if math.isfinite(f):
            out.append(f)
    return np.asarray(out, dtype=np.float64)


def _quantile(values: npt.NDArray[np.float64], q: float) -> float:
    """numpy's linear quantile, where infinite values count as the largest (numpy's own
    gives NaN between two infinities)."""
    if not values.size:
        return math.nan
    ordered = np.sort(values)
    pos = q * (ordered.size - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if math.isinf(ordered[hi]):
        return math.inf
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def _max_or_nan(values: Iterable[Any]) -> float:
    numbers = _numbers(values)
    return float(numbers.max()) if numbers.size else math.nan


def _first(values: pd.Series) -> Any:
    present = values.dropna()
    return present.iloc[0] if len(present) else None


# --------------------------------------------------------------------------- per cell


def summarize_cells(records: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
                    pace: pd.Series | None = None, ev: Evidence | None = None) -> pd.DataFrame:
    """One row per cell (in the order cells first appear), indexed by ``cell_id``.

    Columns: the settings in :data:`SETTINGS`; ``hardware``; counts ``n``, ``n_ok``,
    ``n_failed`` (of which ``n_oom`` ran out of memory), ``n_nan``, ``n_silent``,
    ``n_scored`` and ``failure_rate`` (share of generations with no speech: failed, NaN
    or silent; :mod:`bench.scoring.outcomes`); ``<stat>_median``, ``_p10`` and ``_p90`` for each
    of :data:`TIME_STATS` over ok generations (seconds, RTF unitless; a NaN or silent
    generation's speech RTF is infinite: compute spent, no speech); ``x_realtime``
    (1 / median RTF); ``rtf_pooled`` (total compute seconds / total seconds of speech,
    what cost follows); ``nfe_per_chunk`` (median forward rows per chunk); memory in
    bytes, the max over generations, NaN where not measured: ``peak_allocated``,
    ``peak_reserved``, ``peak_rss``, and where the records carry them
    ``weights_resident`` and ``working_peak``; quality under the rule of
    :mod:`bench.scoring.outcomes` (``corpus_wer``, ``mean_wer``, ``cer`` with ``_lo``/``_hi``
    95 % cluster-bootstrap bounds, ``share_above_50``, ``n_empty_hyp``) and ``quality``
    ("ok", "not meaningful" or "not scored"); timing noise and the machine's state
    (``dispersion`` of time per unit of work, ``repeat_dispersion``, ``unstable``,
    ``interleaved``, ...: :func:`bench.analysis.noise.cell_noise`, relative to the run's
    :func:`bench.analysis.noise.machine_pace`; ``pace`` when the caller has it already).
    The figures decisions rest on (``rtf_median``, ``corpus_wer``) come from
    :func:`bench.analysis.evidence.cell_summary` (``ev``: the records' evidence, when the
    caller has it already), so the report, the policy and the replay read one rule.
    """
    rows: list[dict[str, Any]] = []
    if not len(records) or "cell_id" not in records.columns:
        return pd.DataFrame(rows)
    run_scored = has_scores(records)
    run_scored_rows = scored_rows(records)
    run_meaningful = quality_is_meaningful(run_scored_rows if len(run_scored_rows) else records)
    pace = machine_pace(records) if pace is None else pace
    decided = cell_summary(ev if ev is not None else evidence(records))
    rtf_of = dict(zip(decided.index, decided["rtf_median"].astype(float), strict=True))
    wer_of = dict(zip(decided.index, decided["corpus_wer"].astype(float), strict=True))
    for cell_id, group in records.groupby("cell_id", sort=False):
        row: dict[str, Any] = {"cell_id": cell_id}
        for name in SETTINGS:
            row[name] = _first(column(group, name))
        row["hardware"] = hardware_of(row["gpu"], row["device_name"])
        ok = group[column(group, "status") == "ok"]
        counts = outcome(group.to_dict("records"))
        row.update(n=counts.n, n_ok=len(ok), n_failed=counts.n_failed, n_oom=counts.n_oom,
                   n_nan=counts.n_nan, n_silent=counts.n_silent,
                   failure_rate=counts.failure_rate)
        for stat in TIME_STATS:
            values = speech_rtfs(ok) if stat == "rtf" else _numbers(column(ok, stat))
            row[f"{stat}_median"] = (rtf_of[str(cell_id)] if stat == "rtf"
                                     else _quantile(values, 0.5))
            row[f"{stat}_p10"] = _quantile(values, 0.1)
            row[f"{stat}_p90"] = _quantile(values, 0.9)
        rtf = row["rtf_median"]
        row["x_realtime"] = 1.0 / rtf if rtf and not math.isnan(rtf) else math.nan
        row["rtf_pooled"] = pooled_rtf(ok)
        # Aligned per record: a record without nfe gives NaN, which the median skips.
        per_chunk = aligned_numbers(ok, "nfe", math.nan) / np.maximum(aligned_numbers(ok, "n_chunks", 1.0), 1)
        row["nfe_per_chunk"] = nanmedian(per_chunk)
        for name, field in MEMORY_FIELDS.items():
            row[name] = _max_or_nan(column(group, field))
        row.update(cell_noise(ok, pace))
        cell_scored = scored_rows(ok)
        meaningful = (quality_is_meaningful(cell_scored) if len(cell_scored)
                      else run_meaningful and quality_is_meaningful(group))
        rated, scores = quality_scores(group, scored=run_scored)
        row.update(_cell_quality(rated, scores, meaningful, n_boot=n_boot, seed=seed))
        if scores:  # the interval is the bootstrap's; the figure is the one rule's
            row["corpus_wer"] = wer_of[str(cell_id)]
        rows.append(row)
    return pd.DataFrame(rows).set_index("cell_id", drop=False)


#: Memory columns of a cell summary and the record fields they take the max of.
MEMORY_FIELDS: dict[str, str] = {
    "peak_allocated": "peak_allocated_bytes", "peak_reserved": "peak_reserved_bytes",
    "peak_rss": "peak_rss_bytes", "weights_resident": "weights_resident_bytes",
    "working_peak": "working_peak_bytes",
}


def speech_rtfs(ok: pd.DataFrame) -> npt.NDArray[np.float64]:
    """Speech RTFs of ok generations; NaN or silent audio counts as infinitely slow (the
    compute was spent and no speech came out), so it cannot flatter a cell's median."""
    out = []
    for r in ok.to_dict("records"):
        if truthy(r.get("audio_nan")) or truthy(r.get("audio_silent")) or r.get(
                "score_status") in NO_SPEECH_SCORES:
            out.append(math.inf)
        elif is_number(r.get("rtf")):
            out.append(float(r["rtf"]))
    return np.asarray(out, dtype=np.float64)


def pooled_rtf(ok: pd.DataFrame) -> float:
    """Total compute seconds over total seconds of speech produced (``t_total`` and
    ``audio_seconds`` summed over the generations that have both): what an hour of audio
    costs in compute. Silent generations add compute and no audio."""
    compute = aligned_numbers(ok, "t_total", math.nan)
    audio = aligned_numbers(ok, "audio_seconds", math.nan)
    both = np.isfinite(compute) & np.isfinite(audio)
    total_audio = float(audio[both].sum())
    return float(compute[both].sum()) / total_audio if total_audio > 0 else math.nan


def _cell_quality(rated: pd.DataFrame, scores: Sequence[Any], meaningful: bool, *,
                  n_boot: int, seed: int) -> dict[str, Any]:
    nan = math.nan
    empty = {"n_scored": 0, "corpus_wer": nan, "corpus_wer_lo": nan, "corpus_wer_hi": nan,
             "mean_wer": nan, "mean_wer_lo": nan, "mean_wer_hi": nan, "cer": nan,
             "cer_lo": nan, "cer_hi": nan, "share_above_50": nan, "n_empty_hyp": 0,
             "quality": "not scored"}
    if not scores:
        return empty
    from bench.scoring.wer import summarize

    q = summarize(scores, n_boot=n_boot, seed=seed, cluster=list(column(rated, "prompt_id")))
    return {
        "n_scored": q.n, "corpus_wer": q.corpus_wer, "corpus_wer_lo": q.corpus_wer_ci[0],
        "corpus_wer_hi": q.corpus_wer_ci[1], "mean_wer": q.mean_wer,
        "mean_wer_lo": q.mean_wer_ci[0], "mean_wer_hi": q.mean_wer_ci[1], "cer": q.cer,
        "cer_lo": q.cer_ci[0], "cer_hi": q.cer_ci[1], "share_above_50": q.share_above_50,
        "n_empty_hyp": q.n_empty_hyp,
        "quality": "ok" if meaningful else "not meaningful",
    }


# --------------------------------------------------------------------------- comparisons


def cell_rows(records: pd.DataFrame, cell_id: str) -> pd.DataFrame:
    return records[column(records, "cell_id") == cell_id]


def pair_keys(records: pd.DataFrame) -> list[tuple[str, int]]:
    """The (prompt_id, seed) of each record: what paired comparisons pair on."""
    return [(str(p), int(s)) for p, s in zip(column(records, "prompt_id"),
                                             column(records, "seed"), strict=True)]


def pair_scores(records: pd.DataFrame, *, scored: bool | None = None
                ) -> dict[tuple[str, int], Any]:
    """One UtteranceScore per (prompt_id, seed) of a cell's records, for paired WER
    comparisons (the report's run-to-run table and the CI gate): the first repeat's
    (repeats score the same text). Failed, NaN and silent generations count as empty
    transcripts under the rule of :mod:`bench.scoring.outcomes` (``scored``: whether the run was
    scored, by default whether these records carry any score)."""
    order = records.sort_values("repeat", kind="stable") if "repeat" in records.columns \
        else records
    rated, scores = quality_scores(order, scored=scored)
    out: dict[tuple[str, int], Any] = {}
    for key, score in zip(pair_keys(rated), scores, strict=True):
        out.setdefault(key, score)
    return out


# --------------------------------------------------------------------------- pairs and medians


def pair_index(group: pd.DataFrame) -> pd.Index:
    return pd.Index([f"{p}/{s}/{r}" for p, s, r in zip(
        column(group, "prompt_id"), column(group, "seed"), column(group, "repeat"), strict=True)])


def nanmedian(values: npt.NDArray[np.float64]) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan
