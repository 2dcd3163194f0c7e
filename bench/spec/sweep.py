"""Sweep specs: the format, the parsed SweepSpec and its cells, each with a stable id (the
reading and checking of a spec file is in :mod:`bench.spec.parser`).

A spec is data only (nothing in it is executed or imported by name)::

    name = "smoke"                      # default: the file's stem
    description = "..."                 # optional

    [model]                             # what to load, once per worker
    model = "random:tiny"               # "random:<preset>", a folder, or owner/name
    codec = "jordand/fish-s1-dac-min"
    pca = "jordand/echo-tts-base"
    dtype = "bfloat16"                  # float32 | bfloat16 | float16
    device = "auto"                     # auto | cpu | cuda | cuda:N
    compile = false
    codec_dtype = "float32"
    keep_blockwise = false

    [prompts]
    set = "builtin"                     # or a meta.lst / .jsonl path (relative: to this file)
    limit = 3                           # optional, >= 1
    ids = ["en-001"]                    # optional
    speaker = "voices/alice.wav"        # optional, one speaker clip for every prompt
    long_text = "chunk"                 # chunk | truncate | error

    [grid]                              # every axis is a LIST of values
    num_steps = [20, 40]
    cfg_mode = ["independent", "alternating"]
    gpu = ["A10G", "L4"]                # Modal GPU strings; absent = wherever the backend runs

    [[include]]                         # one extra combination
    num_steps = 30
    [[exclude]]                         # drop every cell matching all of these
    cfg_mode = "alternating"
    gpu = "L4"

    [measure]
    warmup = 1
    repeats = 1
    seeds = [0]

    [limits]
    max_cells = 500

    [modal]                             # optional, Modal backend only
    region = "us-east"                  # pin containers to a region (recorded per record)
    audio_sample = 0.1                  # keep WAVs of 10 % of prompts + suspicious ones

Grid axes: :data:`EXECUTION_AXES` (``gpu``, ``dtype``, ``codec_dtype``, ``compile``,
``cuda_graphs``, ``attention``, ``batch_size`` and the workload axes of
:mod:`bench.spec.workload_axes`: ``concurrency``, ``chunk_workers``, ``speaker_seconds``,
``block_sizes``, ``block_steps``, ``block_cfg``) and every :class:`~echo_tts.sampling.SamplerConfig` field. TOML has no
null, so an optional sampler field (``truncation_factor``, ``rescale_k``, ...) is set
back to "off" with the string ``"unset"``.

Expansion rules (GitHub Actions' matrix semantics, which users already know):

1. the cartesian product of the grid axes;
2. minus every cell matching all key/values of some ``[[exclude]]`` table;
3. plus every ``[[include]]`` table as one cell. Axes an include leaves out take the
   *first* value listed for that axis in ``[grid]`` (so the first value reads as "the
   baseline"), or the default when the axis is not in the grid. Includes come after
   excludes, so an include can add back an excluded combination. When ``[grid]`` has
   no axes and there are includes, the cells are exactly the includes.

Identical cells are kept once. Cells are ordered by the product with the axes that cost
a model reload outermost (gpu, dtype, compile, then cuda_graphs, attention, batch_size and the
sampler fields in :class:`SamplerConfig` order), values in the order written, then the
includes; neither the order nor the ids depend on how the axes are ordered in the file.

A cell's id is the first 10 hex digits of the sha256 of the canonical JSON of its
effective settings that differ from the fixed defaults in :data:`CELL_DEFAULTS`: the
same configuration gets the same id whichever spec or TOML formatting produced it, and
adding a new sampler option (with a default) leaves existing ids unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.spec.adaptive import AdaptiveSpec
from bench.spec.axes import UNSET, AxisType, format_value, sampler_axis_types
from bench.spec.history_aware import HistorySpec
from bench.spec.predictions import Prediction
from bench.spec.workload_axes import (
    WORKLOAD_AXES,
    WORKLOAD_AXIS_TYPES,
    WORKLOAD_DEFAULTS,
    normalise_workload,
)
from echo_tts.acceleration import ATTENTION_LAYOUTS, AttentionLayout
from echo_tts.autoencoder import DEFAULT_CODEC_REPO, DEFAULT_PCA_REPO
from echo_tts.production import DTYPES
from echo_tts.sampling import SamplerConfig

LONG_TEXT_MODES: tuple[str, ...] = ("chunk", "truncate", "error")
DEFAULT_MAX_CELLS = 500

#: Grid axes that are not sampler settings, outermost first (each costs a model reload
#: or a different machine, so the runner wants them grouped).
EXECUTION_AXES: tuple[str, ...] = ("gpu", "dtype", "codec_dtype", "compile", "cuda_graphs", "attention", "batch_size", *WORKLOAD_AXES)
SAMPLER_AXES: tuple[str, ...] = SamplerConfig.field_names()
AXES: tuple[str, ...] = EXECUTION_AXES + SAMPLER_AXES

#: The reference point for cell ids and for "non-default" settings: the sampler's
#: production defaults, no particular GPU, one chunk per call, eager, sliced attention,
#: bfloat16.
CELL_DEFAULTS: dict[str, Any] = {
    "gpu": None,
    "dtype": "bfloat16",
    "codec_dtype": "float32",
    "compile": False,
    "cuda_graphs": False,
    "attention": "sliced",
    "batch_size": 1,
    **WORKLOAD_DEFAULTS,
    **SamplerConfig().to_dict(),
}

# Short names for the label; other settings show under their own name.
_LABEL_NAMES = {"num_steps": "steps", "cfg_mode": "cfg", "sequence_length": "len"}


class SpecError(ValueError):
    """A sweep spec is invalid. The message is one line naming the key and the fix.

    ``key`` is the dotted key at fault (e.g. ``grid.num_steps``) and ``line`` its line
    in the file, when known.
    """

    def __init__(self, message: str, *, key: str | None = None, line: int | None = None):
        super().__init__(message)
        self.key = key
        self.line = line


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class ModelSpec:
    """What each worker loads. Sources are strings as :mod:`echo_tts.weights` reads them;
    a relative path (``./w``, ``../w``, or one that exists beside the spec) is resolved
    against the spec's folder."""

    model: str
    codec: str = DEFAULT_CODEC_REPO
    pca: str = DEFAULT_PCA_REPO
    dtype: str = "bfloat16"
    device: str = "auto"
    compile: bool = False
    codec_dtype: str = "float32"
    keep_blockwise: bool = False


@dataclass(frozen=True)
class PromptSpec:
    """Which prompts to run. ``source`` is ``"builtin"`` or the path of a Seed-TTS-eval
    ``meta.lst`` or a ``.jsonl`` file; ``speaker`` (one clip for every prompt) replaces
    any per-prompt speaker; ``long_text`` says what to do with text over one chunk.
    ``source`` may also name a standard set (``"seed-tts-eval:en"``,
    ``"librispeech-pc:test-clean"``, see :mod:`bench.spec.prompt_sets`). ``speakers``
    (``"espeak"``, or ``"espeak-or-none"`` to run unconditioned where espeak-ng is
    missing) gives prompts without a speaker clip one from the built-in speaker set."""

    source: str | Path = "builtin"
    limit: int | None = None
    ids: tuple[str, ...] | None = None
    speaker: Path | None = None
    long_text: str = "chunk"
    speakers: str | None = None

    @property
    def is_builtin(self) -> bool:
        return self.source == "builtin"


@dataclass(frozen=True)
class MeasureSpec:
    """How each cell is measured: ``warmup`` unmeasured generations (compiled cells add
    up to two, see :func:`bench.run.worker.warmup_generations`), then ``repeats`` measured
    ones per prompt and seed; ``score`` runs ASR (``asr``: a Whisper model name,
    a checkpoint path, or ``random:tiny`` for tests) on ``asr_device``; WER follows
    ``wer_protocol`` (:mod:`bench.scoring.protocols`); ``control`` also scores the prompt
    set's own recordings as a ground-truth control row (:mod:`bench.scoring.controls`)."""

    warmup: int = 1
    repeats: int = 1
    seeds: tuple[int, ...] = (0,)
    keep_audio: bool = True
    max_audio_files: int | None = None
    score: bool = True
    asr: str = "large-v3"
    asr_device: str = "auto"
    # Audio quality metrics beside WER (bench.scoring.quality): a speaker encoder for SIM
    # ("resemblyzer", "wavlm-ecapa" or "none") and MOS predictors ("dnsmos", "utmos").
    # "wavlm-ecapa-or-resemblyzer" and "utmos-if-present" use the published model when its
    # weights are in the models folder and fall back (Resemblyzer; no UTMOS) otherwise.
    sim: str = "none"
    mos: tuple[str, ...] = ()
    wer_protocol: str = "whisper-normalizer"
    control: bool = False


@dataclass(frozen=True)
class ModalSpec:
    """Modal-only settings (``[modal]``): ``region`` pins every container to a Modal
    region (reproducible comparisons; Modal charges extra for it); ``audio_sample``
    keeps WAVs only for that fraction of prompts plus every suspicious generation
    (:mod:`bench.run.retention`); None keeps all."""

    region: str | None = None
    audio_sample: float | None = None


@dataclass(frozen=True)
class LimitsSpec:
    """Guards against accidental huge sweeps."""

    max_cells: int = DEFAULT_MAX_CELLS


@dataclass(frozen=True)
class Cell:
    """One point of the grid: sampler settings plus how and where to run them.

    ``settings`` holds the values worth showing (every axis the spec names, plus any
    other value that differs from :data:`CELL_DEFAULTS`), in canonical axis order.
    """

    id: str
    sampler: SamplerConfig
    gpu: str | None = None
    batch_size: int = 1
    compile: bool = False
    cuda_graphs: bool = False
    attention: AttentionLayout = "sliced"
    dtype: str = "bfloat16"
    codec_dtype: str = "float32"
    # The workload axes (bench.spec.workload_axes): None / 1 leave generation as it was.
    concurrency: int = 1
    chunk_workers: int = 1
    speaker_seconds: float | None = None
    block_sizes: tuple[int, ...] | None = None
    block_steps: tuple[int, ...] | None = None
    block_cfg: tuple[tuple[float, float], ...] | None = None
    settings: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        # Lists arrive from TOML and JSON payloads; a Cell is a dict key, so keep tuples.
        for axis, value in normalise_workload(self).items():
            object.__setattr__(self, axis, value)

    def values(self) -> dict[str, Any]:
        """Every axis's effective value, in canonical axis order."""
        return {**self.execution(), **self.sampler.to_dict()}

    def execution(self) -> dict[str, Any]:
        """The execution axes' values (:data:`EXECUTION_AXES`, which are Cell fields)."""
        return {axis: getattr(self, axis) for axis in EXECUTION_AXES}

    @functools.cached_property  # asked for several times per generation
    def label(self) -> str:
        """Short human-readable name, e.g. ``steps=40 cfg=independent len=640 gpu=A10G``."""
        values = self.values()
        parts = [f"{_LABEL_NAMES[k]}={values[k]}" for k in _LABEL_NAMES]
        if self.gpu is not None:
            parts.append(f"gpu={self.gpu}")
        for key, value in self.settings.items():
            if key in _LABEL_NAMES or key == "gpu":
                continue
            parts.append(f"{key}={UNSET if value is None else format_value(value)}")
        return " ".join(parts)


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, validated, expanded sweep. ``hash`` identifies ``raw`` (the TOML as
    parsed), so two runs of the same spec can be told apart from runs of an edited one."""

    name: str
    description: str
    model: ModelSpec
    prompts: PromptSpec
    measure: MeasureSpec
    limits: LimitsSpec
    cells: tuple[Cell, ...]
    source: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    modal: ModalSpec = field(default_factory=ModalSpec)
    hash: str = ""
    predictions: tuple[Prediction, ...] = ()
    # [adaptive] (bench.spec.adaptive): None runs every cell on every prompt.
    adaptive: AdaptiveSpec | None = None
    # [history] (bench.spec.history_aware): None never checks against an earlier run.
    history: HistorySpec | None = None

    def cells_by_gpu(self) -> dict[str | None, tuple[Cell, ...]]:
        """Cells grouped by GPU string (None: wherever the backend runs), in cell order."""
        groups: dict[str | None, list[Cell]] = {}
        for cell in self.cells:
            groups.setdefault(cell.gpu, []).append(cell)
        return {gpu: tuple(cells) for gpu, cells in groups.items()}


# --------------------------------------------------------------------------- public API


def spec_to_dict(spec: SweepSpec) -> dict[str, Any]:
    """A JSON-ready description of a parsed spec, for the run manifest."""
    return {
        "name": spec.name,
        "description": spec.description,
        "hash": spec.hash,
        "source": None if spec.source is None else str(spec.source),
        "model": asdict(spec.model),
        "prompts": {
            "source": str(spec.prompts.source),
            "limit": spec.prompts.limit,
            "ids": None if spec.prompts.ids is None else list(spec.prompts.ids),
            "speaker": None if spec.prompts.speaker is None else str(spec.prompts.speaker),
            "long_text": spec.prompts.long_text,
            "speakers": spec.prompts.speakers,
        },
        "measure": {**asdict(spec.measure), "seeds": list(spec.measure.seeds)},
        "limits": asdict(spec.limits),
        "predictions": [p.to_dict() for p in spec.predictions],
        "modal": asdict(spec.modal),
        "adaptive": None if spec.adaptive is None else spec.adaptive.to_dict(),
        "history": None if spec.history is None else spec.history.to_dict(),
        "cells": [
            {"id": c.id, "label": c.label, "settings": dict(c.settings), **c.values()}
            for c in spec.cells
        ],
        "raw": spec.raw,
    }


def cell_id(values: Mapping[str, Any]) -> str:
    """Stable id of a cell from its effective axis values (see the module docstring)."""
    identity = {k: v for k, v in values.items()
                if k not in CELL_DEFAULTS or not same_value(v, CELL_DEFAULTS[k])}
    return hashlib.sha256(canonical_json(identity).encode("utf-8")).hexdigest()[:10]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the same data always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


# --------------------------------------------------------------------------- axis types


AXIS_TYPES: dict[str, AxisType] = {
    "gpu": AxisType("gpu"),
    "dtype": AxisType("choice", choices=DTYPES),
    "compile": AxisType("bool"),
    "cuda_graphs": AxisType("bool"),
    "attention": AxisType("choice", choices=ATTENTION_LAYOUTS),
    "batch_size": AxisType("int", minimum=1),
    "codec_dtype": AxisType("choice", choices=DTYPES),
    **{name: AxisType(*spec) for name, spec in WORKLOAD_AXIS_TYPES.items()},
    **sampler_axis_types(),
}


# --------------------------------------------------------------------------- the parser


# Names of bench.scoring.protocols.PROTOCOLS, kept here so parsing a spec imports no
# scoring code (a test checks that the two lists agree).
WER_PROTOCOLS = ("whisper-normalizer", "seed-tts-eval", "f5-tts")
SPEAKER_SETS = ("espeak", "espeak-or-none")


def same_value(a: Any, b: Any) -> bool:
    """Equal and of the same type (True == 1 and 3 == 3.0 must not merge cells)."""
    return a == b and type(a) is type(b)


def jsonable(value: Any) -> Any:
    """TOML dates/times are the only non-JSON values tomllib yields; hash them as text."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


