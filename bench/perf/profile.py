"""Ours against the reference, side by side in one process, and against the FLOP floor.

For each case (CFG mode x batch x sequence length) it times a full ``sample_latents`` of
ours and (for independent CFG, the only mode the reference has) of the reference on the
same weights and inputs, interleaved after a warm-up, and reports medians, the relative
error between the outputs, time per forward row, achieved TFLOP/s from the analytic count
(:mod:`echo_tts.flops`), the floor at the device's measured matmul rate, and the ratios
ours/reference and ours/floor. Further speed options of ours (e.g. the masked attention
layout) can be timed in the same rounds as alternatives, each with its ratio to ours.
Optionally the whole pipeline's stage split with a codec, and the Whisper scoring time of
a generated clip's length. Results go to a JSON file under ``results/perf/``.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from bench.run.measure import DeviceTimer, capture_environment, pin_allocator
from echo_tts import SamplerConfig, encode_text, load_model, sample_latents
from echo_tts.acceleration import DiTForward
from echo_tts.flops import sampling_flops
from echo_tts.model import EchoDiT

T = TypeVar("T")

PROMPT = ("The lighthouse keeper climbed the stairs at dusk, wound the clockwork and polished "
          "the lens until it shone.")


@dataclass
class CaseResult:
    cfg_mode: str
    batch: int
    sequence_length: int
    num_steps: int
    nfe_rows: int
    ours_seconds: list[float]
    reference_seconds: list[float] = field(default_factory=list)
    rel_error: float | None = None
    flops: float = 0.0
    floor_seconds: float = 0.0
    alternatives: dict[str, list[float]] = field(default_factory=dict)
    alternative_rel_errors: dict[str, float] = field(default_factory=dict)

    @property
    def ours_median(self) -> float:
        return statistics.median(self.ours_seconds)

    @property
    def reference_median(self) -> float | None:
        return statistics.median(self.reference_seconds) if self.reference_seconds else None

    def summary(self) -> dict[str, Any]:
        ref = self.reference_median
        return {
            **asdict(self),
            "ours_median_s": self.ours_median,
            "reference_median_s": ref,
            "ours_over_reference": None if ref is None else self.ours_median / ref,
            "seconds_per_row": self.ours_median / self.nfe_rows,
            "achieved_tflops": self.flops / self.ours_median / 1e12,
            "ours_over_floor": self.ours_median / self.floor_seconds,
            "alternative_median_s": {k: statistics.median(v) for k, v in self.alternatives.items()},
            "alternative_over_ours": {k: statistics.median(v) / self.ours_median
                                      for k, v in self.alternatives.items()},
        }


def timed(fn: Callable[[], T], device: torch.device) -> tuple[float, T]:
    with DeviceTimer(device) as timing:
        out = fn()
    return timing.seconds, out


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int | None = None,
                repeats: int = 10) -> float:
    """Measured dense matmul throughput in FLOP/s (square ``size`` matrices)."""
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        seconds, _ = timed(lambda: torch.mm(a, b), device)
        best = min(best, seconds)
    return 2 * size**3 / best


ReferenceSampler = Callable[..., Tensor]


def reference_model(ours: EchoDiT) -> tuple[torch.nn.Module, ReferenceSampler]:
    """The reference EchoDiT sharing our weights (no copy) and its independent-CFG sampler."""
    from bench.perf.reference import load_reference

    ref = load_reference()
    with torch.device("meta"):
        model = ref.model.EchoDiT(**ours.config.to_dict())
    state = ours.state_dict()
    if not ours.has_blockwise:  # the reference always builds them; give it zeros
        for key, value in model.state_dict().items():
            state.setdefault(key, torch.zeros(value.shape, device=ours.device, dtype=ours.dtype))
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval(), ref.inference.sample_euler_cfg_independent_guidances


def profile_sampling(model: EchoDiT, cases: list[tuple[str, int, int]], steps: int, repeats: int,
                     rate: float, reference: tuple[torch.nn.Module, ReferenceSampler] | None,
                     forwards: list[DiTForward], speaker_latents: int = 0) -> list[CaseResult]:
    results = []
    for cfg_mode, batch, length in cases:
        sampler = SamplerConfig(num_steps=steps, cfg_mode=cfg_mode,  # type: ignore[arg-type]
                                sequence_length=length)
        result = profile_case(model, sampler, batch, repeats, rate,
                              reference if cfg_mode == "independent" else None, forwards,
                              speaker_latents)
        results.append(result)
        print(format_case(result), flush=True)
    return results


def profile_case(model: EchoDiT, sampler: SamplerConfig, batch: int, repeats: int, rate: float,
                 reference: tuple[torch.nn.Module, ReferenceSampler] | None,
                 forwards: list[DiTForward], speaker_latents: int = 0) -> CaseResult:
    """Time one case: ours (``forwards[0]``), its alternatives (the other forwards) and
    the reference, interleaved, with a random speaker reference of ``speaker_latents``
    latents (0: none)."""
    device = model.device
    ids, mask = encode_text([PROMPT] * batch)
    ids, mask = ids.to(device), mask.to(device)
    if speaker_latents:
        gen = torch.Generator().manual_seed(0)
        spk_latent = torch.randn(batch, speaker_latents, 80, generator=gen).to(device)
        spk_mask = torch.ones(batch, speaker_latents, dtype=torch.bool, device=device)
    else:  # what both samplers use without a speaker: one zero patch, masked out
        patch = model.config.speaker_patch_size
        spk_latent = torch.zeros(batch, patch, 80, device=device)
        spk_mask = torch.zeros(batch, patch, dtype=torch.bool, device=device)

    def ours(forward: DiTForward) -> Tensor:
        return sample_latents(model, text_ids=ids, text_mask=mask, speaker_latent=spk_latent,
                              speaker_mask=spk_mask, config=sampler, seed=0, forward=forward)

    def theirs() -> Tensor:
        assert reference is not None
        ref_model, ref_sampler = reference
        return ref_sampler(
            ref_model, spk_latent.to(model.dtype), spk_mask, ids, mask, 0,
            num_steps=sampler.num_steps,
            cfg_scale_text=sampler.cfg_scale_text, cfg_scale_speaker=sampler.cfg_scale_speaker,
            cfg_min_t=sampler.cfg_min_t, cfg_max_t=sampler.cfg_max_t, truncation_factor=None,
            rescale_k=None, rescale_sigma=None, speaker_kv_scale=None,
            speaker_kv_max_layers=None, speaker_kv_min_t=None,
            sequence_length=sampler.sequence_length)

    for forward in forwards:
        timed(partial(ours, forward), device)
    if reference is not None:
        timed(theirs, device)
    # Without a speaker both samplers still carry the one masked zero patch.
    speaker_tokens = max(1, speaker_latents // model.config.speaker_patch_size)
    flops = sampling_flops(model.config, sampler, ids.shape[1], speaker_tokens, batch).total
    result = CaseResult(sampler.cfg_mode, batch, sampler.sequence_length, sampler.num_steps,
                        sampler.nfe() * batch, [], flops=flops, floor_seconds=flops / rate)
    for _ in range(repeats):
        seconds, a = timed(partial(ours, forwards[0]), device)
        result.ours_seconds.append(seconds)
        for forward in forwards[1:]:
            seconds, alt = timed(partial(ours, forward), device)
            result.alternatives.setdefault(forward.label, []).append(seconds)
            result.alternative_rel_errors[forward.label] = float(
                (alt.float() - a.float()).norm() / a.float().norm())
        if reference is not None:
            seconds, b = timed(theirs, device)
            result.reference_seconds.append(seconds)
            result.rel_error = float((a.float() - b.float()).norm() / b.float().norm())
    return result


def profile_stages(model: EchoDiT, codec_source: str, codec_dtype: torch.dtype, steps: int,
                   length: int, forward: DiTForward) -> dict[str, float]:
    """Median stage seconds of the whole pipeline (3 runs after a warm-up)."""
    from echo_tts.autoencoder import load_codec
    from echo_tts.pipeline import EchoPipeline

    pca = codec_source if codec_source.startswith("random:") else None
    codec = load_codec(codec_source, pca, device=model.device, dtype=codec_dtype)
    pipe = EchoPipeline(model, codec)
    pipe.forward = forward
    sampler = SamplerConfig(num_steps=steps, sequence_length=length)
    pipe.synthesize(PROMPT, sampler=sampler)
    runs = [pipe.synthesize(PROMPT, sampler=sampler).timings for _ in range(3)]
    return {stage: statistics.median(r[stage] for r in runs) for stage in runs[0]}


def profile_asr(name: str, device: torch.device, clip_seconds: float, batch: int,
                tokens: int, repeats: int = 3) -> dict[str, Any]:
    """Median Whisper scoring seconds per clip of ``clip_seconds``, alone and in a batch.

    Random-weight Whisper never ends its transcript on its own, so it decodes exactly
    ``tokens`` tokens per clip (set it to a real transcript's length: ~100 for 30 s).
    """
    import numpy as np

    from bench.scoring.asr import WhisperASR
    from bench.scoring.run_scoring import make_asr

    asr = make_asr(name, str(device), batch_size=batch)
    if asr.is_random and isinstance(asr, WhisperASR):
        asr.options = replace(asr.options, sample_len=tokens)
    rng = np.random.default_rng(0)
    clips = [0.1 * rng.standard_normal(int(16_000 * clip_seconds)).astype(np.float32)
             for _ in range(batch)]
    asr.transcribe(clips)  # warm-up

    def median_seconds(items: list[Any]) -> float:
        runs = [timed(lambda: asr.transcribe(items), device)[0] for _ in range(repeats)]
        return statistics.median(runs)

    alone, batched = median_seconds(clips[:1]), median_seconds(clips)
    return {"model": asr.name, "device": str(device), "clip_seconds": clip_seconds,
            "decode_tokens": tokens if asr.is_random else None, "batch": batch,
            "seconds_per_clip_alone": alone, "seconds_per_clip_batched": batched / batch}


def format_case(r: CaseResult) -> str:
    s = r.summary()
    ref = "" if r.reference_median is None else (
        f"  ref {r.reference_median:8.3f} s  ours/ref {s['ours_over_reference']:.3f}  "
        f"rel.err {r.rel_error:.1e}")
    return (f"{r.cfg_mode:<12} B={r.batch} L={r.sequence_length:<4} rows={r.nfe_rows:<4} "
            f"ours {r.ours_median:8.3f} s  {s['seconds_per_row'] * 1e3:7.2f} ms/row  "
            f"{s['achieved_tflops']:7.2f} TFLOP/s  ours/floor {s['ours_over_floor']:.2f}{ref}"
            + "".join(f"\n{'':<14}{label}: {s['alternative_median_s'][label]:8.3f} s  "
                      f"{label}/ours {ratio:.3f}  rel.err {r.alternative_rel_errors[label]:.1e}"
                      for label, ratio in s["alternative_over_ours"].items()))


def run_profile(*, model_source: str, device: torch.device, dtype: torch.dtype, steps: int,
                cfg_modes: list[str], batches: list[int], lengths: list[int], repeats: int,
                with_reference: bool, compile: bool, cuda_graphs: bool,
                codec: str | None, codec_dtype: torch.dtype, out_dir: Path,
                default_allocator: bool = False, attention: tuple[str, ...] = ("sliced",),
                speaker_latents: int = 0, asr: str | None = None, asr_batch: int = 16,
                asr_tokens: int = 100) -> Path:
    """Run the profile, print it, write the JSON; returns its path.

    Unless ``default_allocator``, glibc's allocator thresholds are pinned first (see
    :func:`bench.run.measure.pin_allocator`): ours and the reference then run under the same,
    stable allocator instead of one whose page churn depends on allocation history.
    ``attention``: the first layout is ours; the others are timed alongside it.
    """
    pinned = False if default_allocator else pin_allocator()
    model = load_model(model_source, device=device, dtype=dtype, keep_blockwise=False)
    rate = matmul_rate(device, dtype)
    print(f"{model_source} on {device} ({dtype}): measured matmul rate {rate / 1e12:.1f} TFLOP/s; "
          f"allocator {'pinned' if pinned else 'default'}")
    forwards = [DiTForward(model, compile=compile, cuda_graphs=cuda_graphs,
                           attention=layout)  # type: ignore[arg-type]
                for layout in attention]
    forward = forwards[0]
    reference = reference_model(model) if with_reference else None
    cases = [(m, b, n) for m in cfg_modes for b in batches for n in lengths]
    results = profile_sampling(model, cases, steps, repeats, rate, reference, forwards,
                               speaker_latents)
    stages = None
    if codec is not None:
        stages = profile_stages(model, codec, codec_dtype, steps, max(lengths), forward)
        print("stages (s): " + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()))
    scoring = None
    if asr is not None:
        clip_seconds = max(lengths) * 2048 / 44_100
        scoring = profile_asr(asr, device, clip_seconds, asr_batch, asr_tokens)
        print(f"scoring ({scoring['model']}, {clip_seconds:.1f} s clips): "
              f"{scoring['seconds_per_clip_alone']:.3f} s/clip alone, "
              f"{scoring['seconds_per_clip_batched']:.3f} s/clip in batches of {asr_batch}")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    name = model_source.replace("random:", "random-").replace("/", "_")
    target = out_dir / f"{stamp}-{device.type}-{name}-{forward.label}.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({
        "model": model_source, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
        "speed_option": forward.label, "steps": steps, "matmul_tflops": rate / 1e12,
        "speaker_latents": speaker_latents,
        "allocator": "pinned" if pinned else "default",
        "cases": [r.summary() for r in results], "stages": stages, "scoring": scoring,
        "environment": capture_environment(),
    }, indent=2))
    return target
