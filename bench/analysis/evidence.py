"""What a record table says per generation and per cell, read once: the evidence the
adaptive policy, its replay, the headline and its stability read, as a table and as
(prompt, slot, cell) arrays, and the cell summary of the figures decisions rest on.

:func:`cell_summary` is the one place a cell's decision figures come from (median RTF
with no speech as infinitely slow, corpus WER with failures as empty transcripts, the
counts): :func:`bench.analysis.cells.summarize_cells` takes them from it and adds the
descriptive columns; a replay needs thousands of them, so they are array operations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.scoring.outcomes import (
    NO_SPEECH_SCORES,
    column,
    has_scores,
    is_number,
    no_speech,
    quality_scores,
    truthy,
)

#: Settings copied onto each cell's row (the first value seen; they are constant per cell).
SETTINGS: tuple[str, ...] = (
    "cell_label", "gpu", "device_name", "num_steps", "cfg_mode", "sequence_length",
    "cfg_scale_text", "cfg_scale_speaker", "cfg_min_t", "cfg_max_t", "truncation_factor",
    "rescale_k", "rescale_sigma", "speaker_kv_scale", "speaker_kv_max_layers",
    "speaker_kv_min_t", "dtype", "batch_size", "compile", "cuda_graphs", "attention", "model",
    "random_weights",
)


#: Quality metrics with a frontier of their own in the report (higher is better).
FRONTIER_METRICS: dict[str, str] = {"sim": "SIM", "utmos": "UTMOS"}


#: The metrics cells are compared on, besides :data:`FRONTIER_METRICS`: the speed (log
#: RTF ratio) and corpus WER.
SPEED = "RTF"
WER = "WER"

#: The per-generation figures :class:`Dense` holds as (prompt, slot, cell) arrays.
DENSE_FIGURES = ("rtf", "wer_num", "wer_den", "t_total", *FRONTIER_METRICS)


@dataclass
class Dense:
    """The generations of a run as arrays of shape (prompts, slots, cells), a slot being
    one (seed, repeat) of a prompt: each of :data:`DENSE_FIGURES` (NaN where absent),
    ``ok`` and ``no_speech``; ``at`` gives each unit row's flat index into them. Built
    once per run, so every stage of a replay reads its figures by masking, not pivoting."""

    prompts: list[str]
    cells: list[str]
    shape: tuple[int, int, int]
    at: npt.NDArray[np.intp]
    figures: dict[str, npt.NDArray[np.float64]]
    ok: npt.NDArray[np.bool_]
    no_speech: npt.NDArray[np.bool_]
    _peers: dict[str, npt.NDArray[np.intp]] | None = None

    @classmethod
    def of(cls, units: pd.DataFrame) -> Dense:
        p_codes, prompts = pd.factorize(units["prompt_id"].astype(str), sort=False)
        slots = units["unit"].astype(str).str.split("/", n=1).str[1].fillna("")
        s_codes, slot_names = pd.factorize(slots, sort=False)
        c_codes, cells = pd.factorize(units["cell_id"].astype(str), sort=False)
        shape = (len(prompts), max(len(slot_names), 1), len(cells))
        at = np.ravel_multi_index((p_codes, s_codes, c_codes), shape)
        figures = {}
        for name in DENSE_FIGURES:
            arr = np.full(int(np.prod(shape)), np.nan)
            arr[at] = units[name].to_numpy(dtype=np.float64)
            figures[name] = arr.reshape(shape)
        flags = []
        for name in ("ok", "no_speech"):
            arr = np.zeros(int(np.prod(shape)), dtype=bool)
            arr[at] = units[name].to_numpy(dtype=bool)
            flags.append(arr.reshape(shape))
        return cls([str(p) for p in prompts], [str(c) for c in cells], shape,
                   np.asarray(at, dtype=np.intp), figures, flags[0], flags[1])

    def peers(self, hardware: pd.Series) -> dict[str, npt.NDArray[np.intp]]:
        """cell id -> the indices of the cells on its hardware (``hardware``: cell id ->
        hardware), computed once per run."""
        if self._peers is None:
            of = hardware.reindex(self.cells).astype(str).to_numpy()
            groups = {hw: np.flatnonzero(of == hw) for hw in dict.fromkeys(of)}
            self._peers = {c: groups[hw] for c, hw in zip(self.cells, of, strict=True)}
        return self._peers

    def present(self, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
        """(prompts, slots, cells): which generations the unit rows ``rows`` hold."""
        out = np.zeros(int(np.prod(self.shape)), dtype=bool)
        out[self.at[rows]] = True
        return out.reshape(self.shape)


@dataclass
class Evidence:
    """What the policy reads from a record table, computed once so a replay can take
    subsets of it cheaply: ``units`` has one row per generation (``cell_id``,
    ``prompt_id``, ``unit`` "prompt/seed/repeat", ``ok``, ``no_speech``, ``rtf`` (speech
    RTF, inf when a finished generation produced no speech), ``wer_num``/``wer_den``
    (word errors and reference words under :mod:`bench.scoring.outcomes`; NaN when not
    scored), each frontier metric, ``t_total``); ``info`` one row per cell (settings,
    label, hardware); ``quality`` the run's quality status. A subset shares its whole
    run's :class:`Dense` arrays and knows which of their generations it holds
    (:meth:`present`)."""

    units: pd.DataFrame
    info: pd.DataFrame
    quality: str  # "ok" | "not meaningful" | "not scored"
    rows: npt.NDArray[np.intp] | None = None  # positions in the whole run's units
    whole: Evidence | None = None
    _dense: Dense | None = None

    def subset(self, mask: npt.NDArray[np.bool_]) -> Evidence:
        rows = self.positions()[np.asarray(mask, dtype=bool)]
        whole = self.whole or self
        return Evidence(whole.units.iloc[rows], self.info, self.quality, rows, whole)

    def positions(self) -> npt.NDArray[np.intp]:
        return self.rows if self.rows is not None else np.arange(len(self.units))

    @property
    def dense(self) -> Dense:
        """The whole run's arrays (built on first use)."""
        whole = self.whole or self
        if whole._dense is None:
            whole._dense = Dense.of(whole.units)
        return whole._dense

    def present(self) -> npt.NDArray[np.bool_]:
        """(prompts, slots, cells) mask of the generations this evidence holds."""
        return self.dense.present(self.positions())


def hardware_of(gpu: Any, device_name: Any) -> str:
    """What a cell ran on: its Modal GPU string, else the recorded device name ("cpu")."""
    if isinstance(gpu, str) and gpu:
        return gpu
    return str(device_name) if isinstance(device_name, str) and device_name else "unknown"


def scored_rows(records: pd.DataFrame) -> pd.DataFrame:
    """Records that carry a score (a numeric ``wer`` or ``ref_words``)."""
    if "ref_words" not in records.columns:
        return records.iloc[0:0]
    mask = records["ref_words"].map(is_number)
    return records[mask.astype(bool)]


def quality_is_meaningful(rows: pd.DataFrame) -> bool:
    """The scorer's ``quality_meaningful`` flags when present (all must be true); for
    scores without them, false when the weights or the ASR were random."""
    flags = column(rows, "quality_meaningful").dropna()
    if len(flags):
        return all(bool(f) for f in flags)
    return not any(truthy(v) for v in column(rows, "random_weights")) and not any(
        truthy(v) for v in column(rows, "asr_random"))


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
    info = info.reindex(columns=[c for c in SETTINGS if c in records.columns])
    info["hardware"] = [hardware_of(g, d) for g, d in zip(
        column(info, "gpu"), column(info, "device_name"), strict=True)]
    for name in info.columns:  # plain strings: Arrow-backed ones cost a replay its time
        if pd.api.types.is_string_dtype(info[name].dtype):
            info[name] = info[name].astype(object)
    rated_rows = scored_rows(records)
    quality = ("not scored" if not scored else "ok" if quality_is_meaningful(
        rated_rows if len(rated_rows) else records) else "not meaningful")
    return Evidence(units, info, quality)


def cell_summary(ev: Evidence) -> pd.DataFrame:
    """The per-cell figures the headline, the baselines and the frontier read
    (``rtf_median`` over finished generations with no speech as infinitely slow,
    ``corpus_wer``, the failure counts, ``quality``), from :class:`Evidence` by array
    operations; :func:`bench.analysis.cells.summarize_cells` reads the same figures from
    here, and a replay needs thousands of them."""
    dense = ev.dense
    present = ev.present()
    flat = present.reshape(-1, dense.shape[2])
    ok = (present & dense.ok).reshape(flat.shape)
    n = flat.sum(axis=0)
    n_ok = ok.sum(axis=0)
    silent = (ok & dense.no_speech.reshape(flat.shape)).sum(axis=0)
    rtf = np.where(ok, dense.figures["rtf"].reshape(flat.shape), np.nan)
    with np.errstate(invalid="ignore"):
        rtf_median = _column_medians(rtf)
    num = np.where(flat, dense.figures["wer_num"].reshape(flat.shape), np.nan)
    den = np.where(flat, dense.figures["wer_den"].reshape(flat.shape), np.nan)
    scored = np.asarray(np.isfinite(den).any(axis=0), dtype=bool)
    den_sum = np.nansum(den, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corpus = np.where(scored & (den_sum > 0), np.nansum(num, axis=0) / den_sum, np.nan)
    keep = np.asarray(n > 0, dtype=bool)
    ids = [c for c, k in zip(dense.cells, keep, strict=True) if k]
    info = ev.info.reindex(ids)
    out = pd.DataFrame({
        "cell_id": ids, **{k: info[k].to_numpy() for k in info.columns},
        "n": n[keep], "n_ok": n_ok[keep], "n_failed": (n - n_ok)[keep], "n_nan": 0,
        "n_silent": silent[keep], "rtf_median": rtf_median[keep], "corpus_wer": corpus[keep],
        "quality": np.where(scored[keep], ev.quality, "not scored"),
    }, index=pd.Index(ids, name="cell_id"))
    out.index.name = None
    return out


def _column_medians(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each column's median over its non-NaN values, infinities counting as the largest
    (numpy's nanmedian would give NaN between two infinities); NaN for an empty column."""
    ordered = np.sort(values, axis=0)  # NaN sorts last
    count = np.isfinite(values).sum(axis=0) + np.isinf(values).sum(axis=0)
    lo_i = np.maximum((count - 1) // 2, 0)
    hi_i = np.maximum(count // 2, 0)
    cols = np.arange(values.shape[1])
    lo, hi = ordered[lo_i, cols], ordered[hi_i, cols]
    with np.errstate(invalid="ignore"):
        mid = np.where(np.isinf(hi), hi, (lo + hi) / 2)
    return np.where(count > 0, mid, np.nan)


#: The columns :func:`add_paired_baseline_wer` adds and the headline's budget reads.
PAIRED_BASELINE_WER = "baseline_wer_paired"
PAIRED_CELL_WER = "wer_paired"


def add_paired_baseline_wer(cells: pd.DataFrame, ev: Evidence,
                            baseline_of: Mapping[str, str]) -> pd.DataFrame:
    """``cells`` with :data:`PAIRED_BASELINE_WER`: per cell, its baseline's corpus WER over
    the (prompt, seed, repeat) units the cell ran too, both scored (NaN when they share
    none or the baseline is unscored), and :data:`PAIRED_CELL_WER`, the cell's own over
    the same units. ``baseline_of`` maps each cell id to its baseline's.

    In a full run every cell ran the baseline's units, so these are the two cells' own
    corpus WERs. In an adaptive run a cell stopped early ran a few prompts only, and its
    WER on those is only comparable with the baseline's on the same prompts: held against
    the baseline's over every prompt, an easy first batch would pass a cell that the
    policy had found out of budget on the very prompts it ran; and a cell that ran on
    after the baseline stopped is held to the baseline on the prompts both ran."""
    dense = ev.dense
    col = {c: k for k, c in enumerate(dense.cells)}
    here = ev.present()
    num, den = dense.figures["wer_num"], dense.figures["wer_den"]
    scored = here & np.isfinite(num) & np.isfinite(den)
    values, own = [], []
    for cid in cells.index.astype(str):
        base = col.get(baseline_of.get(cid, ""))
        mine = col.get(cid)
        if base is None or mine is None:
            values.append(math.nan)
            own.append(math.nan)
            continue
        both = scored[:, :, mine] & scored[:, :, base]
        total = float(den[:, :, base][both].sum())
        values.append(float(num[:, :, base][both].sum()) / total if total > 0 else math.nan)
        own.append(float(num[:, :, mine][both].sum()) / total if total > 0 else math.nan)
    return cells.assign(**{PAIRED_BASELINE_WER: values, PAIRED_CELL_WER: own})


def paired_prompt_sums(dense: Dense, present: npt.NDArray[np.bool_], i: int,
                       cols: npt.NDArray[np.intp], metric: str
                       ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Cell ``i`` (a column of ``dense``) against each cell in ``cols``, per prompt: the
    sums, over the (seed, repeat) units both ran (``present``), of the paired
    difference (``num``) and of its weight (``den``), each of shape (prompts, cols).

    * :data:`SPEED`: log(RTF_j / RTF_i) over units both finished with speech; den counts
      them (the ratio of sums is the mean log ratio);
    * :data:`WER`: word errors of j minus i over units both have scores for; den is the
      reference words (the ratio of sums is the corpus WER difference);
    * a frontier metric (SIM, UTMOS): j minus i; den counts the units.
    """
    here = present[:, :, cols]
    mine = present[:, :, i:i + 1]
    if metric == SPEED:
        rtf, ok = dense.figures["rtf"], dense.ok
        a = np.where(mine & ok[:, :, i:i + 1], rtf[:, :, i:i + 1], np.nan)
        b = np.where(here & ok[:, :, cols], rtf[:, :, cols], np.nan)
        ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.where(ok, np.log(np.where(ok, b, 1.0) / np.where(ok, a, 1.0)), 0.0)
        den = ok.astype(np.float64)
    else:
        values = dense.figures["wer_num" if metric == WER else metric]
        a = np.where(mine, values[:, :, i:i + 1], np.nan)
        b = np.where(here, values[:, :, cols], np.nan)
        ok = np.isfinite(a) & np.isfinite(b)
        if metric == WER:
            words = np.where(mine, dense.figures["wer_den"][:, :, i:i + 1], np.nan)
            ok &= np.isfinite(words)
            den = np.where(ok, words, 0.0)
        else:
            den = ok.astype(np.float64)
        x = np.where(ok, b - a, 0.0)
    return x.sum(axis=1), den.sum(axis=1)
