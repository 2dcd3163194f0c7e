"""The workload axes of a sweep: how a cell's requests are shaped, beyond sampler settings.

* ``concurrency``: N requests in flight at once on one worker (one loaded model, one
  device), as a Modal container with N concurrent inputs runs them: N threads.
* ``chunk_workers``: the chunks of one long text spread over N workers.
* ``speaker_seconds``: the speaker reference trimmed (or repeated) to N seconds; the
  reference's length is compute the sampler pays (speaker keys).
* ``block_sizes`` / ``block_steps`` / ``block_cfg``: blockwise generation, the latents per
  block, the Euler steps of each block and each block's (text, speaker) CFG scales.

Every default (1, or None = "unset") leaves generation exactly as before, so cells of
specs that do not name these axes keep their ids. The values are checked here against
each other and the cell's sampler (:func:`check_workload`); the spec parser reports the
first problem as one line naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from echo_tts.sampling import MAX_SEQUENCE_LENGTH, SamplerConfig

WORKLOAD_AXES: tuple[str, ...] = ("concurrency", "chunk_workers", "speaker_seconds",
                                  "block_sizes", "block_steps", "block_cfg")

WORKLOAD_DEFAULTS: dict[str, Any] = {
    "concurrency": 1,
    "chunk_workers": 1,
    "speaker_seconds": None,
    "block_sizes": None,
    "block_steps": None,
    "block_cfg": None,
}

#: (kind, optional, choices, minimum) of each axis, as bench.spec.axes.AxisType takes them.
WORKLOAD_AXIS_TYPES: dict[str, tuple[str, bool, tuple[str, ...], int | None]] = {
    "concurrency": ("int", False, (), 1),
    "chunk_workers": ("int", False, (), 1),
    "speaker_seconds": ("positive_float", True, (), None),
    "block_sizes": ("int_list", True, (), 1),
    "block_steps": ("int_list", True, (), 1),
    "block_cfg": ("pair_list", True, (), None),
}

# Speaker latents are capped at 6400 (design map): 6400 x 2048 / 44100 s.
MAX_SPEAKER_SECONDS = 6400 * 2048 / 44100


def normalise_workload(cell: Any) -> dict[str, Any]:
    """The workload fields of ``cell`` whose value must be re-typed (lists -> tuples)."""
    out: dict[str, Any] = {}
    for axis in ("block_sizes", "block_steps"):
        value = getattr(cell, axis)
        if isinstance(value, list):
            out[axis] = tuple(value)
    if cell.block_cfg is not None:
        out["block_cfg"] = tuple((float(a), float(b)) for a, b in cell.block_cfg)
    if isinstance(cell.speaker_seconds, int):
        out["speaker_seconds"] = float(cell.speaker_seconds)
    return out


def check_workload(values: Mapping[str, Any], *, keep_blockwise: bool,
                   has_speakers: bool | None) -> tuple[str, str] | None:
    """The first problem with one cell's workload values as (message, axis), or None.

    ``values`` are the cell's effective axis values; ``has_speakers`` says whether every
    prompt carries a speaker reference (None: not known until the prompts load).
    """
    blocks = values["block_sizes"]
    steps = values["block_steps"]
    cfg = values["block_cfg"]
    length = values["sequence_length"]
    if blocks is None and (steps is not None or cfg is not None):
        axis = "block_steps" if steps is not None else "block_cfg"
        return (f"{axis} needs block_sizes (the latents of each block); add block_sizes "
                f"or drop {axis}", axis)
    if blocks is not None:
        total = sum(blocks)
        if total > MAX_SEQUENCE_LENGTH:
            return (f"block_sizes {_join(blocks)} sum to {total} latents, above the "
                    f"{MAX_SEQUENCE_LENGTH} the model generates; use smaller blocks", "block_sizes")
        if total != length:
            return (f"block_sizes {_join(blocks)} sum to {total} latents but the cell's "
                    f"sequence_length is {length}; make the blocks sum to {length} or set "
                    f"sequence_length = {total}", "block_sizes")
        if steps is not None and len(steps) != len(blocks):
            return (f"block_steps has {len(steps)} values for {len(blocks)} blocks; give one "
                    "step count per block", "block_steps")
        if cfg is not None and len(cfg) != len(blocks):
            return (f"block_cfg has {len(cfg)} pairs for {len(blocks)} blocks; give one "
                    "[text, speaker] pair per block", "block_cfg")
        if len(blocks) > 1 and not keep_blockwise:
            return ("block_sizes with more than one block needs the blockwise modules; set "
                    "[model].keep_blockwise = true", "block_sizes")
        if values["batch_size"] != 1:
            return ("block_sizes generates one chunk per call; use batch_size = 1 in "
                    "blockwise cells", "block_sizes")
    if values["concurrency"] > 1:
        if values["cuda_graphs"] or values["compile"]:
            return ("concurrency > 1 shares one model call between threads, which compiled "
                    "graphs and CUDA graphs do not allow; use concurrency = 1 or turn "
                    "compile and cuda_graphs off", "concurrency")
        if values["chunk_workers"] > 1:
            return ("concurrency and chunk_workers measure different deployments; vary one "
                    "of them per cell", "concurrency")
    if values["chunk_workers"] > 1 and values["batch_size"] != 1:
        return ("chunk_workers > 1 sends one chunk to each worker; use batch_size = 1",
                "chunk_workers")
    seconds = values["speaker_seconds"]
    if seconds is not None:
        if seconds > MAX_SPEAKER_SECONDS:
            return (f"speaker_seconds {seconds:g} is above the {MAX_SPEAKER_SECONDS:.0f} s "
                    "of reference the model reads; use a smaller value", "speaker_seconds")
        if has_speakers is False:
            return ("speaker_seconds needs speaker references, and this prompt set has "
                    "none; set [prompts].speaker or use a set with speaker clips",
                    "speaker_seconds")
    return None


def _join(values: Any) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def check_prompt_speakers(cells: Any, prompts: Any) -> str | None:
    """A one-line problem when a cell trims speaker references the prompts lack, else None."""
    if not any(cell.speaker_seconds is not None for cell in cells):
        return None
    missing = [p.id for p in prompts if p.speaker_wav is None]
    if not missing:
        return None
    return (f"grid.speaker_seconds needs speaker references, and {len(missing)} prompt(s) "
            f"have none (e.g. {missing[0]}); set [prompts].speaker or use a set with speaker "
            "clips")


def block_configs(cell: Any) -> list[SamplerConfig] | None:
    """One sampler config per block from ``block_steps`` and ``block_cfg`` (each block's
    length as its sequence_length), or None when the cell is not blockwise."""
    if cell.block_sizes is None:
        return None
    out = []
    for index, size in enumerate(cell.block_sizes):
        changes: dict[str, Any] = {"sequence_length": size}
        if cell.block_steps is not None:
            changes["num_steps"] = cell.block_steps[index]
        if cell.block_cfg is not None:
            changes["cfg_scale_text"], changes["cfg_scale_speaker"] = cell.block_cfg[index]
        out.append(replace(cell.sampler, **changes))
    return out


def nfe_per_chunk(cell: Any) -> int:
    """Forward rows one chunk of the cell costs (every block's, for a blockwise cell)."""
    blocks = block_configs(cell)
    return cell.sampler.nfe() if blocks is None else sum(b.nfe() for b in blocks)


def latent_rows_per_chunk(cell: Any) -> int:
    """Forward rows x latents of one chunk: what its sampling compute scales with."""
    blocks = block_configs(cell)
    if blocks is None:
        return int(cell.sampler.nfe() * cell.sampler.sequence_length)
    return sum(b.nfe() * b.sequence_length for b in blocks)
