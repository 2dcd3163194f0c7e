"""``echo-bench synth``: one utterance, its stage timings and realtime factor."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.core.devices import resolve_device, resolve_dtype
from bench.core.errors import UserError
from echo_tts.audio import write_wav
from echo_tts.pipeline import STAGES, EchoPipeline
from echo_tts.sampling import SamplerConfig


def run(args: argparse.Namespace) -> int:
    try:
        sampler = SamplerConfig(num_steps=args.steps, cfg_mode=args.cfg_mode,
                                sequence_length=args.sequence_length)
    except ValueError as err:
        raise UserError(str(err)) from err
    if args.speaker and not Path(args.speaker).is_file():
        raise UserError(f"speaker file {args.speaker} does not exist; pass an existing WAV/FLAC")
    if not args.text.strip():
        raise UserError("the text is empty; pass the words to speak")
    if args.batch_chunks < 1:
        raise UserError(f"--batch-chunks must be >= 1 (got {args.batch_chunks})")
    device = resolve_device(args.device)
    pipe = EchoPipeline.from_pretrained(args.model, args.codec, args.pca, device=device,
                                        dtype=resolve_dtype(args.dtype, device))
    if args.no_chunk:
        result = pipe.synthesize(args.text, args.speaker, sampler, args.seed)
    else:
        result = pipe.synthesize_long(args.text, args.speaker, sampler, args.seed,
                                      batch_size=args.batch_chunks)
    out = write_wav(Path(args.output), result.audio, result.sample_rate)
    total = result.timings["total"]
    print(f"wrote {out} ({result.audio_seconds:.2f} s of speech, {max(1, len(result.chunks))} chunk(s), "
          f"{result.nfe} forward rows)")
    for stage in STAGES:
        print(f"  {stage:<15} {result.timings[stage]:8.3f} s")
    rtf = total / result.audio_seconds if result.audio_seconds > 0 else float("inf")
    print(f"  RTF {rtf:.3f} on cropped speech ({1 / rtf if rtf else 0:.2f}x realtime); "
          f"RTF {total / result.full_seconds:.3f} on the full {result.full_seconds:.1f} s sequence")
    return 0
