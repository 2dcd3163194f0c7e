"""Reading a spec: TOML text -> a validated SweepSpec, every error one line naming the
key, the line and the fix (the format is in bench.spec.sweep's docstring).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import math
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.spec.adaptive import parse_adaptive
from bench.spec.axes import UNSET, check_value, format_value
from bench.spec.history_aware import HistorySpec, parse_history
from bench.spec.predictions import parse_predictions
from bench.spec.sweep import (
    AXES,
    AXIS_TYPES,
    CELL_DEFAULTS,
    DEFAULT_MAX_CELLS,
    EXECUTION_AXES,
    LONG_TEXT_MODES,
    SAMPLER_AXES,
    SPEAKER_SETS,
    WER_PROTOCOLS,
    Cell,
    LimitsSpec,
    MeasureSpec,
    ModalSpec,
    ModelSpec,
    PromptSpec,
    SpecError,
    SweepSpec,
    canonical_json,
    cell_id,
    jsonable,
    same_value,
)
from bench.spec.workload_axes import (
    WORKLOAD_AXES,
    check_workload,
)
from echo_tts.production import DTYPES, resolve_relative_source
from echo_tts.sampling import SamplerConfig

# Expanding a grid is cheap, but not at any size: past this many combinations the spec
# is certainly a mistake, and materialising it would hang before any error is shown.
HARD_MAX_COMBINATIONS = 1_000_000

_QUIET_AXES = frozenset(("codec_dtype", *WORKLOAD_AXES))

# Axes whose single value is itself a list (a block schedule).
_LIST_KINDS = ("int_list", "pair_list")

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")

_LINE_RE = re.compile(r"\(at line (\d+), column (\d+)\)")

_HEADER_RE = re.compile(r"^\s*\[\[?([^\]]+)\]\]?\s*(#.*)?$")


def load_spec(path: str | Path, *, allow_large: bool = False) -> SweepSpec:
    """Read and expand a spec file (see the module docstring for the format)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except UnicodeDecodeError as exc:
        line = _line_of_byte(path.read_bytes(), exc.start)
        raise SpecError(f"{path}:{line}: not valid UTF-8; save the spec as UTF-8",
                        line=line) from None
    spec = parse_spec(text, base_dir=path.resolve().parent, name=path.stem,
                      allow_large=allow_large, origin=str(path))
    return replace(spec, source=path.resolve())


def parse_spec(text: str, *, base_dir: str | Path, name: str, allow_large: bool = False,
               origin: str | None = None) -> SweepSpec:
    """Parse spec ``text``; relative paths resolve against ``base_dir``; ``name`` is used
    when the spec sets none; ``origin`` prefixes error messages (default: ``name``)."""
    parser = _Parser(text, Path(base_dir), origin or name)
    return parser.parse(name, allow_large)


def _line_of_byte(data: bytes, offset: int) -> int:
    """1-based line number of byte ``offset`` in ``data``."""
    return data[:offset].count(b"\n") + 1

# [gate] holds the CI gate's thresholds (read by bench.gate.verdict); sweeps ignore it.
_TOP_KEYS = ("name", "description", "model", "prompts", "grid", "include", "exclude",
             "measure", "limits", "gate", "predictions",
             "modal", "adaptive", "history")

_MODEL_KEYS = ("model", "codec", "pca", "dtype", "device", "compile", "codec_dtype",
               "keep_blockwise")

_PROMPT_KEYS = ("set", "limit", "ids", "speaker", "long_text", "speakers")

_MEASURE_KEYS = ("warmup", "repeats", "seeds", "keep_audio", "max_audio_files", "score",
                 "asr", "asr_device", "sim", "mos", "wer_protocol", "control")

# bench.scoring.speaker's encoders, plus bench.scoring.quality's "when present" choice.
_SIM_ENCODERS = ("none", "resemblyzer", "wavlm-ecapa", "wavlm-ecapa-or-resemblyzer")
# bench.scoring.quality's MOS metrics, plus its "when present" choice.
_MOS_METRICS = ("dnsmos", "utmos", "utmos-if-present")

# A standard prompt set's name ("family:split"), resolved by bench.spec.prompt_sets, not a path.
_NAMED_SET = re.compile(r"[a-z0-9-]+:[a-z0-9-]+")

_LIMIT_KEYS = ("max_cells",)

_MODAL_KEYS = ("region", "audio_sample")


class _Parser:
    """One parse of one spec text; keeps the text to point errors at line numbers."""

    def __init__(self, text: str, base_dir: Path, origin: str):
        self.text = text
        self.base_dir = base_dir
        self.has_speakers: bool | None = None
        self.first_values: dict[str, Any] = {}  # the first value of each [grid] axis
        self.origin = origin

    # ---- errors

    def error(self, message: str, key: str | None = None, line: int | None = None) -> SpecError:
        if line is None and key is not None:
            line = _find_line(self.text, key)
        where = f"{self.origin}:{line}" if line is not None else self.origin
        return SpecError(f"{where}: {message}", key=key, line=line)

    def check_keys(self, table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                dotted = f"{where}.{key}" if where else key
                hint = difflib.get_close_matches(key, allowed, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                place = f"[{where}]" if where else "the top level"
                raise self.error(f"unknown key {key!r} in {place}{suggestion}; allowed: "
                                 f"{', '.join(allowed)}", dotted)

    def table(self, raw: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            raise self.error(f"{key} must be a table: write [{key}] on its own line", key)
        return value

    def get(self, table: Mapping[str, Any], where: str, key: str, kind: type,
            default: Any, describe: str) -> Any:
        """table[key] checked against ``kind`` (a bool is never accepted as an int)."""
        if key not in table:
            return default
        value = table[key]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            dotted = f"{where}.{key}" if where else key
            raise self.error(f"{dotted} must be {describe} (got {value!r})", dotted)
        return value

    def choice(self, table: Mapping[str, Any], where: str, key: str, default: str,
               choices: Sequence[str]) -> str:
        value = table.get(key, default)
        if value not in choices:
            raise self.error(f"{where}.{key} must be one of {', '.join(choices)} (got {value!r})",
                             f"{where}.{key}")
        return str(value)

    def int_at_least(self, table: Mapping[str, Any], where: str, key: str, default: int | None,
                     minimum: int) -> int | None:
        value = self.get(table, where, key, int, default, f"an integer >= {minimum}")
        if value is not None and value < minimum:
            raise self.error(f"{where}.{key} must be an integer >= {minimum} (got {value})",
                             f"{where}.{key}")
        return typing.cast("int | None", value)

    # ---- sections

    def parse(self, default_name: str, allow_large: bool) -> SweepSpec:
        try:
            raw = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            match = _LINE_RE.search(str(exc))
            line = int(match.group(1)) if match else None
            message = _LINE_RE.sub("", str(exc)).strip()
            raise self.error(f"TOML syntax error: {message}"
                             + (f" (column {match.group(2)})" if match else ""),
                             line=line) from None
        self.check_keys(raw, _TOP_KEYS, "")
        name = self.get(raw, "", "name", str, default_name, "a string")
        if "name" in raw and not name.strip():
            raise self.error("name must not be empty", "name")
        description = self.get(raw, "", "description", str, "", "a string")
        model = self.model(self.table(raw, "model"))
        prompts = self.prompts(self.table(raw, "prompts"))
        measure = self.measure(self.table(raw, "measure"))
        limits_table = self.table(raw, "limits")
        self.check_keys(limits_table, _LIMIT_KEYS, "limits")
        max_cells = self.int_at_least(limits_table, "limits", "max_cells", DEFAULT_MAX_CELLS, 1)
        limits = LimitsSpec(max_cells=typing.cast(int, max_cells))
        # Builtin prompts carry no speaker clips unless the espeak-ng set gives them some
        # ("espeak-or-none": only if espeak-ng is there); a file's are checked once it
        # loads (bench.spec.workload_axes.check_prompt_speakers).
        self.has_speakers = (True if prompts.speaker is not None or prompts.speakers == "espeak"
                             else None if prompts.speakers is not None
                             else False if prompts.is_builtin else None)
        cells = self.cells(raw, model, limits, allow_large)
        predictions = parse_predictions(
            raw.get("predictions"), base=dict(self.base_values(model), **self.first_values),
            gpus=list(dict.fromkeys(c.gpu for c in cells if c.gpu is not None)),
            cell_ids={c.id for c in cells}, axes=AXES, axis_value=self.axis_value,
            cell_id=cell_id, error=lambda message, key: self.error(message, key))
        return SweepSpec(
            name=name, description=description, model=model, prompts=prompts,
            measure=measure, limits=limits, cells=cells, source=None, raw=raw,
            modal=self.modal(self.table(raw, "modal")),
            hash=hashlib.sha256(canonical_json(jsonable(raw)).encode("utf-8")).hexdigest(),
            predictions=predictions,
            adaptive=(parse_adaptive(self.table(raw, "adaptive"),
                                     lambda message, key: self.error(message, key),
                                     self.prompt_count(prompts))
                      if "adaptive" in raw else None),
            history=self.history(raw),
        )

    def history(self, raw: dict[str, Any]) -> HistorySpec | None:
        """``[history]`` (the history-aware nightly), which cannot be combined with
        ``[adaptive]``: one staged run follows one rule."""
        if "history" not in raw:
            return None
        if "adaptive" in raw:
            raise self.error("a spec has [adaptive] or [history], not both: [adaptive] "
                             "decides the headline within one run, [history] checks a run "
                             "against the last full one; remove one", "history")
        return parse_history(self.table(raw, "history"),
                             lambda message, key: self.error(message, key))

    @staticmethod
    def prompt_count(prompts: PromptSpec) -> int | None:
        """The most prompts the spec can load, where the spec alone says (limit, ids)."""
        known = [n for n in (prompts.limit, None if prompts.ids is None else len(prompts.ids))
                 if n is not None]
        return min(known) if known else None

    @staticmethod
    def base_values(model: ModelSpec) -> dict[str, Any]:
        """Every axis's value in a cell that names none: execution fields absent from the
        grid follow [model]; sampler fields follow SamplerConfig's defaults."""
        return dict(CELL_DEFAULTS, dtype=model.dtype, codec_dtype=model.codec_dtype,
                    compile=model.compile)

    def modal(self, table: dict[str, Any]) -> ModalSpec:
        self.check_keys(table, _MODAL_KEYS, "modal")
        region = self.get(table, "modal", "region", str, None, 'a Modal region, e.g. "us-east"')
        if region is not None and not region.strip():
            raise self.error("modal.region must not be empty; leave it out for any region",
                             "modal.region")
        sample = table.get("audio_sample")
        if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int | float)
                                   or not 0.0 <= sample <= 1.0):
            raise self.error("modal.audio_sample must be a number from 0 to 1 (the fraction of "
                             f"prompts whose audio is kept; got {sample!r})", "modal.audio_sample")
        return ModalSpec(region=region, audio_sample=None if sample is None else float(sample))

    def model(self, table: dict[str, Any]) -> ModelSpec:
        self.check_keys(table, _MODEL_KEYS, "model")
        if "model" not in table:
            raise self.error('[model] needs model = "..." (e.g. "random:tiny", a folder, '
                             'or "jordand/echo-tts-base")', "model")
        sources = {}
        defaults = {"model": None, "codec": ModelSpec.codec, "pca": ModelSpec.pca}
        for key, default in defaults.items():
            value = self.get(table, "model", key, str, default, "a source string")
            if not value:
                raise self.error(f"model.{key} must not be empty", f"model.{key}")
            try:
                sources[key] = resolve_relative_source(value, self.base_dir)
            except ValueError as err:
                raise self.error(f"model.{key}: {err}", f"model.{key}") from None
        device = self.device(table, "model", "device")
        return ModelSpec(
            model=sources["model"], codec=sources["codec"], pca=sources["pca"],
            dtype=self.choice(table, "model", "dtype", "bfloat16", DTYPES),
            device=device,
            compile=self.get(table, "model", "compile", bool, False, "true or false"),
            codec_dtype=self.choice(table, "model", "codec_dtype", "float32", DTYPES),
            keep_blockwise=self.get(table, "model", "keep_blockwise", bool, False,
                                    "true or false"),
        )

    def device(self, table: dict[str, Any], section: str, key: str) -> str:
        """A device name (auto, cpu, cuda, cuda:N), default auto."""
        value = self.get(table, section, key, str, "auto", "a string")
        if not _DEVICE_RE.match(value):
            raise self.error(f"{section}.{key} must be one of auto, cpu, cuda, cuda:N "
                             f"(got {value!r})", f"{section}.{key}")
        return typing.cast(str, value)

    def path(self, value: str, key: str) -> Path:
        """A file path written in the spec, relative to the spec's folder."""
        try:
            path = Path(value).expanduser()
            return path if path.is_absolute() else (self.base_dir / path).resolve()
        except (OSError, RuntimeError, ValueError) as err:  # NUL byte, unknown ~user
            raise self.error(f"{key}: {value!r} is not a usable path ({err})", key) from None

    def prompts(self, table: dict[str, Any]) -> PromptSpec:
        self.check_keys(table, _PROMPT_KEYS, "prompts")
        source = self.get(table, "prompts", "set", str, "builtin",
                          '"builtin" or the path of a meta.lst or .jsonl file')
        if not source:
            raise self.error('prompts.set must be "builtin" or a file path', "prompts.set")
        ids = self.get(table, "prompts", "ids", list, None, "a list of prompt ids")
        if ids is not None:
            if not ids or not all(isinstance(i, str) and i for i in ids):
                raise self.error('prompts.ids must be a non-empty list of id strings, '
                                 'e.g. ids = ["en-001"]', "prompts.ids")
            if len(set(ids)) != len(ids):
                raise self.error("prompts.ids lists an id twice", "prompts.ids")
        speaker = self.get(table, "prompts", "speaker", str, None, "a path to a WAV file")
        speakers = table.get("speakers")
        if speakers is not None:
            speakers = self.choice(table, "prompts", "speakers", "espeak", SPEAKER_SETS)
            if speaker is not None:
                raise self.error("prompts.speaker and prompts.speakers both set; keep one",
                                 "prompts.speakers")
        named = source == "builtin" or _NAMED_SET.fullmatch(source) is not None
        return PromptSpec(
            source=source if named else self.path(source, "prompts.set"),
            speakers=speakers,
            limit=self.int_at_least(table, "prompts", "limit", None, 1),
            ids=None if ids is None else tuple(ids),
            speaker=None if speaker is None else self.path(speaker, "prompts.speaker"),
            long_text=self.choice(table, "prompts", "long_text", "chunk", LONG_TEXT_MODES),
        )

    def measure(self, table: dict[str, Any]) -> MeasureSpec:
        self.check_keys(table, _MEASURE_KEYS, "measure")
        seeds = self.get(table, "measure", "seeds", list, [0], "a list of integers")
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                and 0 <= s < 2**63 for s in seeds):
            raise self.error("measure.seeds must be a non-empty list of integers in "
                             f"[0, 2^63), e.g. seeds = [0, 1] (got {seeds!r})", "measure.seeds")
        if len(set(seeds)) != len(seeds):
            raise self.error("measure.seeds lists a seed twice", "measure.seeds")
        asr = self.get(table, "measure", "asr", str, "large-v3",
                       'a Whisper model name, checkpoint path or "random:tiny"')
        if not asr:
            raise self.error("measure.asr must not be empty", "measure.asr")
        if asr.startswith("faster-whisper:"):
            folder = asr.removeprefix("faster-whisper:")
            if "/" in folder or folder.startswith("."):  # a CTranslate2 folder, relative to the spec
                asr = "faster-whisper:" + str(self.path(folder, "measure.asr"))
        elif not asr.startswith("random:") and ("/" in asr or asr.startswith(".")):
            asr = str(self.path(asr, "measure.asr"))  # a local checkpoint, relative to the spec
        sim = self.choice(table, "measure", "sim", "none", _SIM_ENCODERS)
        mos = self.get(table, "measure", "mos", list, [], f"a list of {', '.join(_MOS_METRICS)}")
        # "utmos" and "utmos-if-present" are one metric: listing both is listing it twice.
        metrics = [m.removesuffix("-if-present") if isinstance(m, str) else m for m in mos]
        if not all(m in _MOS_METRICS for m in mos) or len(set(metrics)) != len(metrics):
            raise self.error(f"measure.mos must list each of {', '.join(_MOS_METRICS)} at most "
                             f"once, a metric with or without -if-present (got {mos!r})",
                             "measure.mos")
        asr_device = self.device(table, "measure", "asr_device")
        return MeasureSpec(
            warmup=typing.cast(int, self.int_at_least(table, "measure", "warmup", 1, 0)),
            repeats=typing.cast(int, self.int_at_least(table, "measure", "repeats", 1, 1)),
            seeds=tuple(seeds),
            keep_audio=self.get(table, "measure", "keep_audio", bool, True, "true or false"),
            max_audio_files=self.int_at_least(table, "measure", "max_audio_files", None, 0),
            score=self.get(table, "measure", "score", bool, True, "true or false"),
            asr=asr,
            asr_device=asr_device,
            sim=sim,
            mos=tuple(mos),
            wer_protocol=self.choice(table, "measure", "wer_protocol", "whisper-normalizer",
                                     WER_PROTOCOLS),
            control=self.get(table, "measure", "control", bool, False, "true or false"),
        )

    # ---- the grid

    def axis_value(self, key: str, value: Any, where: str) -> Any:
        ok, canonical = check_value(AXIS_TYPES[key], value)
        if not ok:
            raise self.error(f"{where} must be {AXIS_TYPES[key].describe()} (got {value!r})",
                             re.sub(r"\[\d+\]$", "", where))
        return canonical

    def array(self, raw: Mapping[str, Any], section: str) -> list[Any]:
        value = raw.get(section, [])
        if not isinstance(value, list):
            raise self.error(f"{section} must be an array of tables: write [[{section}]] "
                             "followed by key = value lines", section)
        return value

    def combination(self, table: Any, section: str, index: int) -> dict[str, Any]:
        """One [[include]] / [[exclude]] table, validated and canonicalised."""
        where = f"{section}[{index}]"
        if not isinstance(table, dict):
            raise self.error(f"{section} must be an array of tables: write [[{section}]] "
                             "followed by key = value lines", section)
        if not table:
            raise self.error(f"{where} is empty; give at least one axis = value", where)
        self.check_keys(table, AXES, where)
        out = {}
        for key, value in table.items():
            if isinstance(value, list) and AXIS_TYPES[key].kind not in _LIST_KINDS:
                raise self.error(f"{where}.{key} must be a single value, not a list (each "
                                 f"[[{section}]] names one combination)", f"{where}.{key}")
            out[key] = self.axis_value(key, value, f"{where}.{key}")
        return out

    def cells(self, raw: dict[str, Any], model: ModelSpec, limits: LimitsSpec,
              allow_large: bool) -> tuple[Cell, ...]:
        grid = self.table(raw, "grid")
        self.check_keys(grid, AXES, "grid")
        axes: dict[str, list[Any]] = {}
        for key in AXES:  # canonical order, whatever order the file uses
            if key not in grid:
                continue
            values = grid[key]
            if not isinstance(values, list):
                example = values if not isinstance(values, str) else f'"{values}"'
                raise self.error(f"grid.{key} must be a list, e.g. {key} = [{_toml(example)}]",
                                 f"grid.{key}")
            if not values:
                raise self.error(f"grid.{key} is empty; list at least one value "
                                 f"({AXIS_TYPES[key].describe()})", f"grid.{key}")
            canon = [self.axis_value(key, v, f"grid.{key}[{i}]") for i, v in enumerate(values)]
            seen: list[Any] = []
            for v in canon:
                if any(same_value(v, s) for s in seen):
                    raise self.error(f"grid.{key} lists {format_value(v)} twice", f"grid.{key}")
                seen.append(v)
            axes[key] = canon

        includes = [self.combination(t, "include", i)
                    for i, t in enumerate(self.array(raw, "include"), 1)]
        excludes = [self.combination(t, "exclude", i)
                    for i, t in enumerate(self.array(raw, "exclude"), 1)]

        combinations = math.prod(len(v) for v in axes.values())
        if combinations > HARD_MAX_COMBINATIONS:
            raise self.error(f"grid has {combinations} combinations, above the hard limit "
                             f"of {HARD_MAX_COMBINATIONS}; split the sweep", "grid")

        base = self.base_values(model)
        named = [k for k in AXES if k in axes or any(k in inc for inc in includes)]

        rows: list[tuple[dict[str, Any], str]] = []
        if axes or not includes:
            product = itertools.product(*axes.values())
            grid_rows = [dict(base, **dict(zip(axes, combo, strict=True))) for combo in product]
            for index, rule in enumerate(excludes, 1):
                kept = [r for r in grid_rows if not _matches(r, rule)]
                if len(kept) == len(grid_rows):
                    raise self.error(f"exclude[{index}] ({_describe(rule)}) matches no cell "
                                     "of the grid; fix or remove it", f"exclude[{index}]")
                grid_rows = kept
            rows.extend((r, "grid cell") for r in grid_rows)
        elif excludes:
            raise self.error("[[exclude]] needs [grid] axes to exclude from", "exclude")
        first = {k: v[0] for k, v in axes.items()}
        self.first_values = first
        for index, rule in enumerate(includes, 1):
            rows.append((dict(base, **dict(first, **rule)), f"include[{index}]"))
        if not rows:
            raise self.error("the grid is empty after [[exclude]]; remove an exclude "
                             "or add values to [grid]", "exclude")

        cells: dict[str, Cell] = {}
        for values, where in rows:
            cell = self.make_cell(values, named, where, model)
            cells.setdefault(cell.id, cell)
        if len(cells) > limits.max_cells and not allow_large:
            raise self.error(f"grid has {len(cells)} cells, above max_cells="
                             f"{limits.max_cells}; pass --yes or raise [limits].max_cells",
                             "limits.max_cells" if "limits" in raw else "grid")
        return tuple(cells.values())

    def make_cell(self, values: dict[str, Any], named: Sequence[str], where: str,
                  model: ModelSpec) -> Cell:
        sampler_kwargs = {k: values[k] for k in SAMPLER_AXES}
        # The newer axes show only where they differ from the default, so an include
        # that names one does not put "concurrency=1" on every other cell's label.
        settings = {k: values[k] for k in AXES
                    if (k in named and k not in _QUIET_AXES)
                    or not same_value(values[k], CELL_DEFAULTS[k])}
        try:
            sampler = SamplerConfig(**sampler_kwargs)
        except ValueError as exc:
            # Point at the first field the sampler complains about, for the line number.
            culprit = next((k for k in SAMPLER_AXES if re.search(rf"\b{k}\b", str(exc))), None)
            section = where if where.startswith("include") else "grid"
            raise self.error(f"{where} ({_describe(settings)}) is not a valid sampler "
                             f"setting: {exc}",
                             f"{section}.{culprit}" if culprit else section) from None
        # A GPU string means a Modal GPU, so only a local CPU run surely lacks CUDA.
        if values["cuda_graphs"] and model.device == "cpu" and values["gpu"] is None:
            raise self.error(f"{where} ({_describe(settings)}) asks for cuda_graphs on a CPU "
                             "device; drop cuda_graphs or set [model].device", "model.device")
        problem = check_workload(values, keep_blockwise=model.keep_blockwise,
                                 has_speakers=self.has_speakers)
        if problem is not None:
            message, axis = problem
            section = where if where.startswith("include") else "grid"
            raise self.error(f"{section}.{axis}: {message}", f"{section}.{axis}")
        return Cell(id=cell_id(values), sampler=sampler, settings=settings,
                    **{axis: values[axis] for axis in EXECUTION_AXES})


def _matches(values: Mapping[str, Any], rule: Mapping[str, Any]) -> bool:
    return all(same_value(values[k], v) for k, v in rule.items())


def _describe(settings: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={UNSET if v is None else format_value(v)}"
                    for k, v in settings.items()) or "defaults"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _find_line(text: str, dotted: str) -> int | None:
    """Best-effort line of a dotted key: ``grid.num_steps``, ``include[2].num_steps``
    (in the second ``[[include]]`` table), ``include[2]`` or ``include`` (a header),
    ``name`` (top level).

    tomllib reports no positions for a valid document, so this scans for the table
    header (or the key inside its table); it returns None rather than guess.
    """
    table, _, key = dotted.rpartition(".")
    if not table:  # a bare name: a table header, or a top-level key
        table, key = dotted, ""
    indexed = re.fullmatch(r"(\w+)\[(\d+)\]", table)
    table, wanted = (indexed.group(1), int(indexed.group(2))) if indexed else (table, 1)
    key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    current, seen = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER_RE.match(line)
        if header:
            current = re.sub(r"[\"'\s]", "", header.group(1))
            seen += current == table
            if not key and current == table and seen == wanted:
                return number
        elif not key and not current and re.match(rf"^\s*{re.escape(table)}\s*=", line):
            return number  # a top-level key, or a table written inline
        elif key and current == table and seen == wanted and key_re.match(line):
            return number
    return None
