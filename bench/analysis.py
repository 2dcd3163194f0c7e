"""From records to answers: per-cell aggregates, the speed/quality frontier, cost, speed-up
against a baseline (measured and predicted from the FLOP model), VRAM fit and the headline
choice.

Everything here is a pure function of a record table (``bench.store.load_records``) plus,
for cost, a price table; the report, the notebook and the history command share it.

Units: times in seconds, RTF in compute seconds per second of audio (lower is better),
memory in bytes (GB = 1e9 bytes where shown), WER/CER as fractions (0.05 = 5 %), money
in the price file's currency (USD) per hour of audio produced.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.errors import UserError
from bench.memory_fit import vram_fit
from bench.noise import cell_noise
from bench.outcomes import (
    NO_SPEECH_SCORES,
    column,
    has_scores,
    is_number,
    outcome,
    quality_scores,
    truthy,
    usable,
)
from bench.prices import Prices, load_prices

#: Per-generation figures summarised per cell by median, p10 and p90.
TIME_STATS: tuple[str, ...] = (
    "rtf", "rtf_full", "t_text_encode", "t_speaker_encode", "t_sampling", "t_decode",
    "t_total", "t_sampling_per_nfe",
)
#: Stage columns in pipeline order (their medians are what the stage breakdown shows).
STAGES: tuple[str, ...] = ("t_text_encode", "t_speaker_encode", "t_sampling", "t_decode")
#: Settings copied onto each cell's row (the first value seen; they are constant per cell).
SETTINGS: tuple[str, ...] = (
    "cell_label", "gpu", "device_name", "num_steps", "cfg_mode", "sequence_length",
    "cfg_scale_text", "cfg_scale_speaker", "cfg_min_t", "cfg_max_t", "truncation_factor",
    "rescale_k", "rescale_sigma", "speaker_kv_scale", "speaker_kv_max_layers",
    "speaker_kv_min_t", "dtype", "batch_size", "compile", "cuda_graphs", "attention", "model",
    "random_weights",
)
#: The production default that speed-ups are measured against, on each GPU.
DEFAULT_BASELINE: dict[str, Any] = {"num_steps": 40, "cfg_mode": "independent",
                                    "sequence_length": 640}
#: Among cells with the default baseline's sampler settings (a speed-options sweep has
#: several), the one that runs the production path: fewest of these changed.
PLAIN_EXECUTION: dict[str, Any] = {"compile": False, "cuda_graphs": False,
                                   "attention": "sliced", "batch_size": 1}
DEFAULT_WER_BUDGET_POINTS = 0.5
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


def hardware_of(gpu: Any, device_name: Any) -> str:
    """What a cell ran on: its Modal GPU string, else the recorded device name ("cpu")."""
    if isinstance(gpu, str) and gpu:
        return gpu
    return str(device_name) if isinstance(device_name, str) and device_name else "unknown"


# --------------------------------------------------------------------------- quality


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


# --------------------------------------------------------------------------- per cell


def summarize_cells(records: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per cell (in the order cells first appear), indexed by ``cell_id``.

    Columns: the settings in :data:`SETTINGS`; ``hardware``; counts ``n``, ``n_ok``,
    ``n_failed`` (of which ``n_oom`` ran out of memory), ``n_nan``, ``n_silent``,
    ``n_scored`` and ``failure_rate`` (share of generations with no speech: failed, NaN
    or silent; :mod:`bench.outcomes`); ``<stat>_median``, ``_p10`` and ``_p90`` for each
    of :data:`TIME_STATS` over ok generations (seconds, RTF unitless; a NaN or silent
    generation's speech RTF is infinite: compute spent, no speech); ``x_realtime``
    (1 / median RTF); ``rtf_pooled`` (total compute seconds / total seconds of speech,
    what cost follows); ``nfe_per_chunk`` (median forward rows per chunk); memory in
    bytes, the max over generations, NaN where not measured: ``peak_allocated``,
    ``peak_reserved``, ``peak_rss``, and where the records carry them
    ``weights_resident`` and ``working_peak``; quality under the rule of
    :mod:`bench.outcomes` (``corpus_wer``, ``mean_wer``, ``cer`` with ``_lo``/``_hi``
    95 % cluster-bootstrap bounds, ``share_above_50``, ``n_empty_hyp``) and ``quality``
    ("ok", "not meaningful" or "not scored"); timing noise and the machine's state
    (``dispersion`` of time per unit of work, ``repeat_dispersion``, ``unstable``,
    ``interleaved``, ...: :func:`bench.noise.cell_noise`).
    """
    rows: list[dict[str, Any]] = []
    if not len(records) or "cell_id" not in records.columns:
        return pd.DataFrame(rows)
    run_scored = has_scores(records)
    run_scored_rows = scored_rows(records)
    run_meaningful = quality_is_meaningful(run_scored_rows if len(run_scored_rows) else records)
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
            values = _speech_rtfs(ok) if stat == "rtf" else _numbers(column(ok, stat))
            row[f"{stat}_median"] = _quantile(values, 0.5)
            row[f"{stat}_p10"] = _quantile(values, 0.1)
            row[f"{stat}_p90"] = _quantile(values, 0.9)
        rtf = row["rtf_median"]
        row["x_realtime"] = 1.0 / rtf if rtf and not math.isnan(rtf) else math.nan
        row["rtf_pooled"] = pooled_rtf(ok)
        # Aligned per record: a record without nfe gives NaN, which the median skips.
        per_chunk = _aligned(ok, "nfe", math.nan) / np.maximum(_aligned(ok, "n_chunks", 1.0), 1)
        row["nfe_per_chunk"] = _nanmedian(per_chunk)
        for name, field in MEMORY_FIELDS.items():
            row[name] = _max_or_nan(column(group, field))
        row.update(cell_noise(ok))
        cell_scored = scored_rows(ok)
        meaningful = (quality_is_meaningful(cell_scored) if len(cell_scored)
                      else run_meaningful and quality_is_meaningful(group))
        rated, scores = quality_scores(group, scored=run_scored)
        row.update(_cell_quality(rated, scores, meaningful, n_boot=n_boot, seed=seed))
        rows.append(row)
    return pd.DataFrame(rows).set_index("cell_id", drop=False)


#: Memory columns of a cell summary and the record fields they take the max of.
MEMORY_FIELDS: dict[str, str] = {
    "peak_allocated": "peak_allocated_bytes", "peak_reserved": "peak_reserved_bytes",
    "peak_rss": "peak_rss_bytes", "weights_resident": "weights_resident_bytes",
    "working_peak": "working_peak_bytes",
}


def _speech_rtfs(ok: pd.DataFrame) -> npt.NDArray[np.float64]:
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
    compute = _aligned(ok, "t_total", math.nan)
    audio = _aligned(ok, "audio_seconds", math.nan)
    both = np.isfinite(compute) & np.isfinite(audio)
    total_audio = float(audio[both].sum())
    return float(compute[both].sum()) / total_audio if total_audio > 0 else math.nan


def _aligned(frame: pd.DataFrame, name: str, missing: float) -> npt.NDArray[np.float64]:
    """``frame[name]`` as floats aligned with the frame's rows (non-numbers -> missing)."""
    return np.asarray([float(v) if is_number(v) else missing for v in column(frame, name)],
                      dtype=np.float64)


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


# --------------------------------------------------------------------------- frontier


def pareto_mask(x: Sequence[float] | npt.ArrayLike, y: Sequence[float] | npt.ArrayLike
                ) -> npt.NDArray[np.bool_]:
    """True for points no other point dominates, both axes lower-is-better.

    j dominates i when x_j <= x_i and y_j <= y_i with at least one strict. Points with a
    NaN coordinate are never on the front. Equal points are all on it.
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    finite = np.isfinite(xs) & np.isfinite(ys)
    keep = finite.copy()
    for i in np.flatnonzero(finite):
        others = finite & (xs <= xs[i]) & (ys <= ys[i]) & ((xs < xs[i]) | (ys < ys[i]))
        keep[i] = not others.any()
    return keep


def _front(cells: pd.DataFrame, x: str, y: str) -> npt.NDArray[np.bool_]:
    """Pareto front of x against y; with no y at all (unscored) the front is on x alone."""
    ys = cells[y].to_numpy(dtype=np.float64)
    if not np.isfinite(ys).any():
        ys = np.zeros(len(cells))
    return pareto_mask(cells[x].to_numpy(dtype=np.float64), ys)


def add_frontiers(cells: pd.DataFrame) -> pd.DataFrame:
    """Add ``front_hw`` (RTF vs corpus WER within the cell's hardware), ``front_all``
    (RTF vs WER over all cells) and ``front_cost`` (cost per audio hour vs WER over all
    cells; needs :func:`add_costs` first). Returns a new frame."""
    out = cells.copy()
    out["front_hw"] = False
    for _, group in out.groupby("hardware", sort=False):
        out.loc[group.index, "front_hw"] = _front(group, "rtf_median", "corpus_wer")
    out["front_all"] = _front(out, "rtf_median", "corpus_wer")
    if "cost_per_audio_hour" in out.columns:
        out["front_cost"] = _front(out, "cost_per_audio_hour", "corpus_wer")
    return out


# --------------------------------------------------------------------------- cost


def cost_per_audio_hour(price_per_second: float | None, rtf: float) -> float:
    """Money per hour of audio: price/s x compute seconds per audio second x 3600 s.

    ``rtf`` must be the pooled ratio (total compute / total audio, :func:`pooled_rtf`):
    an hour of audio costs the sum of its compute, and a median of per-generation RTFs
    over a prompt mix of short and long texts is not that ratio.
    """
    if price_per_second is None or not math.isfinite(rtf):
        return math.nan
    return price_per_second * rtf * 3600.0


def add_costs(cells: pd.DataFrame, prices: Prices, cpu_cores: int | None = None) -> pd.DataFrame:
    """Add ``price_per_second``, ``price_basis`` (what was priced) and
    ``cost_per_audio_hour`` (from ``rtf_pooled``, total compute / total audio). Returns a
    new frame."""
    out = cells.copy()
    priced = [prices.per_second(g if isinstance(g, str) else None,
                                d if isinstance(d, str) else None, cpu_cores)
              for g, d in zip(column(out, "gpu"), column(out, "device_name"), strict=True)]
    out["price_per_second"] = [math.nan if p is None else p for p, _ in priced]
    out["price_basis"] = [basis for _, basis in priced]
    out["cost_per_audio_hour"] = [cost_per_audio_hour(p, r)
                                  for (p, _), r in zip(priced, out["rtf_pooled"], strict=True)]
    return out


# --------------------------------------------------------------------------- baseline


@dataclass(frozen=True)
class Baseline:
    """The cell speed-ups on one hardware are measured against, and why it was chosen."""

    hardware: str
    cell_id: str
    reason: str


def _matches(row: Mapping[Any, Any] | pd.Series, settings: Mapping[str, Any]) -> bool:
    return all(row.get(k) == v for k, v in settings.items())


def choose_baselines(cells: pd.DataFrame, baseline_cell: str | None = None
                     ) -> dict[str, Baseline]:
    """The baseline cell per hardware.

    Default: the cell with :data:`DEFAULT_BASELINE` settings on that hardware (of several,
    the one closest to :data:`PLAIN_EXECUTION`). With
    ``baseline_cell`` (a cell id): that cell on its own hardware, and the cell with the
    same settings on each other hardware. Where no cell matches, the slowest cell (highest
    median RTF) stands in and ``reason`` says so.
    """
    if not len(cells):
        return {}
    if baseline_cell is not None:
        if baseline_cell not in cells.index:
            raise UserError(f"baseline cell {baseline_cell!r} is not in this run; pick one of "
                            f"{', '.join(map(str, cells.index))}")
        chosen = cells.loc[baseline_cell]
        settings = {k: chosen[k] for k in SETTINGS
                    if k not in ("cell_label", "gpu", "device_name") and _present(chosen[k])}
        wanted = f"cell {baseline_cell} ({chosen['cell_label']})"
    else:
        settings = dict(DEFAULT_BASELINE)
        wanted = "40 steps, independent CFG, 640 latents"
    out: dict[str, Baseline] = {}
    for hardware, group in cells.groupby("hardware", sort=False):
        hw = str(hardware)
        matching = [(cid, row) for cid, row in group.iterrows() if _matches(row, settings)]
        if baseline_cell is None:
            # Columns a run predates (e.g. attention) count as their default.
            matching.sort(key=lambda item: sum(item[1].get(k, v) != v
                                               for k, v in PLAIN_EXECUTION.items()))
        match = [cid for cid, _ in matching]
        if baseline_cell is not None and baseline_cell in group.index:
            out[hw] = Baseline(hw, baseline_cell, f"chosen: {wanted}")
        elif match:
            out[hw] = Baseline(hw, str(match[0]), f"{wanted} (the production default)"
                               if baseline_cell is None else f"same settings as {wanted}")
        else:
            rtf = group["rtf_median"].astype(float)
            slowest = str(rtf.idxmax()) if rtf.notna().any() else str(group.index[0])
            out[hw] = Baseline(hw, slowest, f"no cell with {wanted} on {hw}; the slowest cell "
                               "(highest median RTF) stands in")
    return out


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def add_speedups(cells: pd.DataFrame, records: pd.DataFrame,
                 baselines: Mapping[str, Baseline]) -> pd.DataFrame:
    """Add measured and FLOP-predicted speed-ups against each hardware's baseline cell.

    Generations are paired by (prompt, seed, repeat) with the baseline's; each figure is
    the median over pairs of a per-pair ratio (the median resists a slow outlier):

    * ``speedup_sampling`` = baseline t_sampling / cell t_sampling (measured);
    * ``predicted_sampling`` = baseline sampling FLOPs / cell sampling FLOPs
      (:func:`bench.prediction.sampling_flops`: NFE x FLOPs per row at the cell's
      sequence length and context, plus per-step conditioning; sampling time
      proportional to FLOPs, the cost per FLOP unchanged);
    * ``speedup_total`` = baseline t_total / cell t_total (measured);
    * ``predicted_total`` = baseline t_total / (baseline non-sampling time + baseline
      t_sampling x cell FLOPs / baseline FLOPs): only the sampling share shrinks (Amdahl);
    * ``*_gap`` = measured - predicted (positive: faster than the FLOP count promises).

    ``baseline_id`` names the baseline; ``n_pairs`` counts the pairs (0: no figures).
    """
    out = cells.copy()
    ok = records[column(records, "status") == "ok"]
    by_cell: dict[str, pd.DataFrame] = {
        str(cid): g.set_index(_pair_index(g)) for cid, g in ok.groupby("cell_id", sort=False)}
    names = ("speedup_sampling", "predicted_sampling", "speedup_total", "predicted_total")
    results: dict[str, list[float]] = {n: [] for n in names}
    base_ids: list[str | None] = []
    pairs: list[int] = []
    for cell_id, row in out.iterrows():
        baseline = baselines.get(str(row["hardware"]))
        base_ids.append(baseline.cell_id if baseline else None)
        cell = by_cell.get(str(cell_id))
        base = by_cell.get(baseline.cell_id) if baseline else None
        if cell is None or base is None:
            pairs.append(0)
            for n in names:
                results[n].append(math.nan)
            continue
        common = cell.index.intersection(base.index)
        pairs.append(len(common))
        c, b = cell.loc[common], base.loc[common]
        figures = _pair_ratios(b, c)
        for n in names:
            results[n].append(figures[n])
    out["baseline_id"] = base_ids
    out["n_pairs"] = pairs
    for n in names:
        out[n] = results[n]
    out["sampling_gap"] = out["speedup_sampling"] - out["predicted_sampling"]
    out["total_gap"] = out["speedup_total"] - out["predicted_total"]
    return out


def _pair_index(group: pd.DataFrame) -> pd.Index:
    return pd.Index([f"{p}/{s}/{r}" for p, s, r in zip(
        column(group, "prompt_id"), column(group, "seed"), column(group, "repeat"), strict=True)])


def _pair_ratios(base: pd.DataFrame, cell: pd.DataFrame) -> dict[str, float]:
    def arr(frame: pd.DataFrame, name: str) -> npt.NDArray[np.float64]:
        return _aligned(frame, name, math.nan)

    b_samp, c_samp = arr(base, "t_sampling"), arr(cell, "t_sampling")
    b_tot, c_tot = arr(base, "t_total"), arr(cell, "t_total")
    b_flops, c_flops = _flops(base), _flops(cell)
    with np.errstate(divide="ignore", invalid="ignore"):
        predicted_total = b_tot / ((b_tot - b_samp) + b_samp * c_flops / b_flops)
        ratios = {
            "speedup_sampling": b_samp / c_samp,
            "predicted_sampling": b_flops / c_flops,
            "speedup_total": b_tot / c_tot,
            "predicted_total": predicted_total,
        }
    return {name: _nanmedian(values) for name, values in ratios.items()}


def _flops(frame: pd.DataFrame) -> npt.NDArray[np.float64]:
    from bench.prediction import sampling_flops

    return np.asarray([sampling_flops(r) for r in frame.to_dict("records")], dtype=np.float64)


def _nanmedian(values: npt.NDArray[np.float64]) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


# --------------------------------------------------------------------------- headline


@dataclass(frozen=True)
class Choice:
    """The fastest acceptable cell on one hardware (see :func:`headline`)."""

    hardware: str
    cell_id: str
    cell_label: str
    rtf: float
    speedup_total: float
    corpus_wer: float
    wer_limit: float
    cost_per_audio_hour: float
    speed_only: bool
    note: str


def headline(cells: pd.DataFrame, baselines: Mapping[str, Baseline],
             wer_budget_points: float = DEFAULT_WER_BUDGET_POINTS) -> list[Choice]:
    """Per hardware: the cell with the lowest median RTF whose corpus WER is at most the
    baseline's plus ``wer_budget_points`` percentage points (0.5 -> +0.005).

    Only usable cells compete (:func:`bench.outcomes.usable`: every generation produced
    speech); under a WER budget, only cells with a WER. A cell without quality figures
    never switches the budget off for the others. When the hardware's quality is not
    meaningful (random weights or ASR) or not scored at all, the choice is the fastest
    usable cell, marked ``speed_only``. With no cell left, the choice names none
    (``cell_id`` empty) and its note says why.
    """
    choices = []
    for hardware, group in cells.groupby("hardware", sort=False):
        hw = str(hardware)
        base = baselines.get(hw)
        if base is None:
            continue
        ranked = group[group["rtf_median"].notna()].sort_values("rtf_median", kind="stable")
        if not len(ranked):
            continue
        candidates = ranked[[usable(r) for r in ranked.to_dict("records")]]
        left_out = sum(not usable(r) for r in group.to_dict("records"))
        base_row: dict[Any, Any] = cells.loc[base.cell_id].to_dict()
        base_wer = float(base_row["corpus_wer"])
        statuses = set(group["quality"])
        meaningful = "not meaningful" not in statuses and math.isfinite(base_wer)
        limit = base_wer + wer_budget_points / 100.0 if meaningful else math.nan
        if meaningful:
            fits = candidates[candidates["corpus_wer"] <= limit + 1e-12]
            note = (f"fastest usable cell with corpus WER within {wer_budget_points:g} points "
                    f"of the baseline ({base_wer * 100:.2f} % + {wer_budget_points:g})")
        else:
            fits = candidates
            why = (f"quality {NOT_MEANINGFUL}" if "not meaningful" in statuses
                   else "quality not scored")
            note = f"speed-only choice: {why}; the fastest usable cell is shown"
        if left_out:
            note += (f"; {left_out} cell{'s' if left_out != 1 else ''} with failed, NaN or "
                     "silent generations left out")
        if not usable(base_row):
            note += f"; the baseline itself has {_no_speech_text(base_row)}"
        if len(fits):
            pick: dict[Any, Any] = fits.iloc[0].to_dict()
            choices.append(_choice(hw, pick, limit, not meaningful, note))
        else:
            choices.append(Choice(
                hardware=hw, cell_id="", cell_label="no cell qualifies", rtf=math.nan,
                speedup_total=math.nan, corpus_wer=math.nan, wer_limit=limit,
                cost_per_audio_hour=math.nan, speed_only=not meaningful,
                note=f"no recommendation: no usable cell{' within the budget' if meaningful else ''}"
                     f" ({note})"))
    return choices


def _choice(hardware: str, pick: Mapping[Any, Any], limit: float, speed_only: bool,
            note: str) -> Choice:
    return Choice(
        hardware=hardware, cell_id=str(pick["cell_id"]), cell_label=str(pick["cell_label"]),
        rtf=float(pick["rtf_median"]), speedup_total=float(pick.get("speedup_total", math.nan)),
        corpus_wer=float(pick["corpus_wer"]), wer_limit=limit,
        cost_per_audio_hour=float(pick.get("cost_per_audio_hour", math.nan)),
        speed_only=speed_only, note=note)


def _no_speech_text(row: Mapping[Any, Any]) -> str:
    parts = [f"{int(row.get(k) or 0)} {what}" for k, what in (
        ("n_failed", "failed"), ("n_nan", "NaN"), ("n_silent", "silent")) if row.get(k)]
    return (", ".join(parts) or "no completed") + " generations"


# --------------------------------------------------------------------------- one run


@dataclass
class RunAnalysis:
    """Everything a report shows about one run."""

    run_dir: Path
    manifest: dict[str, Any]
    records: pd.DataFrame
    cells: pd.DataFrame
    baselines: dict[str, Baseline]
    choices: list[Choice]
    vram: pd.DataFrame
    prices: Prices
    wer_budget_points: float
    notes: list[str]

    @property
    def quality_status(self) -> str:
        """"ok" (every scored cell meaningful), "not meaningful" or "not scored"."""
        statuses = set(column(self.cells, "quality"))
        if not statuses or statuses == {"not scored"}:
            return "not scored"
        return "not meaningful" if "not meaningful" in statuses else "ok"

    @property
    def failures(self) -> pd.DataFrame:
        """Failed generations with their error, phase and place."""
        failed = self.records[column(self.records, "status") == "failed"]
        keep = [c for c in ("key", "cell_id", "cell_label", "prompt_id", "seed", "error",
                            "error_phase", "error_where") if c in failed.columns]
        return failed[keep]


def analyze_run(run_dir: str | Path, *, prices: Prices | None = None,
                baseline_cell: str | None = None,
                wer_budget_points: float = DEFAULT_WER_BUDGET_POINTS,
                n_boot: int = 1000) -> RunAnalysis:
    """Load a run directory and compute every figure of its report."""
    from bench.store import MANIFEST, StoreError, load_records, read_json

    run_dir = Path(run_dir)
    try:
        records = load_records(run_dir)
        manifest = read_json(run_dir / MANIFEST)
    except StoreError as err:
        raise UserError(str(err)) from None
    if not len(records) or "cell_id" not in records.columns:
        raise UserError(f"run {run_dir} has no records yet; run or resume the sweep first")
    prices = prices or load_prices()
    cpu_cores = (manifest.get("environment") or {}).get("cpu_count")
    cells = summarize_cells(records, n_boot=n_boot)
    cells = add_costs(cells, prices, cpu_cores if isinstance(cpu_cores, int) else None)
    cells = add_frontiers(cells)
    baselines = choose_baselines(cells, baseline_cell)
    cells = add_speedups(cells, records, baselines)
    notes = [f"{b.hardware}: baseline {b.cell_id} — {b.reason}" for b in baselines.values()]
    return RunAnalysis(
        run_dir=run_dir, manifest=manifest, records=records, cells=cells,
        baselines=baselines, choices=headline(cells, baselines, wer_budget_points),
        vram=vram_fit(cells), prices=prices, wer_budget_points=wer_budget_points, notes=notes)


# --------------------------------------------------------------------------- comparisons


def compare_runs(candidate: RunAnalysis, baseline: RunAnalysis, n_boot: int = 1000
                 ) -> pd.DataFrame:
    """Cells present in both runs (paired by cell id): median RTF of each, their ratio
    (candidate / baseline; > 1 is slower), and the paired corpus-WER difference
    (candidate - baseline, fraction) with its 95 % interval, paired by (prompt, seed);
    failed and silent generations count as empty transcripts (:mod:`bench.outcomes`)."""
    from bench.scoring.wer import paired_difference

    rows = []
    for cell_id in candidate.cells.index:
        if cell_id not in baseline.cells.index:
            continue
        new, old = candidate.cells.loc[cell_id], baseline.cells.loc[cell_id]
        row = {"cell_id": cell_id, "cell_label": new["cell_label"],
               "rtf_baseline": old["rtf_median"], "rtf_candidate": new["rtf_median"],
               "rtf_ratio": new["rtf_median"] / old["rtf_median"],
               "delta_wer": math.nan, "delta_wer_lo": math.nan, "delta_wer_hi": math.nan}
        a = pair_scores(_cell_rows(baseline.records, str(cell_id)),
                        scored=has_scores(baseline.records))
        b = pair_scores(_cell_rows(candidate.records, str(cell_id)),
                        scored=has_scores(candidate.records))
        if a and b:
            diff = paired_difference(a, b, n_boot=n_boot)
            row.update(delta_wer=diff.delta_corpus_wer, delta_wer_lo=diff.ci_low,
                       delta_wer_hi=diff.ci_high)
        rows.append(row)
    return pd.DataFrame(rows)


def _cell_rows(records: pd.DataFrame, cell_id: str) -> pd.DataFrame:
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
    transcripts under the rule of :mod:`bench.outcomes` (``scored``: whether the run was
    scored, by default whether these records carry any score)."""
    order = records.sort_values("repeat", kind="stable") if "repeat" in records.columns \
        else records
    rated, scores = quality_scores(order, scored=scored)
    out: dict[tuple[str, int], Any] = {}
    for key, score in zip(pair_keys(rated), scores, strict=True):
        out.setdefault(key, score)
    return out


# --------------------------------------------------------------------------- history


def history_table(root: str | Path, spec_name: str | None = None) -> pd.DataFrame:
    """Key figures of every run under ``root`` (optionally of one spec), oldest first.

    One row per (run, cell): ``run_id``, ``started_at``, ``git_commit``, ``spec_name``,
    ``cell_id``, ``cell_label``, ``rtf_median``, ``corpus_wer`` (NaN unless scored and
    meaningful; failed and silent generations count as empty transcripts),
    ``failure_rate`` (share without speech) and ``rtfs`` (per-generation RTF keyed by
    (prompt, seed, repeat), so runs pair twin generations). Runs whose records cannot be
    read are skipped.
    """
    from bench.store import StoreError, list_runs, load_records

    root = Path(root)
    rows: list[dict[str, Any]] = []
    for entry in list_runs(root, spec_name):
        run_dir = root / str(entry.get("path") or entry.get("run_id"))
        try:
            records = load_records(run_dir)
        except (StoreError, OSError):
            continue
        if not len(records) or "cell_id" not in records.columns:
            continue
        cells = summarize_cells(records, n_boot=200)
        ok = records[column(records, "status") == "ok"]
        for cell_id, cell in cells.iterrows():
            mine = ok[ok["cell_id"] == cell_id]
            rtfs = {key: float(v) for key, v in zip(_pair_index(mine), column(mine, "rtf"),
                                                    strict=True) if is_number(v)}
            rows.append({
                "run_id": entry.get("run_id"), "started_at": entry.get("started_at"),
                "git_commit": entry.get("git_commit"), "spec_name": entry.get("spec_name"),
                "cell_id": cell_id, "cell_label": cell["cell_label"],
                "rtf_median": cell["rtf_median"],
                "corpus_wer": cell["corpus_wer"] if cell["quality"] == "ok" else math.nan,
                "failure_rate": cell["failure_rate"], "rtfs": rtfs,
            })
    return pd.DataFrame(rows)


def flag_step_changes(history: pd.DataFrame, factor: float = 1.1, alpha: float = 0.05
                      ) -> pd.DataFrame:
    """``history`` plus, per row, the change against the same cell's previous run, over
    the generations both runs made (:func:`bench.steps.paired_step_change`): ``ratio``
    (median over twins of RTF now / before), ``p_value`` (two-sided signed-rank),
    ``n_pairs`` and ``step`` ("slower", "faster" or "")."""
    from bench.steps import NO_PAIRS, paired_step_change

    out = history.copy()
    changes = []
    previous: dict[str, Mapping[Hashable, float]] = {}
    for _, row in out.iterrows():
        before = previous.get(str(row["cell_id"]))
        changes.append(NO_PAIRS if before is None else paired_step_change(
            before, row["rtfs"], factor=factor, alpha=alpha))
        previous[str(row["cell_id"])] = row["rtfs"]
    out["ratio"] = [c.ratio for c in changes]
    out["p_value"] = [c.p_value for c in changes]
    out["n_pairs"] = [c.n_pairs for c in changes]
    out["step"] = [c.step for c in changes]
    return out
