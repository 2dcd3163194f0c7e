"""Scoring throughput: audio seconds transcribed per wall-clock second, batched vs sequential.

Run:
    python tests/benchmarks/bench_asr.py                      # random-weight tiny, CPU
    python tests/benchmarks/bench_asr.py --model large-v3 --n 64 --batch-size 16

With random weights the decoder never emits end-of-text, so every utterance runs the
full 224-token budget: a worst case for decoding, where real weights stop after a
sentence. Compute per token does not depend on weight values, so the batched/sequential
ratio is still the figure to read.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from bench.scoring import WhisperASR


def _utterances(n: int, seconds: float) -> list[np.ndarray]:
    """n noisy chirps at 16 kHz, float32 [seconds * 16000] each."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16_000)) / 16_000
    return [
        (
            0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t * (1 + t))
            + 0.02 * rng.standard_normal(t.size)
        ).astype(np.float32)
        for i in range(n)
    ]


def _throughput(asr: WhisperASR, audios: list[np.ndarray], repeats: int) -> list[float]:
    """Audio seconds per wall second of each repeat."""
    audio_s = sum(a.size for a in audios) / 16_000
    rates = []
    for _ in range(repeats):
        if asr.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        asr.transcribe(audios)
        if asr.device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(audio_s / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:tiny")
    parser.add_argument("--download-root", default=None, help="default: a temporary folder")
    parser.add_argument("--n", type=int, default=4, help="utterances per measurement")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each utterance")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    root = args.download_root or tempfile.mkdtemp(prefix="whisper-")
    audios = _utterances(args.n, args.seconds)
    batched = WhisperASR(args.model, download_root=root, batch_size=args.batch_size)
    # Same weights, one utterance per decode.
    sequential = WhisperASR(args.model, download_root=root, batched=False)
    batched.transcribe(audios[:1])  # warm-up: allocator, kernels, tokenizer
    sequential.transcribe(audios[:1])

    print(
        f"{batched.name} on {batched.device} ({torch.get_num_threads()} threads), "
        f"{args.n} x {args.seconds:g} s, batch {args.batch_size}, torch {torch.__version__}"
    )
    results = {}
    for label, asr in (("batched", batched), ("sequential", sequential)):
        rates = _throughput(asr, audios, args.repeats)
        results[label] = float(np.median(rates))
        raw = ", ".join(f"{r:.2f}" for r in rates)
        print(f"  {label:<10} {results[label]:8.2f} audio s / wall s (median; raw {raw})")
    print(f"  speed-up   {results['batched'] / results['sequential']:8.2f}x")


if __name__ == "__main__":
    main()
