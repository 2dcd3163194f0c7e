"""The research's predictions, measured: one row per ``[[predictions]]`` entry of a run.

Each row pairs the proposal's cell with its baseline cell generation by generation
(same prompt, seed and repeat) and reports:

* the predicted gain (the spec's figure, the source's words) and what the FLOP model of
  :mod:`echo_tts.flops` predicts for the same change, at the run's model size;
* the measured speed-up with a 95 % bootstrap interval over prompts, of what the
  prediction is about: end-to-end latency, time to first audio (``ttfb``) or
  throughput (audio seconds per second of the worker's time);
* the change of every quality metric the run has (paired differences, intervals);
* peak memory and whether it fits the card the prediction names;
* cost per audio hour (a ratio of sums) and its ratio to the baseline's;
* a verdict in words: holds / smaller than predicted / costs quality / not measurable
  here, and why.

The baseline row instead sets the measured wall-clock of the texts the research
measured (``category``, e.g. the ~150-word passages) beside the source's own figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.analysis.evidence import quality_is_meaningful
from bench.analysis.flop_model import flop_speedup
from bench.analysis.prices import Prices
from bench.scoring.outcomes import column
from bench.scoring.stats import Interval

#: Per-utterance quality columns a run may carry; a prediction row shows each one present.
QUALITY_METRICS: tuple[str, ...] = ("wer", "cer", "sim", "utmos", "dnsmos_ovrl", "dnsmos_sig",
                                    "dnsmos_bak", "dnsmos_p808")
#: A paired change past these (lower bound of the harm) is material (design map: half a
#: WER point; the gate's speaker-similarity margin; a tenth of a MOS point).
MATERIAL_HARM: dict[str, float] = {"wer": 0.005, "cer": 0.005, "sim": -0.01, "utmos": -0.1,
                                   "dnsmos_ovrl": -0.1}
#: Memory a CUDA context takes beside PyTorch's allocations (as bench.analysis.cells assumes).
CUDA_CONTEXT_BYTES = 500_000_000
PAIR_KEYS = ["prompt_id", "seed", "repeat"]
N_BOOT = 1000


@dataclass
class PredictionRow:
    """One measured prediction (see the module docstring); NaN/None where not measured."""

    name: str
    proposal: str
    hardware: str
    measure: str
    source: str
    predicted: str
    flop_speedup: float | None = None
    speedup: Interval | None = None
    speedup_of: str = ""
    quality: dict[str, Interval] = field(default_factory=dict)
    quality_meaningful: bool = False
    n_pairs: int = 0
    n_failed: int = 0
    peak_memory_bytes: float | None = None
    memory_kind: str = ""
    fit: str = ""
    cost_per_audio_hour: float | None = None
    cost_ratio: float | None = None
    verdict: str = ""
    why: str = ""
    measured_seconds: Interval | None = None
    audio_seconds: float | None = None
    reference: str = ""


def measure_predictions(records: pd.DataFrame, manifest: Mapping[str, Any], prices: Prices,
                        *, n_boot: int = N_BOOT, seed: int = 0) -> list[PredictionRow]:
    """A row per prediction of the run's spec (none when the spec has no predictions)."""
    predictions = (manifest.get("spec") or {}).get("predictions") or []
    cores = (manifest.get("environment") or {}).get("cpu_count")
    out = []
    for p in predictions:
        base = cell_rows(records, p["baseline_cell"])
        cand = None if p.get("candidate_cell") is None else cell_rows(records, p["candidate_cell"])
        if p.get("category"):
            base = base[column(base, "prompt_category") == p["category"]]
            if cand is not None:
                cand = cand[column(cand, "prompt_category") == p["category"]]
        context = _Context(prices, cores if isinstance(cores, int) else None, n_boot, seed)
        out.append(_baseline_row(p, base, context) if cand is None
                   else _proposal_row(p, base, cand, context))
    return out


@dataclass(frozen=True)
class _Context:
    prices: Prices
    cpu_cores: int | None
    n_boot: int
    seed: int


def cell_rows(records: pd.DataFrame, cell_id: str) -> pd.DataFrame:
    return records[column(records, "cell_id") == cell_id]


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[column(rows, "status") == "ok"]


def _hardware(rows: pd.DataFrame, gpu: Any) -> str:
    if isinstance(gpu, str) and gpu:
        return gpu
    names = [n for n in column(rows, "device_name") if isinstance(n, str)]
    return names[0] if names else "unknown"


def _on_cpu(rows: pd.DataFrame) -> bool:
    return any(str(d).startswith("cpu") for d in column(rows, "device"))


def _predicted_text(p: Mapping[str, Any]) -> str:
    parts = []
    if p.get("speedup"):
        what = {"ttfb": "sooner first audio", "throughput": "throughput"}.get(p["measure"],
                                                                              "faster")
        parts.append(f"~{p['speedup']:g}x {what}")
    if p.get("cost_factor"):
        parts.append(f"cost x{p['cost_factor']:g}")
    if p.get("vram_gb"):
        parts.append(f"fits {p['vram_gb']:g} GB")
    return ", ".join(parts) or "no figure"


# --------------------------------------------------------------------------- baseline row


def _baseline_row(p: Mapping[str, Any], base: pd.DataFrame, ctx: _Context) -> PredictionRow:
    ok = _ok(base)
    hardware = _hardware(base, p.get("gpu"))
    reference = ""
    if p.get("reference_seconds"):
        reference = f"~{p['reference_seconds']:g} s"
        if p.get("reference_audio_seconds"):
            reference += f" for ~{p['reference_audio_seconds']:g} s of audio"
    row = PredictionRow(name=p["name"], proposal=p.get("proposal", ""), hardware=hardware,
                        measure=p["measure"], source=p.get("source", ""),
                        predicted=reference or "no figure", reference=reference,
                        n_pairs=len(ok), n_failed=len(base) - len(ok))
    _add_memory_and_cost(row, base, ok, ctx, p)
    if not len(ok):
        row.verdict, row.why = "not measurable here", _no_records_reason(base, "baseline")
        return row
    latency = _numbers(ok, "latency_seconds")
    row.measured_seconds = _bootstrap_mean(latency, list(column(ok, "prompt_id")), ctx)
    row.audio_seconds = float(np.nanmean(_numbers(ok, "audio_seconds")))
    target = p.get("reference_seconds")
    if target is None:
        row.verdict, row.why = "measured", "the source gives no figure to reproduce"
    elif _on_cpu(ok) or _random(ok):
        row.verdict = "not measurable here"
        row.why = (f"this run is {_where(ok)}; the source's {target:g} s was measured on an "
                   "A10G with the real model")
    else:
        estimate = row.measured_seconds.estimate
        close = abs(estimate / target - 1) <= 0.25
        row.verdict = "reproduces" if close else "differs"
        row.why = (f"{estimate:.1f} s measured on {hardware} vs ~{target:g} s in the source "
                   f"({estimate / target:.2f}x)")
    return row


# --------------------------------------------------------------------------- proposal row


def _proposal_row(p: Mapping[str, Any], base: pd.DataFrame, cand: pd.DataFrame,
                  ctx: _Context) -> PredictionRow:
    measure = p["measure"]
    row = PredictionRow(name=p["name"], proposal=p.get("proposal", ""),
                        hardware=_hardware(cand, p.get("gpu")), measure=measure,
                        source=p.get("source", ""), predicted=_predicted_text(p),
                        n_failed=int((column(cand, "status") != "ok").sum()))
    base_ok, cand_ok = _ok(base), _ok(cand)
    row.flop_speedup = flop_speedup(base_ok, cand_ok, measure)
    _add_memory_and_cost(row, cand, cand_ok, ctx, p, base_ok)
    pairs = base_ok.merge(cand_ok, on=PAIR_KEYS, suffixes=("_b", "_c"))
    row.n_pairs = len(pairs)
    if not len(pairs):
        missing = "proposal" if not len(cand_ok) else "baseline"
        row.verdict = "not measurable here"
        row.why = _no_records_reason(cand if missing == "proposal" else base, missing)
        return row
    clusters = list(pairs["prompt_id"])
    row.speedup, row.speedup_of = _speedup(pairs, measure, clusters, ctx)
    row.quality_meaningful = quality_is_meaningful(cand_ok) and quality_is_meaningful(base_ok)
    for metric in QUALITY_METRICS:
        diff = _numbers(pairs, f"{metric}_c") - _numbers(pairs, f"{metric}_b")
        if np.isfinite(diff).any():
            row.quality[metric] = _bootstrap_mean(diff, clusters, ctx)
    row.verdict, row.why = _verdict(p, row, cand_ok)
    return row


def _speedup(pairs: pd.DataFrame, measure: str, clusters: list[Any], ctx: _Context
             ) -> tuple[Interval, str]:
    """Baseline / proposal of what the prediction is about, as a ratio of sums."""
    if measure == "ttfb":
        num, den = _numbers(pairs, "ttfb_seconds_b"), _numbers(pairs, "ttfb_seconds_c")
        return _bootstrap_ratio([num], [den], clusters, ctx), "time to first audio"
    if measure == "throughput":
        # Throughput = audio seconds / worker seconds; a concurrent request's share of the
        # worker is its round's wall time over the round's requests.
        share = _numbers(pairs, "round_wall_seconds_c") / _numbers(pairs, "round_requests_c")
        share = np.where(np.isfinite(share), share, _numbers(pairs, "latency_seconds_c"))
        return _bootstrap_ratio(
            [_numbers(pairs, "audio_seconds_c"), _numbers(pairs, "latency_seconds_b")],
            [share, _numbers(pairs, "audio_seconds_b")], clusters, ctx), "throughput"
    num, den = _numbers(pairs, "latency_seconds_b"), _numbers(pairs, "latency_seconds_c")
    return _bootstrap_ratio([num], [den], clusters, ctx), "end-to-end latency"


def _verdict(p: Mapping[str, Any], row: PredictionRow, cand_ok: pd.DataFrame) -> tuple[str, str]:
    notes = []
    if _on_cpu(cand_ok):
        notes.append(f"speed measured {_where(cand_ok)}, not on {p.get('gpu') or 'a GPU'}")
    if not row.quality_meaningful:
        notes.append("quality from random weights or ASR says nothing")
    tail = "; ".join(notes)
    if p["measure"] == "memory" and p.get("vram_gb"):
        if row.memory_kind != "GPU":
            return "not measurable here", _join(
                f"whether it fits {p['vram_gb']:g} GB needs a GPU's memory peak", tail)
        if row.fit.startswith("does not fit"):
            return "does not fit", _join(row.fit, tail)
    if p["measure"] == "throughput" and p.get("vram_gb") and row.memory_kind != "GPU":
        tail = _join(f"the OOM risk on {p['vram_gb']:g} GB needs the GPU", tail)
    mode = {m for m in column(cand_ok, "chunk_parallel_mode") if isinstance(m, str)}
    if "simulated-one-device" in mode:
        assert row.speedup is not None
        return "not measurable here", _join(
            f"one device can only simulate the workers: {row.speedup.estimate:.2f}x is the "
            "slowest worker's chunks against all of them, without dispatch, transfers or "
            "cold starts; the Modal backend runs the chunks on containers", tail)
    if row.n_failed:
        return "costs reliability", _join(f"{row.n_failed} generation(s) failed", tail)
    if _on_cpu(cand_ok):
        # A CPU (often a tiny model on a shared machine) says nothing about the GPU the
        # prediction is for; the measured figure stays in its column.
        return "not measurable here", tail
    harms = [m for m, iv in row.quality.items() if _harmful(m, iv)]
    if harms and row.quality_meaningful:
        return "costs quality", _join("material change in " + ", ".join(harms), tail)
    assert row.speedup is not None
    predicted = p.get("speedup")
    s = row.speedup
    if predicted is None:
        return "measured (no figure predicted)", _join(
            f"{s.estimate:.2f}x {row.speedup_of} [{s.low:.2f}, {s.high:.2f}]", tail)
    if s.high < predicted:
        return "smaller than predicted", _join(
            f"{s.estimate:.2f}x [{s.low:.2f}, {s.high:.2f}] vs ~{predicted:g}x", tail)
    return "holds", _join(f"{s.estimate:.2f}x [{s.low:.2f}, {s.high:.2f}] vs ~{predicted:g}x",
                          tail)


def _harmful(metric: str, interval: Interval) -> bool:
    limit = MATERIAL_HARM.get(metric)
    if limit is None:
        return False
    # Error rates harm when they rise, scores when they fall: the whole interval past it.
    return interval.low > limit if limit > 0 else interval.high < limit


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _where(rows: pd.DataFrame) -> str:
    model = next((m for m in column(rows, "model") if isinstance(m, str)), "")
    return "on CPU" + (f" with {model}" if model.startswith("random:") else "")


def _random(rows: pd.DataFrame) -> bool:
    return any(bool(v) for v in column(rows, "random_weights") if v is not None)


def _no_records_reason(rows: pd.DataFrame, which: str) -> str:
    errors = [e for e in column(rows, "error") if isinstance(e, str)]
    if errors:
        return f"every {which} generation failed ({errors[0]})"
    return f"the run has no {which} generations"


# --------------------------------------------------------------------------- memory and cost


def _add_memory_and_cost(row: PredictionRow, rows: pd.DataFrame, ok: pd.DataFrame,
                         ctx: _Context, p: Mapping[str, Any],
                         base_ok: pd.DataFrame | None = None) -> None:
    reserved = _max(rows, "peak_reserved_bytes")
    if reserved is not None:
        row.peak_memory_bytes, row.memory_kind = reserved, "GPU"
        if p.get("vram_gb"):
            need = reserved + CUDA_CONTEXT_BYTES
            budget = p["vram_gb"] * 1e9
            row.fit = (f"fits {p['vram_gb']:g} GB" if need <= budget
                       else f"does not fit {p['vram_gb']:g} GB ({need / 1e9:.1f} GB)")
    else:
        row.peak_memory_bytes, row.memory_kind = _max(rows, "peak_rss_bytes"), "host RSS"
        row.fit = "needs a GPU" if p.get("vram_gb") else ""
    cost = _cost(ok, ctx)
    row.cost_per_audio_hour = cost
    if base_ok is not None and cost is not None:
        base_cost = _cost(base_ok, ctx)
        row.cost_ratio = cost / base_cost if base_cost else None


def _cost(ok: pd.DataFrame, ctx: _Context) -> float | None:
    """Price per second x worker seconds paid / audio seconds x 3600 (a ratio of sums)."""
    if not len(ok):
        return None
    gpu = next((g for g in column(ok, "gpu") if isinstance(g, str)), None)
    device = next((d for d in column(ok, "device_name") if isinstance(d, str)), None)
    price, _ = ctx.prices.per_second(gpu, device, ctx.cpu_cores)
    if price is None:
        return None
    paid = _numbers(ok, "compute_seconds")
    share = _numbers(ok, "round_wall_seconds") / _numbers(ok, "round_requests")
    paid = np.where(np.isfinite(share), share, paid)  # concurrent requests share the worker
    audio = _numbers(ok, "audio_seconds")
    keep = np.isfinite(paid) & np.isfinite(audio)
    if not keep.any() or audio[keep].sum() <= 0:
        return None
    return float(price * paid[keep].sum() / audio[keep].sum() * 3600.0)


def _max(rows: pd.DataFrame, name: str) -> float | None:
    values = _numbers(rows, name)
    values = values[np.isfinite(values)]
    return float(values.max()) if len(values) else None


# --------------------------------------------------------------------------- statistics


def _numbers(frame: pd.DataFrame, name: str) -> npt.NDArray[np.float64]:
    return np.asarray([float(v) if isinstance(v, int | float | np.number)
                       and not isinstance(v, bool) else math.nan
                       for v in column(frame, name)], dtype=np.float64)


def _bootstrap(values: Sequence[npt.NDArray[np.float64]], clusters: list[Any],
               statistic: Callable[[list[npt.NDArray[np.float64]]], float],
               ctx: _Context) -> Interval:
    """``statistic`` of per-cluster sums, with a percentile interval over resampled clusters."""
    codes, uniques = pd.factorize(pd.Series(clusters))
    sums = [np.bincount(codes, weights=np.nan_to_num(v), minlength=len(uniques)).astype(np.float64)
            for v in values]
    estimate = statistic(sums)
    rng = np.random.default_rng(ctx.seed)
    draws = rng.integers(0, len(uniques), size=(ctx.n_boot, len(uniques)))
    reps = np.array([statistic([np.asarray(s[d], dtype=np.float64) for s in sums]) for d in draws])
    reps = reps[np.isfinite(reps)]
    if not len(reps):
        return Interval(estimate, math.nan, math.nan)
    low, high = np.percentile(reps, [2.5, 97.5])
    return Interval(float(estimate), float(low), float(high))


def _bootstrap_ratio(nums: list[npt.NDArray[np.float64]], dens: list[npt.NDArray[np.float64]],
                     clusters: list[Any], ctx: _Context) -> Interval:
    """prod(sum(num_i)) / prod(sum(den_i)) over pairs where every value is finite."""
    keep = np.all([np.isfinite(v) for v in nums + dens], axis=0)
    arrays = [v[keep] for v in nums + dens]
    k = len(nums)

    def stat(sums: list[npt.NDArray[np.float64]]) -> float:
        num = math.prod(float(s.sum()) for s in sums[:k])
        den = math.prod(float(s.sum()) for s in sums[k:])
        return num / den if den > 0 else math.nan

    return _bootstrap(arrays, [c for c, kept in zip(clusters, keep, strict=True) if kept],
                      stat, ctx)


def _bootstrap_mean(values: npt.NDArray[np.float64], clusters: list[Any], ctx: _Context
                    ) -> Interval:
    keep = np.isfinite(values)
    kept = [c for c, k in zip(clusters, keep, strict=True) if k]
    ones = np.ones(int(keep.sum()))

    def stat(sums: list[npt.NDArray[np.float64]]) -> float:
        n = float(sums[1].sum())
        return float(sums[0].sum()) / n if n else math.nan

    return _bootstrap([values[keep], ones], kept, stat, ctx)


# --------------------------------------------------------------------------- latency table


def latency_table(records: pd.DataFrame) -> pd.DataFrame:
    """Per cell: p50/p90/p99 of end-to-end latency and TTFB (seconds), median RTF and
    throughput (audio seconds per worker second), over ok generations."""
    rows = []
    for cell_id, group in records.groupby("cell_id", sort=False):
        ok = _ok(group)
        latency, ttfb = _numbers(ok, "latency_seconds"), _numbers(ok, "ttfb_seconds")
        share = _numbers(ok, "round_wall_seconds") / _numbers(ok, "round_requests")
        share = np.where(np.isfinite(share), share, _numbers(ok, "compute_seconds"))
        audio = _numbers(ok, "audio_seconds")
        keep = np.isfinite(share) & np.isfinite(audio)
        row: dict[str, Any] = {"cell_id": cell_id,
                               "cell_label": next(iter(column(group, "cell_label")), ""),
                               "n_ok": len(ok)}
        for name, values in (("latency", latency), ("ttfb", ttfb)):
            finite = values[np.isfinite(values)]
            for q in (50, 90, 99):
                row[f"{name}_p{q}"] = float(np.percentile(finite, q)) if len(finite) else math.nan
        rtf = _numbers(ok, "rtf")
        row["rtf_median"] = float(np.nanmedian(rtf)) if np.isfinite(rtf).any() else math.nan
        row["throughput"] = (float(audio[keep].sum() / share[keep].sum())
                             if keep.any() and share[keep].sum() > 0 else math.nan)
        rows.append(row)
    return pd.DataFrame(rows)
