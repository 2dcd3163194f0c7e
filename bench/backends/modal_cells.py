"""What a Modal GPU container does with a call: the payload it receives and the cell
runner that executes it, as plain code (no ``modal`` import) so tests run it in-process.

Payload (``spec_json``, see :func:`encode_payload`): the model, the per-cell settings,
the prompts themselves (speaker clips inlined as base64, since the container cannot see
the orchestrator's files), seeds, repeats, warm-up, and where audio goes: inline in the
call result (base64, for runs whose store is on the orchestrator's disk) or straight
into a run folder on the outputs Volume (``audio_dir``, the nightly), keeping only a
sample plus every suspicious generation when ``audio_sample`` is set
(:mod:`bench.run.retention`). Cells keep their ids, so record keys match a local run.

Timing fields (:data:`MODAL_RECORD_FIELDS`): the orchestrator passes the wall-clock
time it spawned the call; the container knows when it started (the start time of its
PID 1, from /proc: the container's own clock, not this module's import), when its
``@modal.enter`` began and when the model was loaded. So queueing, container boot,
model load and the first call's overhead are separate figures.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.core.errors import UserError
from bench.run.retention import keep_reasons
from bench.spec.prompt_files import Prompt
from bench.spec.sweep import EXECUTION_AXES, Cell, ModelSpec, SweepSpec
from bench.store.layout import AUDIO_DIR, audio_filename

PAYLOAD_VERSION = 2

#: Fields a Modal worker adds to every record, on top of the local backend's.
MODAL_RECORD_FIELDS: tuple[str, ...] = (
    "spawned_at",                   # orchestrator's clock when it spawned the call (epoch s)
    "container_started_at",         # the container's start (its PID 1), epoch s
    "queue_seconds",                # spawn -> container start (first call) or call start
    "container_boot_seconds",       # container start -> @modal.enter (image, Python, imports)
    "model_load_seconds",           # @modal.enter: loading weights onto the GPU
    "cold_start_seconds",           # container start -> model loaded (0 on a warm container)
    "first_call_overhead_seconds",  # call start -> first timed generation (payload, warm-up)
    "container_id",                 # MODAL_TASK_ID of the container ("local" in-process)
    "container_call",               # 0 for the first call a container served
    "region",                       # MODAL_REGION of the container, when Modal sets it
    "audio_kept",                   # why the WAV was kept (sample, silent, outlier-...), or None
)
#: Only in call results whose audio travels inline; popped by the orchestrator.
INLINE_AUDIO_FIELD = "audio_wav_b64"


def container_started_at(proc: Path = Path("/proc")) -> float | None:
    """Wall-clock start of this container: its PID 1's start (clock ticks after boot, in
    /proc/1/stat) plus the boot time (/proc/stat ``btime``). None where /proc lacks them."""
    try:
        stat = (proc / "1" / "stat").read_text()
        # Field 22 (starttime); the command name (field 2) may hold spaces, so split
        # after its closing parenthesis.
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        btime = next(int(line.split()[1]) for line in (proc / "stat").read_text().splitlines()
                     if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return btime + start_ticks / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- payload


def model_params(model: ModelSpec, long_text: str) -> str:
    """The worker class parameter: what to load (one container pool per distinct value)."""
    return json.dumps({"model": asdict(model), "long_text": long_text}, sort_keys=True)


def encode_payload(spec: SweepSpec, prompts: list[Prompt], cells: list[Cell] | None = None, *,
                   audio_dir: str | None = None) -> str:
    """The spec as a worker needs it (see the module docstring), as JSON text.

    ``cells`` limits the payload to those cells (default: all of the spec's);
    ``audio_dir`` is a run's audio folder as the container sees it (on a Volume).
    """
    speakers: dict[str, str] = {}
    prompt_rows = []
    for prompt in prompts:
        speaker_key = None
        if prompt.speaker_wav is not None:
            data = Path(prompt.speaker_wav).read_bytes()
            speaker_key = hashlib.sha256(data).hexdigest()[:16] + Path(prompt.speaker_wav).suffix
            speakers.setdefault(speaker_key, base64.b64encode(data).decode("ascii"))
        prompt_rows.append({"id": prompt.id, "text": prompt.text, "speaker": speaker_key,
                            "reference_text": prompt.reference_text, "category": prompt.category})
    return json.dumps({
        "version": PAYLOAD_VERSION,
        "name": spec.name,
        "model": json.loads(model_params(spec.model, spec.prompts.long_text)),
        "warmup": spec.measure.warmup,
        "repeats": spec.measure.repeats,
        "seeds": list(spec.measure.seeds),
        "keep_audio": spec.measure.keep_audio,
        "audio_sample": spec.modal.audio_sample,
        "audio_dir": audio_dir,
        "prompts": prompt_rows,
        "speakers": speakers,
        "cells": [_cell_to_dict(c) for c in (spec.cells if cells is None else cells)],
    })


def _cell_to_dict(cell: Cell) -> dict[str, Any]:
    return {"id": cell.id, **cell.execution(), "sampler": cell.sampler.to_dict(),
            "settings": dict(cell.settings)}


def _cell_from_dict(row: dict[str, Any]) -> Cell:
    from echo_tts.sampling import SamplerConfig

    # An axis a payload lacks (one from an older orchestrator) takes the Cell default.
    return Cell(id=row["id"], sampler=SamplerConfig(**row["sampler"]), settings=row["settings"],
                **{axis: row[axis] for axis in EXECUTION_AXES if axis in row})


@dataclass
class Payload:
    """A decoded payload: cells by id, prompts (speaker clips written to ``folder``)."""

    model: ModelSpec
    long_text: str
    warmup: int
    repeats: int
    seeds: list[int]
    keep_audio: bool
    audio_sample: float | None
    audio_dir: str | None
    prompts: list[Prompt]
    cells: dict[str, Cell]


def decode_payload(spec_json: str, folder: Path) -> Payload:
    """Parse :func:`encode_payload`'s text; speaker clips land in ``folder``."""
    data = json.loads(spec_json)
    if data.get("version") != PAYLOAD_VERSION:
        raise UserError(f"worker payload version {data.get('version')!r}, expected "
                        f"{PAYLOAD_VERSION}: the app and this echo-bench differ; redeploy")
    folder.mkdir(parents=True, exist_ok=True)
    speaker_paths: dict[str, Path] = {}
    for key, b64 in data["speakers"].items():
        path = folder / Path(key).name  # a hash + suffix we made; never a path
        if not path.exists():
            path.write_bytes(base64.b64decode(b64))
        speaker_paths[key] = path
    prompts = [Prompt(id=p["id"], text=p["text"], reference_text=p["reference_text"],
                      category=p["category"],
                      speaker_wav=None if p["speaker"] is None else speaker_paths[p["speaker"]])
               for p in data["prompts"]]
    return Payload(model=ModelSpec(**data["model"]["model"]),
                   long_text=data["model"]["long_text"], warmup=data["warmup"],
                   repeats=data["repeats"], seeds=list(data["seeds"]),
                   keep_audio=data["keep_audio"], audio_sample=data["audio_sample"],
                   audio_dir=data["audio_dir"], prompts=prompts,
                   cells={row["id"]: _cell_from_dict(row) for row in data["cells"]})


# --------------------------------------------------------------------------- cell runner


@dataclass
class CellRunner:
    """One container's worker: the loaded model plus its start-up figures."""

    params: str
    container_started_at: float = field(default_factory=time.time)
    enter_started_at: float = field(default_factory=time.time)
    loaded_at: float = 0.0
    calls: int = 0
    container_id: str = field(default_factory=lambda: os.environ.get("MODAL_TASK_ID", "local"))
    region: str | None = field(default_factory=lambda: os.environ.get("MODAL_REGION"))

    def __post_init__(self) -> None:
        from bench.run.worker import Worker

        data = json.loads(self.params)
        self.model = ModelSpec(**data["model"])
        self.worker = Worker(self.model, long_text=data["long_text"])
        self.scratch = Path(tempfile.mkdtemp(prefix="echo-bench-scratch-"))

    def load(self) -> None:
        """Load the pipeline for the model's own dtype now (cells with another dtype load
        theirs on first use): the part of the cold start that is ours."""
        from echo_tts.sampling import SamplerConfig

        self.worker.pipeline(Cell(id="preload", sampler=SamplerConfig(),
                                  dtype=self.model.dtype, compile=self.model.compile,
                                  codec_dtype=self.model.codec_dtype))
        self.loaded_at = time.time()

    def timing(self, call: int, spawned_at: float, call_started_at: float) -> dict[str, Any]:
        """The start-up fields of a record of call number ``call`` (0 paid the cold start)."""
        cold = call == 0
        start = self.container_started_at if cold else call_started_at
        return {
            "spawned_at": spawned_at,
            "container_started_at": self.container_started_at,
            # Clocks of two machines: negative only by their skew, shown as 0.
            "queue_seconds": max(0.0, start - spawned_at),
            "container_boot_seconds": self.enter_started_at - self.container_started_at if cold else 0.0,
            "model_load_seconds": self.loaded_at - self.enter_started_at if cold else 0.0,
            "cold_start_seconds": self.loaded_at - self.container_started_at if cold else 0.0,
        }

    def run(self, spec_json: str, cell_ids: list[str], done_keys: list[str],
            spawned_at: float, commit: Callable[[], None] | None = None) -> list[dict[str, Any]]:
        """Run the pending generations of ``cell_ids``; returns their records. Audio goes
        inline (base64) or, with the payload's ``audio_dir``, into that folder, after
        which ``commit`` (the Volume's) makes it visible to other containers."""
        from bench.run.worker import plan

        call_started_at = time.time()
        payload = decode_payload(spec_json, self.scratch / "speakers")
        if asdict(payload.model) != asdict(self.model):
            raise UserError("payload model differs from the worker's; pass the same spec to both")
        self.worker.long_text = payload.long_text
        unknown = [c for c in cell_ids if c not in payload.cells]
        if unknown:
            raise UserError(f"cells {unknown} are not in the payload")
        done = set(done_keys)
        call = self.calls
        self.calls += 1
        base = self.timing(call, spawned_at, call_started_at)
        records: list[dict[str, Any]] = []
        first_start: list[float] = []  # when the call's first timed generation began
        for cell_id in cell_ids:
            cell = payload.cells[cell_id]
            generations = [g for g in plan([cell], payload.prompts, payload.seeds, payload.repeats)
                           if g.key not in done]
            cell_records, wavs = self._run_cell(cell, generations, payload.warmup, first_start)
            self._place_audio(payload, cell_records, wavs)
            records += cell_records
        if payload.audio_dir is not None and commit is not None:
            commit()
        for record in records:
            record.update(base, container_id=self.container_id, container_call=call,
                          region=self.region)
        overhead = first_start[0] - call_started_at if first_start else None
        for record in records:
            record["first_call_overhead_seconds"] = overhead
        return records

    def _run_cell(self, cell: Cell, generations: list[Any], warmup: int,
                  first_start: list[float]) -> tuple[list[dict[str, Any]], dict[str, Path]]:
        """Records of one cell, and the WAV of each ok record written to local scratch
        (kept out of memory: a cell may be 80 clips of 60 s)."""
        from echo_tts.audio import wav_bytes

        records: list[dict[str, Any]] = []
        wavs: dict[str, Path] = {}

        def sink(record: dict[str, Any], audio: Any) -> None:
            if not first_start:
                first_start.append(time.time() - float(record.get("wall_seconds") or 0.0))
            if record["status"] == "ok" and audio is not None:
                path = self.scratch / "audio" / audio_filename(record["key"])
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(wav_bytes(audio))
                wavs[record["key"]] = path
            records.append(record)

        self.worker.run_cell(cell, generations, warmup, sink)
        return records, wavs

    @staticmethod
    def _place_audio(payload: Payload, records: list[dict[str, Any]],
                     wavs: dict[str, Path]) -> None:
        """Keep each record's WAV where the payload says (or drop it), and say why."""
        fraction = payload.audio_sample if payload.keep_audio else 0.0
        reasons = keep_reasons(records, fraction)
        for record, reason in zip(records, reasons, strict=True):
            wav = wavs.pop(record["key"], None)
            keep = payload.keep_audio and reason is not None and wav is not None
            record["audio_kept"] = reason if keep else None
            if wav is None:
                continue
            if keep and payload.audio_dir is None:
                record[INLINE_AUDIO_FIELD] = base64.b64encode(wav.read_bytes()).decode("ascii")
            elif keep:
                name = audio_filename(record["key"])  # the name the run store uses
                target = Path(payload.audio_dir or "") / name
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(name + ".part")
                tmp.write_bytes(wav.read_bytes())
                tmp.replace(target)
                record["audio_path"] = f"{AUDIO_DIR}/{name}"
            wav.unlink()


# In-process runners by model parameters: a second local call reuses the loaded model,
# as a warm container would. One call at a time, as in a container that serves one
# input at a time (callers may wait on several calls from threads).
_LOCAL_RUNNERS: dict[str, CellRunner] = {}
_LOCAL_LOCK = threading.Lock()


def run_cells_local(spec_json: str, cell_ids: list[str], done_keys: list[str],
                    spawned_at: float | None = None,
                    commit: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """What ``BenchWorker.run_cells`` does, in this process (tests, debugging)."""
    params = json.dumps(json.loads(spec_json)["model"], sort_keys=True)
    with _LOCAL_LOCK:
        runner = _LOCAL_RUNNERS.get(params)
        if runner is None:
            runner = _LOCAL_RUNNERS[params] = CellRunner(params)
            runner.load()
        return runner.run(spec_json, cell_ids, done_keys,
                          time.time() if spawned_at is None else spawned_at, commit)
