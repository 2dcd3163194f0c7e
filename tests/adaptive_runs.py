"""Constructed runs with a known right answer, for the adaptive policy and its replay.

Each cell has a true speed (compute seconds per second of speech, times a per-prompt
factor every cell shares and a little noise) and a true word-error probability, also
times a per-prompt difficulty. A "lucky" cell is perfect on most prompts and fails badly
on a few, so a small first batch often shows it as the best cell when it is not.

``python -m tests.adaptive_runs OUT`` writes the larger constructed run used for the
replay figures into the folder OUT (a run directory under it; its path is printed).
``--grid edge`` (the default) puts the alternating-CFG cells 0.45 WER points over the
baseline, at the edge of the headline's 0.5-point budget, so the full run's own choice
rests on which prompts ran; ``--grid clear`` makes them as accurate as independent CFG
(and joint CFG twice as error-prone), a grid whose headline the prompts decide.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.store.run_store import RunStore


@dataclass(frozen=True)
class TrueCell:
    """A cell's truth: speed ``cost`` (RTF before the prompt factor), word-error
    probability ``p_err``; a ``lucky`` cell makes errors only on ``bad_share`` of prompts
    (at ``bad_p_err``) and none elsewhere."""

    id: str
    steps: int
    cfg: str
    cost: float
    p_err: float
    length: int = 640
    lucky: bool = False
    bad_share: float = 0.0
    bad_p_err: float = 0.0


def constructed_records(cells: list[TrueCell], *, n_prompts: int, seeds: tuple[int, ...] = (0,),
                        seed: int = 0, meaningful: bool = True, gpu: str = "A10G",
                        speed_noise: float = 0.03, words: int = 20) -> list[dict[str, Any]]:
    """Scored records of every cell on every prompt and seed (one repeat)."""
    rng = np.random.default_rng(seed)
    prompts = [f"p{k:03d}" for k in range(n_prompts)]
    speech = rng.uniform(3.0, 12.0, n_prompts)  # seconds of speech per prompt
    factor = rng.lognormal(0.0, 0.15, n_prompts)  # per-prompt speed factor (shared)
    difficulty = rng.lognormal(0.0, 0.5, n_prompts)  # per-prompt error factor (shared)
    bad = {c.id: rng.random(n_prompts) < c.bad_share for c in cells if c.lucky}
    out = []
    for cell in cells:
        for k, prompt in enumerate(prompts):
            for s in seeds:
                rtf = cell.cost * factor[k] * math.exp(rng.normal(0.0, speed_noise))
                if cell.lucky:
                    p = cell.bad_p_err if bad[cell.id][k] else 0.0
                else:
                    p = min(0.95, cell.p_err * difficulty[k])
                errors = int(rng.binomial(words, p))
                audio = float(speech[k])
                out.append({
                    "key": f"{cell.id}/{prompt}/{s}/0", "cell_id": cell.id, "prompt_id": prompt,
                    "seed": s, "repeat": 0, "status": "ok",
                    "cell_label": f"steps={cell.steps} cfg={cell.cfg} len={cell.length}",
                    "gpu": gpu, "device_name": f"NVIDIA {gpu}", "num_steps": cell.steps,
                    "cfg_mode": cell.cfg, "sequence_length": cell.length, "nfe": cell.steps,
                    "n_chunks": 1, "t_sampling": rtf * audio * 0.9, "t_total": rtf * audio,
                    "audio_seconds": audio, "full_seconds": audio, "rtf": rtf, "rtf_full": rtf,
                    "audio_nan": False, "audio_silent": False, "random_weights": not meaningful,
                    "text": "x " * words, "ref_words": words, "hits": words - errors,
                    "substitutions": errors, "deletions": 0, "insertions": 0,
                    "wer": errors / words, "cer": errors / words, "ref_chars": words,
                    "char_errors": errors, "reference_norm": "x" * words,
                    "transcript_norm": "x" * words, "empty_hyp": False,
                    "asr_model": "constructed", "quality_meaningful": meaningful,
                })
    return out


def write_run(root: Path, name: str, records: list[dict[str, Any]]) -> Path:
    """A run directory holding ``records`` (with their scores inline)."""
    store = RunStore.create(root, spec={"name": name, "raw": {}}, spec_name=name,
                            spec_hash=name, environment={}, lock=False)
    with store:
        for record in records:
            store.append(record)
        store.finalize("complete")
    return store.path


#: Word-error probability per CFG mode at 30 steps and more, per grid (see the docstring).
GRID_ERRORS = {
    "edge": {"independent": 0.030, "alternating": 0.034, "joint": 0.045},
    "clear": {"independent": 0.030, "alternating": 0.030, "joint": 0.060},
}


def larger_grid(grid: str = "edge") -> list[TrueCell]:
    """30 cells on one GPU: steps x CFG mode x length, the production baseline among
    them, one lucky fast cell. Error rates rise as steps fall and CFG gets cheaper."""
    cells = []
    cfg_cost = {"independent": 3.0, "alternating": 2.0, "joint": 2.0}
    cfg_err = GRID_ERRORS[grid]
    for steps in (16, 20, 24, 30, 40):
        for cfg, rows in cfg_cost.items():
            for length in (480, 640):
                err = cfg_err[cfg] * (1.0 + 3.0 * max(0, 30 - steps) / 30.0)
                cost = 0.004 * steps * rows * (1.0 if length == 640 else 0.82)
                cells.append(TrueCell(f"s{steps}-{cfg[:3]}-{length}", steps, cfg, cost, err,
                                      length=length))
    cells.append(TrueCell("lucky", 12, "joint", 0.004 * 12 * 2.0, 0.0, lucky=True,
                          bad_share=0.2, bad_p_err=0.6))
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", choices=tuple(GRID_ERRORS), default="edge")
    parser.add_argument("--words", type=int, default=20, help="words per prompt")
    args = parser.parse_args()
    records = constructed_records(larger_grid(args.grid), n_prompts=args.prompts,
                                  seeds=(0, 1), seed=args.seed, words=args.words)
    print(write_run(args.out, f"constructed-{args.grid}", records))


if __name__ == "__main__":
    main()
