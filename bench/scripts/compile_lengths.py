"""Seconds per sampler call of a compiled forward as prompts of new lengths arrive.

A sweep feeds each compiled cell prompts of many byte lengths; this shows what each new
length costs (compilation included) and how many graphs dynamo has built so far.

    python bench/scripts/compile_lengths.py [--model random:tiny] [--steps 4] [--length 32]
"""

from __future__ import annotations

import argparse

from torch._dynamo.utils import counters

from bench.run.measure import DeviceTimer
from echo_tts import SamplerConfig, encode_text, load_model, sample_latents
from echo_tts.acceleration import DiTForward

PROMPTS = ("Hi.", "Hello there.", "Hello there, friend.", "Hello there, friend.",
           "Hello there, my good friend.", "Hello there, my good friend.", "Hi.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:tiny")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--length", type=int, default=32)
    args = parser.parse_args()
    model = load_model(args.model)
    config = SamplerConfig(num_steps=args.steps, sequence_length=args.length)
    forward = DiTForward(model, compile=True)
    for text in PROMPTS:
        ids, mask = encode_text([text])
        with DeviceTimer(model.device) as timing:
            sample_latents(model, text_ids=ids, text_mask=mask, config=config, forward=forward)
        print(f"{len(text.encode()):4d} bytes: {timing.seconds:7.3f} s, "
              f"graphs so far: {counters['stats']['unique_graphs']}", flush=True)


if __name__ == "__main__":
    main()
