"""From records to answers: per-cell aggregates, the speed/quality frontier, cost, speed-up
against a baseline (measured and predicted from NFE), VRAM fit and the headline choice.

Everything here is a pure function of a record table (``bench.store.load_records``) plus,
for cost, a price table; the report, the notebook and the history command share it.

Units: times in seconds, RTF in compute seconds per second of audio (lower is better),
memory in bytes (GB = 1e9 bytes where shown), WER/CER as fractions (0.05 = 5 %), money
in the price file's currency (USD) per hour of audio produced.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.errors import UserError
from bench.noise import cell_noise
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
#: Score lines of audio the scorer refused (see :func:`pair_scores`).
UNSCORABLE_AUDIO = ("skipped_silent_audio", "skipped_nan_audio")
#: Among cells with the default baseline's sampler settings (a speed-options sweep has
#: several), the one that runs the production path: fewest of these changed.
PLAIN_EXECUTION: dict[str, Any] = {"compile": False, "cuda_graphs": False,
                                   "attention": "sliced", "batch_size": 1}
#: GPU memory budgets (GB) and the cards that have them.
VRAM_BUDGETS_GB: dict[int, str] = {
    16: "T4", 24: "L4, A10G", 40: "A100-40GB", 48: "L40S", 80: "A100-80GB, H100", 141: "H200",
}
#: Memory a CUDA process holds outside the caching allocator (context, cuBLAS workspaces,
#: fragmentation), so a cell whose peak reserved memory equals the card size still fails.
CUDA_CONTEXT_BYTES = 500_000_000
DEFAULT_WER_BUDGET_POINTS = 0.5
NOT_MEANINGFUL = "not meaningful (random weights)"


# --------------------------------------------------------------------------- helpers


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """``frame[name]``, or an all-missing column when the records lack it (older runs,
    unscored runs)."""
    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


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
    return float(np.quantile(values, q)) if values.size else math.nan


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


def _truthy(value: Any) -> bool:
    return bool(value) and not (isinstance(value, float) and math.isnan(value))


# --------------------------------------------------------------------------- quality


def utterance_scores(rows: pd.DataFrame) -> list[Any]:
    """UtteranceScore objects rebuilt from the score fields stored on records.

    Character counts: the stored ``ref_chars``/``char_errors`` when present, else from the
    normalised reference (CER counts its characters, spaces included) and the stored CER.
    """
    from bench.scoring.wer import UtteranceScore

    out = []
    for r in rows.to_dict("records"):
        ref_norm = str(r.get("reference_norm") or "")
        hyp_norm = str(r.get("transcript_norm") or "")
        ref_words = int(r.get("ref_words") or 0)
        cer = float(r["cer"]) if r.get("cer") is not None else math.nan
        stored_chars: Any = r.get("ref_chars")
        stored_errors: Any = r.get("char_errors")
        ref_chars = int(stored_chars) if _is_number(stored_chars) else len(ref_norm)
        if _is_number(stored_errors):
            char_errors = int(stored_errors)
        else:
            char_errors = round(cer * ref_chars) if math.isfinite(cer) else len(hyp_norm)
        wer = float(r["wer"]) if _is_number(r.get("wer")) else math.nan
        out.append(UtteranceScore(
            ref_raw=str(r.get("text") or ""), hyp_raw=str(r.get("transcript") or ""),
            ref_norm=ref_norm, hyp_norm=hyp_norm, ref_words=ref_words,
            hits=int(r.get("hits") or 0), substitutions=int(r.get("substitutions") or 0),
            deletions=int(r.get("deletions") or 0), insertions=int(r.get("insertions") or 0),
            wer=wer, ref_chars=ref_chars, char_errors=char_errors, cer=cer,
            empty_hyp=_truthy(r.get("empty_hyp")), empty_ref=ref_words == 0,
        ))
    return out


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float | np.integer | np.floating)
            and not isinstance(value, bool) and math.isfinite(float(value)))


def scored_rows(records: pd.DataFrame) -> pd.DataFrame:
    """Records that carry a score (a numeric ``wer`` or ``ref_words``)."""
    if "ref_words" not in records.columns:
        return records.iloc[0:0]
    mask = records["ref_words"].map(_is_number)
    return records[mask.astype(bool)]


def quality_is_meaningful(rows: pd.DataFrame) -> bool:
    """The scorer's ``quality_meaningful`` flags when present (all must be true); for
    scores without them, false when the weights or the ASR were random."""
    flags = column(rows, "quality_meaningful").dropna()
    if len(flags):
        return all(bool(f) for f in flags)
    return not any(_truthy(v) for v in column(rows, "random_weights")) and not any(
        _truthy(v) for v in column(rows, "asr_random"))


# --------------------------------------------------------------------------- per cell


def summarize_cells(records: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per cell (in the order cells first appear), indexed by ``cell_id``.

    Columns: the settings in :data:`SETTINGS`; ``hardware``; counts ``n``, ``n_ok``,
    ``n_failed``, ``n_nan``, ``n_silent``, ``n_scored``; ``<stat>_median``, ``_p10`` and
    ``_p90`` for each of :data:`TIME_STATS` over ok generations (seconds, RTF unitless);
    ``x_realtime`` (1 / median RTF); ``nfe_per_chunk`` (median forward rows per chunk);
    peak memory in bytes (``peak_allocated``, ``peak_reserved``, ``peak_rss``: the max
    over generations; NaN where not measured); quality (``corpus_wer``, ``mean_wer``,
    ``cer`` with ``_lo``/``_hi`` 95 % cluster-bootstrap bounds, ``share_above_50``,
    ``n_empty_hyp``) and ``quality`` ("ok", "not meaningful" or "not scored"); timing
    noise and the machine's state (``dispersion``, ``unstable``, ``interleaved``, ...:
    :func:`bench.noise.cell_noise`).
    """
    rows: list[dict[str, Any]] = []
    if not len(records) or "cell_id" not in records.columns:
        return pd.DataFrame(rows)
    for cell_id, group in records.groupby("cell_id", sort=False):
        row: dict[str, Any] = {"cell_id": cell_id}
        for name in SETTINGS:
            row[name] = _first(column(group, name))
        row["hardware"] = hardware_of(row["gpu"], row["device_name"])
        status = column(group, "status")
        ok = group[status == "ok"]
        row.update(n=len(group), n_ok=len(ok), n_failed=int((status == "failed").sum()),
                   n_nan=int(sum(_truthy(v) for v in column(ok, "audio_nan"))),
                   n_silent=int(sum(_truthy(v) for v in column(ok, "audio_silent"))))
        for stat in TIME_STATS:
            values = _numbers(column(ok, stat))
            row[f"{stat}_median"] = _quantile(values, 0.5)
            row[f"{stat}_p10"] = _quantile(values, 0.1)
            row[f"{stat}_p90"] = _quantile(values, 0.9)
        rtf = row["rtf_median"]
        row["x_realtime"] = 1.0 / rtf if rtf and math.isfinite(rtf) else math.nan
        # Aligned per record: a record without nfe gives NaN, which the median skips.
        per_chunk = _aligned(ok, "nfe", math.nan) / np.maximum(_aligned(ok, "n_chunks", 1.0), 1)
        row["nfe_per_chunk"] = _nanmedian(per_chunk)
        row["peak_allocated"] = _max_or_nan(column(group, "peak_allocated_bytes"))
        row["peak_reserved"] = _max_or_nan(column(group, "peak_reserved_bytes"))
        row["peak_rss"] = _max_or_nan(column(group, "peak_rss_bytes"))
        row.update(cell_noise(ok))
        row.update(_cell_quality(scored_rows(ok), n_boot=n_boot, seed=seed))
        rows.append(row)
    return pd.DataFrame(rows).set_index("cell_id", drop=False)


def _aligned(frame: pd.DataFrame, name: str, missing: float) -> npt.NDArray[np.float64]:
    """``frame[name]`` as floats aligned with the frame's rows (non-numbers -> missing)."""
    return np.asarray([float(v) if _is_number(v) else missing for v in column(frame, name)],
                      dtype=np.float64)


def _cell_quality(scored: pd.DataFrame, *, n_boot: int, seed: int) -> dict[str, Any]:
    nan = math.nan
    empty = {"n_scored": 0, "corpus_wer": nan, "corpus_wer_lo": nan, "corpus_wer_hi": nan,
             "mean_wer": nan, "mean_wer_lo": nan, "mean_wer_hi": nan, "cer": nan,
             "cer_lo": nan, "cer_hi": nan, "share_above_50": nan, "n_empty_hyp": 0,
             "quality": "not scored"}
    if not len(scored):
        return empty
    from bench.scoring.wer import summarize

    q = summarize(utterance_scores(scored), n_boot=n_boot, seed=seed,
                  cluster=list(column(scored, "prompt_id")))
    return {
        "n_scored": q.n, "corpus_wer": q.corpus_wer, "corpus_wer_lo": q.corpus_wer_ci[0],
        "corpus_wer_hi": q.corpus_wer_ci[1], "mean_wer": q.mean_wer,
        "mean_wer_lo": q.mean_wer_ci[0], "mean_wer_hi": q.mean_wer_ci[1], "cer": q.cer,
        "cer_lo": q.cer_ci[0], "cer_hi": q.cer_ci[1], "share_above_50": q.share_above_50,
        "n_empty_hyp": q.n_empty_hyp,
        "quality": "ok" if quality_is_meaningful(scored) else "not meaningful",
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
    """Money per hour of audio: price/s x compute seconds per audio second x 3600 s."""
    if price_per_second is None or not math.isfinite(rtf):
        return math.nan
    return price_per_second * rtf * 3600.0


def add_costs(cells: pd.DataFrame, prices: Prices, cpu_cores: int | None = None) -> pd.DataFrame:
    """Add ``price_per_second``, ``price_basis`` (what was priced) and
    ``cost_per_audio_hour`` (from the median RTF). Returns a new frame."""
    out = cells.copy()
    priced = [prices.per_second(g if isinstance(g, str) else None,
                                d if isinstance(d, str) else None, cpu_cores)
              for g, d in zip(column(out, "gpu"), column(out, "device_name"), strict=True)]
    out["price_per_second"] = [math.nan if p is None else p for p, _ in priced]
    out["price_basis"] = [basis for _, basis in priced]
    out["cost_per_audio_hour"] = [cost_per_audio_hour(p, r)
                                  for (p, _), r in zip(priced, out["rtf_median"], strict=True)]
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
    """Add measured and NFE-predicted speed-ups against each hardware's baseline cell.

    Generations are paired by (prompt, seed, repeat) with the baseline's; each figure is
    the median over pairs of a per-pair ratio (the median resists a slow outlier):

    * ``speedup_sampling`` = baseline t_sampling / cell t_sampling (measured);
    * ``predicted_sampling`` = baseline NFE / cell NFE (sampling time proportional to
      forward rows, the cost per row unchanged);
    * ``speedup_total`` = baseline t_total / cell t_total (measured);
    * ``predicted_total`` = baseline t_total / (baseline non-sampling time + baseline
      t_sampling x cell NFE / baseline NFE): only the sampling share shrinks (Amdahl);
    * ``*_gap`` = measured - predicted (positive: faster than the NFE count promises).

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
    b_nfe, c_nfe = arr(base, "nfe"), arr(cell, "nfe")
    with np.errstate(divide="ignore", invalid="ignore"):
        predicted_total = b_tot / ((b_tot - b_samp) + b_samp * c_nfe / b_nfe)
        ratios = {
            "speedup_sampling": b_samp / c_samp,
            "predicted_sampling": b_nfe / c_nfe,
            "speedup_total": b_tot / c_tot,
            "predicted_total": predicted_total,
        }
    return {name: _nanmedian(values) for name, values in ratios.items()}


def _nanmedian(values: npt.NDArray[np.float64]) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


# --------------------------------------------------------------------------- memory


def vram_fit(cells: pd.DataFrame, budgets_gb: Iterable[int] = VRAM_BUDGETS_GB,
             context_bytes: int = CUDA_CONTEXT_BYTES) -> pd.DataFrame:
    """Headroom of each cell on each GPU memory budget, in GB (1e9 bytes).

    Uses the peak reserved memory (what the caching allocator held: the memory other
    processes could not have) plus ``context_bytes`` for the CUDA context. A column per
    budget holds ``budget - needed`` (negative: does not fit); NaN where the cell ran on
    a CPU (no device memory measured). ``needed_gb`` is the need itself.
    """
    budgets = list(budgets_gb)
    reserved = cells["peak_reserved"].astype(float) if len(cells) else pd.Series(dtype=float)
    needed = (reserved + context_bytes) / 1e9
    out = pd.DataFrame({"cell_label": column(cells, "cell_label"), "hardware": column(
        cells, "hardware"), "needed_gb": needed}, index=cells.index)
    for budget in budgets:
        out[f"{budget} GB"] = budget - needed
    return out


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

    When the hardware's quality figures are not meaningful (random weights or ASR) or
    not there, the choice is the fastest cell, marked ``speed_only``.
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
        base_row: dict[Any, Any] = cells.loc[base.cell_id].to_dict()
        base_wer = float(base_row["corpus_wer"])
        meaningful = bool((group["quality"] == "ok").all()) and math.isfinite(base_wer)
        limit = base_wer + wer_budget_points / 100.0 if meaningful else math.nan
        if meaningful:
            fits = ranked[ranked["corpus_wer"] <= limit + 1e-12]
            pick: dict[Any, Any] = fits.iloc[0].to_dict() if len(fits) else base_row
            note = (f"fastest cell with corpus WER within {wer_budget_points:g} points of the "
                    f"baseline ({base_wer * 100:.2f} % + {wer_budget_points:g})")
        else:
            pick = ranked.iloc[0].to_dict()
            why = ("quality not scored" if (group["quality"] == "not scored").all()
                   else f"quality {NOT_MEANINGFUL}")
            note = f"speed-only choice: {why}; the fastest cell is shown"
        choices.append(Choice(
            hardware=hw, cell_id=str(pick["cell_id"]), cell_label=str(pick["cell_label"]),
            rtf=float(pick["rtf_median"]),
            speedup_total=float(pick.get("speedup_total", math.nan)),
            corpus_wer=float(pick["corpus_wer"]), wer_limit=limit,
            cost_per_audio_hour=float(pick.get("cost_per_audio_hour", math.nan)),
            speed_only=not meaningful, note=note))
    return choices


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
    (candidate - baseline, fraction) with its 95 % interval, paired by (prompt, seed)."""
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
        a = pair_scores(_ok_rows(baseline.records, str(cell_id)))
        b = pair_scores(_ok_rows(candidate.records, str(cell_id)))
        if a and b:
            diff = paired_difference(a, b, n_boot=n_boot)
            row.update(delta_wer=diff.delta_corpus_wer, delta_wer_lo=diff.ci_low,
                       delta_wer_hi=diff.ci_high)
        rows.append(row)
    return pd.DataFrame(rows)


def _ok_rows(records: pd.DataFrame, cell_id: str) -> pd.DataFrame:
    return records[(column(records, "cell_id") == cell_id) & (column(records, "status") == "ok")]


def pair_keys(records: pd.DataFrame) -> list[tuple[str, int]]:
    """The (prompt_id, seed) of each record: what paired comparisons pair on."""
    return [(str(p), int(s)) for p, s in zip(column(records, "prompt_id"),
                                             column(records, "seed"), strict=True)]


def pair_scores(records: pd.DataFrame) -> dict[tuple[str, int], Any]:
    """One UtteranceScore per (prompt_id, seed) of a cell's ok records, for paired WER
    comparisons (the report's run-to-run table and the CI gate): the first repeat's
    (repeats score the same text). Audio the scorer refused as silent or NaN counts as
    an empty transcript, so a candidate that produces silence is judged as saying nothing.
    """
    from bench.scoring.wer import score_utterance

    out: dict[tuple[str, int], Any] = {}
    order = records.sort_values("repeat") if "repeat" in records.columns else records
    scored = scored_rows(order)
    for key, score in zip(pair_keys(scored), utterance_scores(scored), strict=True):
        out.setdefault(key, score)
    refused = order[column(order, "score_status").isin(UNSCORABLE_AUDIO)]
    for key, text in zip(pair_keys(refused), column(refused, "text"), strict=True):
        out.setdefault(key, score_utterance(str(text), ""))
    return out


# --------------------------------------------------------------------------- history


def step_change(before: Sequence[float], after: Sequence[float], *, factor: float = 1.1,
                alpha: float = 0.05, n_perm: int = 2000, seed: int = 0
                ) -> tuple[float, float, bool]:
    """(ratio of medians after/before, p-value, flagged) for two samples of a figure.

    Flagged like asv: the ratio is beyond ``factor`` either way AND a two-sided test says
    the samples differ (p < ``alpha``): Mann-Whitney U from scipy when installed, else a
    permutation test of the difference in medians with ``n_perm`` shuffles.
    """
    a = _numbers(before)
    b = _numbers(after)
    if not a.size or not b.size:
        return math.nan, math.nan, False
    ratio = float(np.median(b) / np.median(a)) if np.median(a) > 0 else math.nan
    p = _p_value(a, b, n_perm=n_perm, seed=seed)
    big = math.isfinite(ratio) and (ratio > factor or ratio < 1.0 / factor)
    return ratio, p, bool(big and p < alpha)


def _p_value(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], *, n_perm: int,
             seed: int) -> float:
    try:
        from scipy.stats import mannwhitneyu
    except ImportError:
        pass
    else:
        return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
    observed = abs(np.median(b) - np.median(a))
    pooled = np.concatenate([a, b])
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_perm):
        shuffled = rng.permutation(pooled)
        hits += abs(np.median(shuffled[a.size:]) - np.median(shuffled[:a.size])) >= observed
    # The +1s count the observed split itself, so p is never exactly 0.
    return (hits + 1) / (n_perm + 1)


def history_table(root: str | Path, spec_name: str | None = None) -> pd.DataFrame:
    """Key figures of every run under ``root`` (optionally of one spec), oldest first.

    One row per (run, cell): ``run_id``, ``started_at``, ``git_commit``, ``spec_name``,
    ``cell_id``, ``cell_label``, ``rtf_median``, ``corpus_wer`` (NaN unless scored and
    meaningful), and ``rtfs`` (the per-generation RTFs, for significance tests). Runs
    whose records cannot be read are skipped.
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
            rtfs = _numbers(column(ok[ok["cell_id"] == cell_id], "rtf")).tolist()
            rows.append({
                "run_id": entry.get("run_id"), "started_at": entry.get("started_at"),
                "git_commit": entry.get("git_commit"), "spec_name": entry.get("spec_name"),
                "cell_id": cell_id, "cell_label": cell["cell_label"],
                "rtf_median": cell["rtf_median"],
                "corpus_wer": cell["corpus_wer"] if cell["quality"] == "ok" else math.nan,
                "rtfs": rtfs,
            })
    return pd.DataFrame(rows)


def flag_step_changes(history: pd.DataFrame, factor: float = 1.1, alpha: float = 0.05
                      ) -> pd.DataFrame:
    """``history`` plus, per row, the change against the same cell's previous run:
    ``ratio`` (median RTF now / before), ``p_value`` and ``step`` ("slower", "faster" or
    "")."""
    out = history.copy()
    ratios: list[float] = []
    pvalues: list[float] = []
    steps: list[str] = []
    previous: dict[str, list[float]] = {}
    for _, row in out.iterrows():
        before = previous.get(str(row["cell_id"]))
        if before is None:
            ratios.append(math.nan)
            pvalues.append(math.nan)
            steps.append("")
        else:
            ratio, p, flagged = step_change(before, row["rtfs"], factor=factor, alpha=alpha)
            ratios.append(ratio)
            pvalues.append(p)
            steps.append(("slower" if ratio > 1 else "faster") if flagged else "")
        previous[str(row["cell_id"])] = list(row["rtfs"])
    out["ratio"] = ratios
    out["p_value"] = pvalues
    out["step"] = steps
    return out
