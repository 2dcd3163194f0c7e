"""Constructed nightly runs in the store's real format, with planted changes.

The shape is the shipped nightly's (``bench/sweeps/nightly.toml``: its GPUs, steps, CFG
modes and exclusions, prompt ids and seeds: 20 cells, 960 generations a night), read from
the spec file so the two cannot drift apart. Each night is written with the store's own
code (:class:`bench.store.run_store.RunStore`: create, append, finalize), scores inline.

The truth behind the figures:

* prompts: the nightly's own built-in prompts, with their reference words and the chunks
  ``long_text = "chunk"`` cuts them into (:func:`echo_tts.text.split_text`);
* speed: Echo-TTS samples a fixed-length sequence per chunk (640 latents, about 30 s of
  audio) whatever the text, so a generation's compute seconds are chunks x the GPU's
  seconds per chunk x steps/40 x the CFG mode's cost x timing noise (log-normal, 3 %)
  that is new every night, and its RTF is those seconds over the speech (about 0.4 s a
  word, after cropping): short prompts pay the whole sequence for little speech;
* quality: the same commit with the same seeds makes the same audio, so each
  generation's word errors, SIM and MOS are drawn once and kept night after night,
  except for a small share re-drawn each night (GPU non-determinism) and a tiny jitter
  on SIM/MOS;
* plants (:class:`Plant`): from a given night on, one cell is slower by a factor or
  makes more word errors by a number of WER points (extra errors per reference word).

``python -m bench.scripts.nightly_runs OUT --nights 30`` writes 30 nights under OUT
(with the default plants: a 15 % slowdown and +4 WER points, on different cells);
``--pair slower --seed 100`` writes two nights of a :data:`PAIRS` case instead (for
``echo-bench nightly-replay``).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.spec.prompt_files import load_builtin
from bench.spec.sweep import cell_id
from bench.store.layout import record_key
from bench.store.run_store import RunStore
from echo_tts.text import chunk_bytes_for, split_text

NIGHTLY_SPEC = Path(__file__).resolve().parents[1] / "sweeps" / "nightly.toml"

#: RTF of a whole chunk (its full ~30 s sequence) at 40 steps, independent CFG, per GPU
#: (A10G from the research's baseline: two 30 s chunks in about 12 s).
GPU_BASE = {"A10G": 0.20, "L4": 0.26, "L40S": 0.11, "A100-80GB": 0.09, "H100": 0.06}
#: Seconds of audio one chunk's sequence holds (640 latents of 2048 samples at 44.1 kHz).
CHUNK_AUDIO_SECONDS = 640 * 2048 / 44_100
#: Seconds of speech per reference word (about 150 words a minute).
SECONDS_PER_WORD = 0.4
CFG_COST = {"independent": 1.0, "alternating": 0.72, "joint": 0.72, "none": 0.4}
PEAK_GB = {"A10G": 14.0, "L4": 14.5, "L40S": 15.0, "A100-80GB": 15.5, "H100": 15.5}
REDRAWN = 0.04  # share of generations whose audio differs night to night at one commit


@dataclass(frozen=True)
class Plant:
    """From ``night`` on, the cell (``gpu``, ``steps``, ``cfg``) is ``slower`` times
    slower and makes ``wer_points`` more word errors per 100 reference words."""

    night: int
    gpu: str
    steps: int
    cfg: str
    slower: float = 1.0
    wer_points: float = 0.0


def default_plants(nights: int) -> tuple[Plant, ...]:
    """A 15 % slowdown two thirds of the way in and +4 WER points five sixths of the way
    in, on two different cells of the first GPU pair. History's WER interval over a
    night's 48 twins is 1 to 2.3 points either side here, so a plant must lie that far
    beyond the 1-point step (:class:`bench.analysis.steps.StepSizes`) to be flagged:
    +4 points was in 40 of 40 constructed seeds, +3 in 38, +2 in 5."""
    return (Plant(max(1, 2 * nights // 3), "L4", 40, "independent", slower=1.15),
            Plant(max(1, 5 * nights // 6), "A10G", 30, "independent", wer_points=4.0))


@dataclass(frozen=True)
class Shape:
    """What a night runs: cells as (gpu, steps, cfg, length), prompt ids, seeds."""

    cells: tuple[tuple[str, int, str, int], ...]
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]


def nightly_shape(spec_path: Path = NIGHTLY_SPEC, gpus: Sequence[str] | None = None,
                  n_prompts: int | None = None) -> Shape:
    """The grid of the nightly spec (optionally fewer GPUs or prompts, for tests)."""
    raw = tomllib.loads(spec_path.read_text(encoding="utf-8"))
    grid = raw["grid"]
    excluded = [dict(e) for e in raw.get("exclude", [])]
    cells = []
    for gpu, steps, cfg, length in itertools.product(
            grid["gpu"], grid["num_steps"], grid["cfg_mode"], grid["sequence_length"]):
        values = {"gpu": gpu, "num_steps": steps, "cfg_mode": cfg, "sequence_length": length}
        if any(all(values[k] == v for k, v in e.items()) for e in excluded):
            continue
        if gpus is None or gpu in gpus:
            cells.append((gpu, steps, cfg, length))
    prompts = tuple(raw["prompts"]["ids"])[:n_prompts]
    return Shape(tuple(cells), prompts, tuple(raw["measure"]["seeds"]))


class NightlyTruth:
    """The per-prompt and per-generation truths every night shares (seeded once)."""

    def __init__(self, shape: Shape, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        n = len(shape.prompts)
        self.shape = shape
        self.seed = seed
        texts = {p.id: p.text for p in load_builtin()}
        self.words = np.array([len(texts[p].split()) for p in shape.prompts])
        self.chunks = np.array([len(split_text(texts[p], chunk_bytes_for(640)))
                                for p in shape.prompts])
        self.speech = self.words * SECONDS_PER_WORD
        self.difficulty = rng.lognormal(0.0, 0.4, n)
        shape_gens = (len(shape.cells), n, len(shape.seeds))
        most = int(self.words.max())
        self.base_u = rng.random((*shape_gens, most))  # per-word uniforms: kept errors
        self.extra_u = rng.random((*shape_gens, most))  # and those of planted errors
        self.sim = rng.normal(0.0, 0.03, shape_gens)
        self.mos = rng.normal(0.0, 0.15, shape_gens)


def night_records(truth: NightlyTruth, night: int, plants: Sequence[Plant] = (), *,
                  random_weights: bool = False) -> list[dict[str, Any]]:
    """Scored records of one night (one repeat per prompt and seed)."""
    shape = truth.shape
    rng = np.random.default_rng([truth.seed, night])
    out = []
    for c, (gpu, steps, cfg, length) in enumerate(shape.cells):
        values = {"gpu": gpu, "num_steps": steps, "cfg_mode": cfg, "sequence_length": length}
        cid = cell_id(values)
        active = [p for p in plants if p.night <= night
                  and (p.gpu, p.steps, p.cfg) == (gpu, steps, cfg)]
        slower = math.prod(p.slower for p in active)
        extra = sum(p.wer_points for p in active) / 100
        p_err = min(0.9, 0.02 * (1.0 + 2.0 * max(0, 40 - steps) / 40) * CFG_COST[cfg] ** -0.5)
        chunk_seconds = (GPU_BASE.get(gpu, 0.2) * CHUNK_AUDIO_SECONDS * steps / 40
                         * CFG_COST[cfg] * slower)
        for k, prompt in enumerate(shape.prompts):
            words = int(truth.words[k])
            for s, seed in enumerate(shape.seeds):
                u = truth.base_u[c, k, s, :words]
                if rng.random() < REDRAWN:
                    u = rng.random(words)
                errors = int((u < min(0.95, p_err * truth.difficulty[k])).sum())
                # extra errors of a plant: the same words every night (same audio)
                errors += int((truth.extra_u[c, k, s, :words] < extra).sum())
                chunks = int(truth.chunks[k])
                seconds = chunks * chunk_seconds * math.exp(rng.normal(0.0, 0.03))
                audio, full = float(truth.speech[k]), chunks * CHUNK_AUDIO_SECONDS
                out.append({
                    "key": record_key(cid, prompt, seed, 0), "cell_id": cid,
                    "prompt_id": prompt, "seed": seed, "repeat": 0, "status": "ok",
                    "cell_label": f"steps={steps} cfg={cfg} len={length} gpu={gpu}",
                    **values, "device_name": f"NVIDIA {gpu}", "nfe": steps, "n_chunks": chunks,
                    "t_sampling": seconds * 0.9, "t_total": seconds, "audio_seconds": audio,
                    "full_seconds": full, "rtf": seconds / audio, "rtf_full": seconds / full,
                    "audio_nan": False, "audio_silent": False, "random_weights": random_weights,
                    "peak_allocated_bytes": PEAK_GB.get(gpu, 15.0) * 1e9 * CFG_COST[cfg] ** 0.05,
                    "text": "word " * words, "ref_words": words, "hits": max(0, words - errors),
                    "substitutions": min(errors, words), "deletions": 0,
                    "insertions": max(0, errors - words), "wer": errors / words,
                    "cer": errors / words, "ref_chars": 5 * words, "char_errors": errors,
                    "reference_norm": "word " * words, "transcript_norm": "word " * words,
                    "empty_hyp": False, "asr_model": "constructed",
                    "quality_meaningful": not random_weights,
                    "sim": 0.62 + float(truth.sim[c, k, s]) + rng.normal(0.0, 0.002),
                    "utmos": 3.9 + float(truth.mos[c, k, s]) + rng.normal(0.0, 0.01),
                    "dnsmos_ovrl": 3.2 + float(truth.mos[c, k, s]) / 2 + rng.normal(0.0, 0.01),
                })
    return out


def write_night(root: Path, truth: NightlyTruth, night: int, plants: Sequence[Plant] = (), *,
                spec_name: str = "nightly", start: datetime | None = None,
                random_weights: bool = False, adaptive: bool = False) -> Path:
    """One finished night under ``root`` (run id ``<date>-<spec>-n<night>``)."""
    when = (start or datetime(2026, 1, 1, 3, tzinfo=UTC)) + timedelta(days=night)
    commit = hashlib.sha1(f"night {night}".encode()).hexdigest()
    spec = {"name": spec_name, "adaptive": {"stages": 3} if adaptive else None}
    store = RunStore.create(root, run_id=f"{when:%Y%m%d-%H%M%S}-{spec_name}-n{night:03d}",
                            spec=spec, spec_name=spec_name, spec_hash=f"{spec_name}-hash",
                            environment={"git_commit": commit})
    with store:
        for record in night_records(truth, night, plants, random_weights=random_weights):
            store.append(record)
        store.update_manifest(started_at=when.isoformat(timespec="seconds"))
        store.finalize("complete")
    return store.path


def write_nights(root: Path, nights: range, *, shape: Shape | None = None, seed: int = 0,
                 plants: Sequence[Plant] | None = None, threads: int = 1) -> list[Path]:
    """Nights ``nights`` of one constructed history (the same truth for every night).

    ``threads`` > 1 writes several nights at once: the store fsyncs every record, and
    a year of nights is 350,000 of them (the index's flock keeps its appends whole)."""
    truth = NightlyTruth(shape or nightly_shape(), seed)
    chosen = default_plants(nights.stop) if plants is None else plants
    if threads <= 1:
        return [write_night(root, truth, n, chosen) for n in nights]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda n: write_night(root, truth, n, chosen), nights))


#: The two planted cells of :data:`PAIRS` (the nightly's L4 production config slower, its
#: A100 30-step neighbour worse).
SLOW_PLANT = Plant(1, "L4", 40, "independent", slower=1.15)
WER_PLANT = Plant(1, "A100-80GB", 30, "independent", wer_points=2.0)
#: Pairs of nights (last night, tonight) with a known truth, for the history-aware
#: nightly: nothing changed, one cell 15 % slower, one cell +2 WER points.
PAIRS: dict[str, tuple[Plant, ...]] = {"same": (), "slower": (SLOW_PLANT,),
                                       "wer": (WER_PLANT,)}


def plant_cell(plant: Plant, length: int = 640) -> str:
    """The id of the cell a plant hits."""
    return cell_id({"gpu": plant.gpu, "num_steps": plant.steps, "cfg_mode": plant.cfg,
                    "sequence_length": length})


def night_pair(seed: int, case: str, shape: Shape | None = None
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Last night's and tonight's records of one :data:`PAIRS` case (nights 0 and 1)."""
    truth = NightlyTruth(shape or nightly_shape(), seed)
    return night_records(truth, 0, PAIRS[case]), night_records(truth, 1, PAIRS[case])


def write_pair(root: Path, seed: int, case: str, shape: Shape | None = None
               ) -> tuple[Path, Path]:
    """Both nights of a :data:`PAIRS` case as runs under ``root`` (one spec)."""
    truth = NightlyTruth(shape or nightly_shape(), seed)
    last, tonight = (write_night(root, truth, night, PAIRS[case]) for night in (0, 1))
    return last, tonight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--pair", choices=tuple(PAIRS),
                        help="write two nights (last, tonight) of this case instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=8, help="nights written at once")
    args = parser.parse_args()
    paths = (write_pair(args.out, args.seed, args.pair) if args.pair else
             write_nights(args.out, range(args.nights), seed=args.seed, threads=args.threads))
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
