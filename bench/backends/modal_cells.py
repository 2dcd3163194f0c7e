"""What a Modal GPU container does with a call: the payload it receives and the cell
runner that executes it, as plain code (no ``modal`` import) so tests run it in-process.

Payload (``spec_json``, see :func:`encode_payload`): the model, the per-cell settings,
the prompts themselves (speaker clips inlined as base64, since the container cannot see
the orchestrator's files), seeds, repeats, warm-up, the seed of the rounds' order, and
where audio goes: left on the outputs Volume for the orchestrator to read (runs whose
store is on the orchestrator's disk; a group's WAVs are too many for one call result)
or copied straight into a run folder on the Volume (``audio_dir``, the nightly), keeping
only a sample plus every suspicious generation when ``audio_sample`` is set
(:mod:`bench.run.retention`). Cells keep their ids, so record keys match a local run.

One call runs one group of cells that share a loaded pipeline (:mod:`bench.run.schedule`)
through :meth:`~bench.run.worker.Worker.run_group`, in the same interleaved rounds, with the
same order fields, as the local backend; each finished generation goes to the call's
journal on the Volume first (:mod:`bench.backends.modal_journal`), so a restarted input
continues the same rounds and records every generation once.

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
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bench.backends.modal_journal import CallJournal
from bench.core.errors import UserError
from bench.run.retention import keep_reasons
from bench.run.schedule import Group, order_seed, schedule
from bench.spec.prompts import Prompt
from bench.spec.sweep import EXECUTION_AXES, Cell, ModelSpec, SweepSpec
from bench.store.files import atomic_target
from bench.store.layout import AUDIO_DIR, audio_filename

# 3: one call runs a group in interleaved rounds (order_seed), audio stays on the Volume.
PAYLOAD_VERSION = 3

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
#: Only in call results whose kept WAV waits on the outputs Volume (a path relative to
#: its root, inside the call's journal); popped by the orchestrator, which reads it.
VOLUME_AUDIO_FIELD = "audio_on_volume"


@runtime_checkable
class RegionPinned(Protocol):
    """A chunk dispatcher that pins its containers to a Modal region."""

    region: str | None


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
        # The rounds' shuffle seed, as the local backend takes it: same spec, same order.
        "order_seed": order_seed(spec.hash),
        "repeats": spec.measure.repeats,
        "seeds": list(spec.measure.seeds),
        "keep_audio": spec.measure.keep_audio,
        "audio_sample": spec.modal.audio_sample,
        "audio_dir": audio_dir,
        # The worker's region pin: chunk containers it starts are pinned there too.
        "region": spec.modal.region,
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
    order_seed: int
    repeats: int
    seeds: list[int]
    keep_audio: bool
    audio_sample: float | None
    audio_dir: str | None
    prompts: list[Prompt]
    cells: dict[str, Cell]
    region: str | None = None


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
                   order_seed=data["order_seed"], repeats=data["repeats"], seeds=list(data["seeds"]),
                   keep_audio=data["keep_audio"], audio_sample=data["audio_sample"],
                   audio_dir=data["audio_dir"], prompts=prompts,
                   cells={row["id"]: _cell_from_dict(row) for row in data["cells"]},
                   region=data.get("region"))


# --------------------------------------------------------------------------- cell runner


@dataclass
class CellRunner:
    """One container's worker: the loaded model plus its start-up figures.

    ``volume_root`` is where the outputs Volume is mounted (journals and waiting WAVs go
    there); without one (in-process use) a scratch folder stands in for it.
    """

    params: str
    container_started_at: float = field(default_factory=time.time)
    enter_started_at: float = field(default_factory=time.time)
    loaded_at: float = 0.0
    calls: int = 0
    container_id: str = field(default_factory=lambda: os.environ.get("MODAL_TASK_ID", "local"))
    region: str | None = field(default_factory=lambda: os.environ.get("MODAL_REGION"))
    volume_root: Path | None = None

    def __post_init__(self) -> None:
        from bench.run.worker import Worker

        data = json.loads(self.params)
        self.model = ModelSpec(**data["model"])
        self.worker = Worker(self.model, long_text=data["long_text"])
        self.scratch = Path(tempfile.mkdtemp(prefix="echo-bench-scratch-"))
        self.volume = self.volume_root if self.volume_root is not None else self.scratch / "volume"

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
            spawned_at: float, commit: Callable[[], None] | None = None, *,
            group_index: int = 0, call_key: str | None = None) -> list[dict[str, Any]]:
        """Run the pending generations of ``cell_ids`` (cells sharing a pipeline) as one
        group in interleaved rounds; returns their records, each key once.

        ``call_key`` names the call's journal on the Volume: an earlier attempt of the same
        input left its finished records there, and this attempt runs only the steps they
        lack, keeping the rounds and positions of the first attempt. ``commit`` (the
        Volume's) makes each journaled generation, and the audio placed at the end,
        visible to a restarted container and to the orchestrator. ``group_index`` is the
        group's place in the sweep's order (``order_group``).
        """
        from echo_tts.audio import wav_bytes

        call_started_at = time.time()
        payload = decode_payload(spec_json, self.scratch / "speakers")
        if asdict(payload.model) != asdict(self.model):
            raise UserError("payload model differs from the worker's; pass the same spec to both")
        self.worker.long_text = payload.long_text
        dispatcher = self.worker.chunk_dispatcher
        if isinstance(dispatcher, RegionPinned):  # chunk containers go where we run
            dispatcher.region = payload.region
        group = self._group(payload, cell_ids, set(done_keys), group_index)
        journal = CallJournal(self.volume, call_key or uuid.uuid4().hex, commit)
        journal.begin_attempt(self.container_id)
        earlier = journal.records()
        call = self.calls
        self.calls += 1
        base = {**self.timing(call, spawned_at, call_started_at),
                "container_id": self.container_id, "container_call": call,
                "region": self.region}
        records = list(earlier)
        first_start: list[float] = []  # when this attempt's first timed generation began

        def sink(record: dict[str, Any], audio: Any) -> None:
            if not first_start:
                first_start.append(time.time() - float(record.get("wall_seconds") or 0.0))
            record.update(base, first_call_overhead_seconds=first_start[0] - call_started_at)
            ok_audio = record["status"] == "ok" and audio is not None
            journal.add(record, wav_bytes(audio) if ok_audio else None)
            records.append(record)

        if group is not None:
            remaining = _without(group, {r["key"] for r in earlier})
            if remaining.steps:
                self.worker.run_group(remaining, payload.warmup, sink)
        self._place_audio(payload, records, journal)
        if commit is not None:
            commit()
        return records

    @staticmethod
    def _group(payload: Payload, cell_ids: list[str], done: set[str],
               index: int) -> Group | None:
        """The call's group, as the local backend would schedule the same pending work
        (None when nothing is pending)."""
        from bench.run.worker import plan

        unknown = [c for c in cell_ids if c not in payload.cells]
        if unknown:
            raise UserError(f"cells {unknown} are not in the payload")
        work = {payload.cells[c]: [g for g in plan([payload.cells[c]], payload.prompts,
                                                   payload.seeds, payload.repeats)
                                   if g.key not in done]
                for c in cell_ids}
        groups = schedule(work, seed=payload.order_seed)
        if len(groups) > 1:
            raise UserError(f"cells {cell_ids} need different pipelines; one call runs one "
                            "group of cells that share a loaded pipeline")
        if not groups:
            return None
        group = groups[0]
        return Group(index, group.cells, tuple(replace(s, group=index) for s in group.steps))

    @staticmethod
    def _place_audio(payload: Payload, records: list[dict[str, Any]],
                     journal: CallJournal) -> None:
        """Keep each record's WAV where the payload says (or drop it), and say why.

        Retention looks at a whole cell (its outliers), so it runs once all the group's
        records are in. Kept WAVs are copied, not moved: a restart of this input after
        the copy still finds them in the journal and places them again.
        """
        fraction = payload.audio_sample if payload.keep_audio else 0.0
        by_cell: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            by_cell.setdefault(record["cell_id"], []).append(record)
        for cell_records in by_cell.values():
            reasons = keep_reasons(cell_records, fraction)
            for record, reason in zip(cell_records, reasons, strict=True):
                wav = journal.wav(record["key"])
                exists = record["status"] == "ok" and wav.is_file()
                keep = payload.keep_audio and reason is not None and exists
                record["audio_kept"] = reason if keep else None
                if not exists:
                    continue
                if keep and payload.audio_dir is None:
                    record[VOLUME_AUDIO_FIELD] = journal.relative_wav(record["key"])
                elif keep:
                    name = audio_filename(record["key"])  # the name the run store uses
                    target = Path(payload.audio_dir or "") / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_target(target) as tmp:
                        shutil.copyfile(wav, tmp)
                    record["audio_path"] = f"{AUDIO_DIR}/{name}"
                else:
                    wav.unlink()


def _without(group: Group, finished: set[str]) -> Group:
    """``group`` less the steps an earlier attempt finished: the rest keep their rounds
    and positions, and the group its cells (it was, and stays, interleaved)."""
    return replace(group, steps=tuple(s for s in group.steps if s.gen.key not in finished))


# In-process runners by model parameters: a second local call reuses the loaded model,
# as a warm container would. One call at a time, as in a container that serves one
# input at a time (callers may wait on several calls from threads).
_LOCAL_RUNNERS: dict[str, CellRunner] = {}
_LOCAL_LOCK = threading.Lock()
_LOCAL_VOLUME: list[Path] = []


def local_volume() -> Path:
    """The folder standing in for the outputs Volume of in-process calls (made once)."""
    if not _LOCAL_VOLUME:
        _LOCAL_VOLUME.append(Path(tempfile.mkdtemp(prefix="echo-bench-local-volume-")))
    return _LOCAL_VOLUME[0]


def run_cells_local(spec_json: str, cell_ids: list[str], done_keys: list[str],
                    spawned_at: float | None = None,
                    commit: Callable[[], None] | None = None, *, group_index: int = 0,
                    call_key: str | None = None,
                    volume_root: Path | None = None) -> list[dict[str, Any]]:
    """What ``BenchWorker.run_cells`` does, in this process (tests, debugging); the
    Volume is ``volume_root`` (default :func:`local_volume`)."""
    params = json.dumps(json.loads(spec_json)["model"], sort_keys=True)
    root = volume_root if volume_root is not None else local_volume()
    with _LOCAL_LOCK:
        runner = _LOCAL_RUNNERS.get(params)
        if runner is None:
            runner = _LOCAL_RUNNERS[params] = CellRunner(params)
            runner.load()
        runner.volume = root
        return runner.run(spec_json, cell_ids, done_keys,
                          time.time() if spawned_at is None else spawned_at, commit,
                          group_index=group_index, call_key=call_key)


def forget_local_runners() -> None:
    """Drop the in-process runners: the next call starts a cold "container" (a restart)."""
    with _LOCAL_LOCK:
        _LOCAL_RUNNERS.clear()
