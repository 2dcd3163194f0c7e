"""Constructed pairs of nightly runs with a known truth, for the history-aware nightly and
its replay: the nightly's shape (5 GPU types x 4 cells, 24 prompts, 2 seeds), last night
and tonight on the same prompts and seeds.

An unchanged sampler makes the same audio from the same seed, so tonight's word errors are
last night's except for a ``flips`` share of generations off by one (default one in
20) (kernels are not
bit-exact across nights); timings carry fresh ~3 % noise. A planted change makes one cell
``slowdown`` times slower or adds ``wer_plus`` word-error probability to it.

``python -m tests.nightly_runs OUT --case slower --seed 100`` writes the two runs into
OUT and prints their paths (cases: same, slower, wer).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.adaptive_runs import write_run

GPUS = {"A10G": 1.0, "L4": 1.3, "L40S": 0.55, "A100-80GB": 0.4, "H100": 0.28}
CELLS = (("s30-ind", 30, "independent", 3), ("s40-ind", 40, "independent", 3),
         ("s50-ind", 50, "independent", 3), ("s40-alt", 40, "alternating", 2))
#: Words of the nightly's 24 built-in prompts (bench/sweeps/nightly.toml), in its order.
NIGHTLY_WORDS = np.array([2, 5, 18, 21, 20, 72, 69, 73, 12, 9, 19, 9, 10, 6, 15, 11, 11, 12,
                          16, 10, 18, 149, 146, 157])
#: The cells the planted changes hit.
SLOW_CELL = "L4-s40-alt"
WER_CELL = "A100-80GB-s30-ind"


@dataclass(frozen=True)
class Change:
    """What changed tonight: ``cell`` ``slowdown`` times slower and ``wer_plus`` more
    word-error probability (none when ``cell`` is empty)."""

    cell: str = ""
    slowdown: float = 1.0
    wer_plus: float = 0.0


CASES = {"same": Change(), "slower": Change(SLOW_CELL, slowdown=1.15),
         "wer": Change(WER_CELL, wer_plus=0.02)}


def nightly_pair(seed: int, change: Change, *, prompts: int = 24, seeds: int = 2,
                 noise: float = 0.03, flips: float = 0.05
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Last night's and tonight's records (one repeat each)."""
    rng = np.random.default_rng(seed)
    ids = [f"en-{k:03d}" for k in range(prompts)]
    words = np.resize(NIGHTLY_WORDS, prompts)
    speech = 0.4 * words + 0.5
    factor = rng.lognormal(0.0, 0.2, prompts)
    difficulty = rng.lognormal(0.0, 1.0, prompts)
    last, tonight = [], []
    for gpu, speed in GPUS.items():
        for name, steps, cfg, rows in CELLS:
            cell = f"{gpu}-{name}"
            p_err = min(0.9, 0.02 * (1 + max(0, 40 - steps) / 40))
            for k, prompt in enumerate(ids):
                p = min(0.9, p_err * difficulty[k])
                for s in range(seeds):
                    cost = 0.004 * steps * rows * speed * factor[k]
                    before = int(rng.binomial(words[k], p))
                    after = before + int(rng.random() < flips) * int(rng.choice([-1, 1]))
                    slow, plus = ((change.slowdown, change.wer_plus) if cell == change.cell
                                  else (1.0, 0.0))
                    after = max(0, after) + int(rng.binomial(words[k], plus))
                    for night, errors, rtf in (
                            (last, before, cost * math.exp(rng.normal(0, noise))),
                            (tonight, min(after, words[k]),
                             cost * slow * math.exp(rng.normal(0, noise)))):
                        night.append(_record(cell, gpu, steps, cfg, prompt, s, rtf,
                                             float(speech[k]), int(words[k]), errors))
    return last, tonight


def _record(cell: str, gpu: str, steps: int, cfg: str, prompt: str, seed: int, rtf: float,
            audio: float, words: int, errors: int) -> dict[str, Any]:
    return {
        "key": f"{cell}/{prompt}/{seed}/0", "cell_id": cell, "prompt_id": prompt,
        "seed": seed, "repeat": 0, "status": "ok",
        "cell_label": f"gpu={gpu} steps={steps} cfg={cfg} len=640", "gpu": gpu,
        "device_name": f"NVIDIA {gpu}", "num_steps": steps, "cfg_mode": cfg,
        "sequence_length": 640, "nfe": steps, "n_chunks": 1, "t_sampling": rtf * audio * 0.9,
        "t_total": rtf * audio, "audio_seconds": audio, "full_seconds": audio, "rtf": rtf,
        "rtf_full": rtf, "audio_nan": False, "audio_silent": False, "random_weights": False,
        "text": "x " * words, "ref_words": words, "hits": words - errors,
        "substitutions": errors, "deletions": 0, "insertions": 0, "wer": errors / words,
        "cer": errors / words, "ref_chars": words, "char_errors": errors,
        "reference_norm": "x" * words, "transcript_norm": "x" * words, "empty_hyp": False,
        "asr_model": "constructed", "quality_meaningful": True,
    }


def write_pair(root: Path, seed: int, change: Change, prompts: int = 24
               ) -> tuple[Path, Path]:
    """Both nights as run directories under ``root`` (same spec name and hash)."""
    last, tonight = nightly_pair(seed, change, prompts=prompts)
    return (write_run(root / "last", "nightly-constructed", last),
            write_run(root / "tonight", "nightly-constructed", tonight))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--case", choices=tuple(CASES), default="same")
    parser.add_argument("--seed", type=int, default=100)
    args = parser.parse_args()
    for path in write_pair(args.out, args.seed, CASES[args.case]):
        print(path)


if __name__ == "__main__":
    main()
