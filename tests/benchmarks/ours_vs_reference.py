"""Time one full ``sample_latents`` of ours against the reference, same weights and inputs.

    python -m tests.benchmarks.ours_vs_reference --preset small --steps 40 --length 640

Runs interleaved (ours, reference, ours, ...) after a warm-up, prints medians, the
ratio and the relative error between the outputs. The reference runs its own
``sample_euler_cfg_independent_guidances``; ours runs with cfg_mode="independent".
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from echo_tts import ModelConfig, SamplerConfig, encode_text, load_model, sample_latents
from bench.reference import load_reference

PROMPT = "The quick brown fox jumps over the lazy dog, twice, before breakfast."


def timed(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[float, torch.Tensor]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--length", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    config = ModelConfig.preset(args.preset)
    ref = load_reference()

    ours = load_model(f"random:{args.preset}", device=args.device, dtype=dtype)
    with torch.device("meta"):
        theirs = ref.model.EchoDiT(**config.to_dict())
    theirs.load_state_dict(ours.state_dict(), strict=True, assign=True)
    theirs.eval()
    device = ours.device

    ids, mask = encode_text([PROMPT])
    ids, mask = ids.to(device), mask.to(device)
    no_spk = torch.zeros(1, 4, 80, device=device)
    no_spk_mask = torch.zeros(1, 4, dtype=torch.bool, device=device)
    sampler = SamplerConfig(num_steps=args.steps, sequence_length=args.length)
    ref_kwargs = dict(
        num_steps=args.steps, cfg_scale_text=sampler.cfg_scale_text,
        cfg_scale_speaker=sampler.cfg_scale_speaker, cfg_min_t=sampler.cfg_min_t,
        cfg_max_t=sampler.cfg_max_t, truncation_factor=None, rescale_k=None,
        rescale_sigma=None, speaker_kv_scale=None, speaker_kv_max_layers=None,
        speaker_kv_min_t=None, sequence_length=args.length,
    )

    def run_ours() -> torch.Tensor:
        return sample_latents(ours, text_ids=ids, text_mask=mask, config=sampler, seed=0)

    def run_ref() -> torch.Tensor:
        return ref.inference.sample_euler_cfg_independent_guidances(
            theirs, no_spk, no_spk_mask, ids, mask, 0, **ref_kwargs)

    timed(run_ours, device)
    timed(run_ref, device)
    ours_s, ref_s = [], []
    for _ in range(args.repeats):
        t, a = timed(run_ours, device)
        ours_s.append(t)
        t, b = timed(run_ref, device)
        ref_s.append(t)
    rel = float((a - b).norm() / b.norm())
    mo, mr = statistics.median(ours_s), statistics.median(ref_s)
    print(f"preset={args.preset} steps={args.steps} length={args.length} device={device} "
          f"dtype={args.dtype} threads={torch.get_num_threads()} nfe={sampler.nfe()}")
    print(f"ours      median {mo:.3f} s  runs {[round(x, 3) for x in ours_s]}")
    print(f"reference median {mr:.3f} s  runs {[round(x, 3) for x in ref_s]}")
    print(f"ratio ours/reference {mo / mr:.3f}  (speed-up {mr / mo:.2f}x)  rel. error {rel:.2e}")


if __name__ == "__main__":
    main()
