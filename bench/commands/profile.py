"""``echo-bench profile``: ours vs the reference vs the FLOP floor, written to results/perf/."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.core.devices import DTYPES, resolve_device, resolve_dtype
from bench.core.errors import UserError
from echo_tts.acceleration import ATTENTION_LAYOUTS
from echo_tts.sampling import CFG_MODES


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("profile", help="time our sampler against the reference and the "
                       "hardware floor (writes results/perf/*.json)")
    p.add_argument("--model", default="random:echo-tts-base",
                   help="weights (random weights are fine for speed; default random:echo-tts-base)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None, help="default bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--cfg-mode", nargs="+", default=["independent"], choices=CFG_MODES)
    p.add_argument("--batch", nargs="+", type=int, default=[1])
    p.add_argument("--length", nargs="+", type=int, default=[640])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-reference", action="store_true",
                   help="skip the reference (it is fetched with pip on first use)")
    p.add_argument("--compile", action="store_true", help="torch.compile the step")
    p.add_argument("--cuda-graphs", action="store_true", help="CUDA graphs of the step (CUDA)")
    p.add_argument("--attention", nargs="+", default=["sliced"], choices=ATTENTION_LAYOUTS,
                   help="attention layout of ours; further layouts are timed alongside it "
                        "(e.g. --attention sliced masked)")
    p.add_argument("--speaker-latents", type=int, default=0,
                   help="random speaker reference of this many latents, a multiple of 4 "
                        "(default 0: none)")
    p.add_argument("--codec", default=None,
                   help="also time the whole pipeline with this codec (e.g. random:s1-dac)")
    p.add_argument("--codec-dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--asr", default=None,
                   help="also time Whisper scoring of clips of the longest --length "
                        "(e.g. random:large-v3)")
    p.add_argument("--asr-batch", type=int, default=16, help="clips per batched decode")
    p.add_argument("--asr-tokens", type=int, default=100,
                   help="tokens a random-weight Whisper decodes per clip (default 100, about "
                        "a 30 s transcript)")
    p.add_argument("--default-allocator", action="store_true",
                   help="leave glibc's allocator thresholds alone (default: pinned for stable "
                        "CPU timings)")
    p.add_argument("--out", type=Path, default=Path("results/perf"))
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bench.perf.profile import run_profile
    from bench.perf.reference import ReferenceUnavailable

    device = resolve_device(args.device)
    if any(b < 1 for b in args.batch) or any(not 1 <= n <= 640 for n in args.length):
        raise UserError("--batch must be >= 1 and --length in [1, 640]")
    if args.speaker_latents < 0 or args.speaker_latents % 4:
        raise UserError(f"--speaker-latents must be a non-negative multiple of 4 "
                        f"(got {args.speaker_latents})")
    if args.asr_batch < 1 or args.asr_tokens < 1:
        raise UserError("--asr-batch and --asr-tokens must be >= 1")
    if len(set(args.attention)) != len(args.attention):
        raise UserError("--attention lists a layout twice; name each once")
    try:
        path = run_profile(
            model_source=args.model, device=device, dtype=resolve_dtype(args.dtype, device),
            steps=args.steps, cfg_modes=args.cfg_mode, batches=args.batch, lengths=args.length,
            repeats=args.repeats, with_reference=not args.no_reference, compile=args.compile,
            cuda_graphs=args.cuda_graphs, codec=args.codec, codec_dtype=DTYPES[args.codec_dtype],
            out_dir=args.out, default_allocator=args.default_allocator,
            attention=tuple(args.attention), speaker_latents=args.speaker_latents,
            asr=args.asr, asr_batch=args.asr_batch, asr_tokens=args.asr_tokens)
    except ReferenceUnavailable as err:
        raise UserError(f"{err}; pass --no-reference to profile ours alone") from err
    except ValueError as err:
        raise UserError(str(err)) from err
    print(f"wrote {path}")
    return 0
