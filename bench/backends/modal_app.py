"""The Modal app: image, volumes, the GPU worker class, weight prefetch and the nightly run.

Importing this module builds Modal *descriptions* only (an image recipe, volume and
secret references by name, a schedule); nothing contacts Modal until a command runs the
app (``modal run`` / ``modal deploy`` / ``app.run()``), so the module imports offline
and without credentials.

What runs where:

* ``BenchWorker`` (one container pool per GPU type, ``max_containers=1`` so each GPU
  type loads the model once): ``@modal.enter`` builds a :class:`~bench.worker.Worker`
  and loads the pipeline, ``run_cells`` runs the cells of one call. The work itself is
  :func:`run_cells_local`, a plain function the tests run in-process.
* ``prefetch`` (CPU): downloads the Echo-TTS, codec and Whisper weights into the cache
  volumes and commits them, so workers never download at start-up.
* ``nightly`` (CPU, cron ``0 3 * * *``, UTC: Modal's ``Cron`` default timezone): runs
  ``bench/sweeps/nightly.toml`` through :class:`~bench.backends.modal_orchestrator.ModalBackend`
  from inside Modal, copies the run into the outputs volume after every cell, then has
  ``score_and_report`` (on a GPU) score it (``bench.scoring.run_scoring``) and render
  its report (``bench.report.render_run_report``) on the volume.

Payload sent to a worker (``spec_json``, see :func:`encode_payload`): the model, the
per-cell settings, the prompts themselves (speaker clips inlined as base64, since the
container cannot see this machine's files), seeds, repeats and warm-up. Cells keep the
ids they have here, so record keys match a local run of the same spec.

This module deliberately has no ``from __future__ import annotations``: Modal reads the
type of ``modal.parameter()`` fields at class-definition time and needs real types.
"""

import time

# The first thing a fresh container does is import this module, so this is the closest
# cheap proxy for "container started" when measuring cold start.
_IMPORTED_AT = time.time()

import base64  # noqa: E402  (after the timestamp, on purpose)
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import tomllib  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path, PurePosixPath  # noqa: E402
from typing import Any  # noqa: E402

import modal  # noqa: E402

from bench.backends import modal_parallel  # noqa: E402
from bench.backends.modal_parallel import (  # noqa: E402
    MAX_CHUNK_CONTAINERS,
    ModalChunkDispatcher,
    modal_spawner,
)
from bench.errors import UserError  # noqa: E402
from bench.prompts import Prompt  # noqa: E402
from bench.spec import (  # noqa: E402
    EXECUTION_AXES,
    MAX_GPU_COUNT,
    MODAL_GPUS,
    Cell,
    ModelSpec,
    SweepSpec,
)

APP_NAME = "echo-bench"
DEFAULT_GPU = "L4"
HF_CACHE_DIR = "/cache/hf"
WHISPER_CACHE_DIR = "/cache/whisper"  # = $XDG_CACHE_HOME/whisper, Whisper's default root
OUTPUTS_DIR = "/outputs"
OUTPUTS_RUNS = f"{OUTPUTS_DIR}/runs"
HF_CACHE_VOLUME = "echo-bench-hf-cache"
WHISPER_CACHE_VOLUME = "echo-bench-whisper-cache"
OUTPUTS_VOLUME = "echo-bench-outputs"
NIGHTLY_CRON = "0 3 * * *"  # 03:00 UTC; modal.Cron's timezone defaults to "UTC"
NIGHTLY_SPEC = "nightly"
# One call runs one cell (every prompt x seed x repeat of it); 40 prompts x 2 seeds of
# two-chunk passages at 60 steps on a T4 stays well inside an hour.
WORKER_TIMEOUT_S = 60 * 60
# Modal's longest function timeout (24 h); the nightly grid takes hours.
NIGHTLY_TIMEOUT_S = 24 * 60 * 60
# Keep a worker warm between calls of a sweep, so a GPU type pays its cold start once.
WORKER_SCALEDOWN_S = 5 * 60
# Name of an optional Modal secret holding HF_TOKEN (the official weights are public, so
# it is off unless ECHO_BENCH_HF_SECRET names one when deploying / running the app).
HF_SECRET_ENV = "ECHO_BENCH_HF_SECRET"
WHISPER_MODEL = "large-v3"

#: Fields a Modal worker adds to every record, on top of the local backend's.
MODAL_RECORD_FIELDS: tuple[str, ...] = (
    "audio_wav_b64",        # WAV bytes (PCM 16-bit, 44.1 kHz), base64; only when kept
    "cold_start_seconds",   # container start (app import) -> model loaded
    "model_load_seconds",   # the model-loading part of the cold start
    "container_id",         # MODAL_TASK_ID of the container ("local" in-process)
    "container_call",       # 0 for the first call a container served (it paid the cold start)
)
PAYLOAD_VERSION = 1

# Where this module's project keeps its dependency list. In a container the file is
# mounted at /root/pyproject.toml, the same relative place (see ``image`` below).
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


# --------------------------------------------------------------------------- image


def project_dependencies(pyproject: Path = PYPROJECT) -> tuple[str, ...]:
    """``[project].dependencies`` of pyproject.toml: the image installs exactly these.

    An installed (non-editable) echo-bench has no pyproject.toml beside it; then the
    same list comes from the installed distribution's metadata (extras left out).
    """
    if pyproject.is_file():
        with pyproject.open("rb") as f:
            deps = tomllib.load(f)["project"]["dependencies"]
        return tuple(str(d) for d in deps)
    try:
        requires = metadata.requires("echo-bench") or []
    except metadata.PackageNotFoundError:
        raise UserError(f"cannot find echo-bench's dependency list: no {pyproject} and no "
                        "installed echo-bench distribution") from None
    return tuple(r for r in requires if "extra ==" not in r)


IMAGE_PACKAGES: tuple[str, ...] = project_dependencies()


def _ignore_source(path: Path) -> bool:
    # Ship the packages' data (sweeps/*.toml, data/*, report templates) as well as their
    # .py files; Modal's default would keep .py files only.
    return "__pycache__" in path.parts or path.suffix == ".pyc"


def build_image(packages: tuple[str, ...] = IMAGE_PACKAGES) -> modal.Image:
    """Debian slim + Python 3.11 + the project's dependencies + our source (mounted last:
    Modal requires mount layers after every build step, and mounting means editing the
    code does not rebuild the image)."""
    img = (
        modal.Image.debian_slim(python_version="3.11")
        # The nightly and gate sweeps give prompts speaker references from the built-in
        # espeak-ng speaker set (bench.speakers), made where the sweep is launched.
        .apt_install("espeak-ng")
        .pip_install(*packages)
        .env({
            "HF_HOME": HF_CACHE_DIR,
            # Whisper's default download root is $XDG_CACHE_HOME/whisper = the volume.
            "XDG_CACHE_HOME": "/cache",
            "PYTHONUNBUFFERED": "1",
        })
    )
    if PYPROJECT.is_file():
        img = img.add_local_file(PYPROJECT, "/root/pyproject.toml")
    return img.add_local_python_source("echo_tts", "bench", ignore=_ignore_source)


image = build_image()
hf_cache = modal.Volume.from_name(HF_CACHE_VOLUME, create_if_missing=True)
whisper_cache = modal.Volume.from_name(WHISPER_CACHE_VOLUME, create_if_missing=True)
outputs = modal.Volume.from_name(OUTPUTS_VOLUME, create_if_missing=True)


def _volumes(*, with_outputs: bool = False
             ) -> dict[str | PurePosixPath, modal.Volume | modal.CloudBucketMount]:
    """Mounts: the two weight caches, plus the outputs volume for the nightly functions."""
    mounts: dict[str | PurePosixPath, modal.Volume | modal.CloudBucketMount] = {
        HF_CACHE_DIR: hf_cache, WHISPER_CACHE_DIR: whisper_cache}
    if with_outputs:
        mounts[OUTPUTS_DIR] = outputs
    return mounts


def _secrets() -> list[modal.Secret]:
    name = os.environ.get(HF_SECRET_ENV)
    return [modal.Secret.from_name(name, required_keys=["HF_TOKEN"])] if name else []


app = modal.App(APP_NAME)


# --------------------------------------------------------------------------- validation


def validate_gpu(gpu: str) -> str:
    """A Modal GPU string (``L4``, ``A100-80GB``, ``H100:2``), upper-cased; UserError if not.

    Checked here, before anything is sent: Modal itself only rejects an unknown type
    once the app is running (it exposes no list of types to check against).
    """
    name, _, count = gpu.strip().upper().partition(":")
    if name not in MODAL_GPUS:
        raise UserError(f"unknown Modal GPU type {gpu!r}; use one of {', '.join(MODAL_GPUS)} "
                        f"(optionally with :N for N GPUs, N <= {MAX_GPU_COUNT})")
    if count and not (count.isdigit() and 1 <= int(count) <= MAX_GPU_COUNT):
        raise UserError(f"bad GPU count in {gpu!r}; write e.g. {name}:2 (1 to {MAX_GPU_COUNT})")
    return f"{name}:{count}" if count else name


# --------------------------------------------------------------------------- payload


def model_params(model: ModelSpec, long_text: str) -> str:
    """The worker class parameter: what to load (one container pool per distinct value)."""
    return json.dumps({"model": asdict(model), "long_text": long_text}, sort_keys=True)


def encode_payload(spec: SweepSpec, prompts: list[Prompt], cells: list[Cell] | None = None) -> str:
    """The spec as a worker needs it (see the module docstring), as JSON text.

    ``cells`` limits the payload to those cells (default: all of the spec's).
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
                   keep_audio=data["keep_audio"], prompts=prompts,
                   cells={row["id"]: _cell_from_dict(row) for row in data["cells"]})


# --------------------------------------------------------------------------- cell runner


@dataclass
class CellRunner:
    """One container's worker: the loaded model plus its cold-start figures."""

    params: str
    started_at: float = field(default_factory=time.time)
    cold_start_seconds: float = 0.0
    model_load_seconds: float = 0.0
    calls: int = 0
    container_id: str = field(default_factory=lambda: os.environ.get("MODAL_TASK_ID", "local"))

    def __post_init__(self) -> None:
        from bench.worker import Worker

        data = json.loads(self.params)
        self.model = ModelSpec(**data["model"])
        self.worker = Worker(self.model, long_text=data["long_text"])
        self.scratch = Path(tempfile.mkdtemp(prefix="echo-bench-speakers-"))
        if os.environ.get("MODAL_TASK_ID"):  # in a container: chunk_workers cells fan out
            self.worker.chunk_dispatcher = ModalChunkDispatcher(
                self.params, modal_spawner(ChunkWorker), DEFAULT_GPU)

    def load(self) -> None:
        """Load the pipeline for the model's own dtype now (cells with another dtype load
        theirs on first use), and time it: this is the cold start the sweep pays."""
        from echo_tts.sampling import SamplerConfig

        start = time.time()
        self.worker.pipeline(Cell(id="preload", sampler=SamplerConfig(),
                                  dtype=self.model.dtype, compile=self.model.compile,
                                  codec_dtype=self.model.codec_dtype))
        loaded = time.time()
        self.model_load_seconds = loaded - start
        self.cold_start_seconds = loaded - self.started_at

    def run(self, spec_json: str, cell_ids: list[str], done_keys: list[str]) -> list[dict[str, Any]]:
        """Run the pending generations of ``cell_ids``; records with audio as base64."""
        from bench.worker import plan
        from echo_tts.audio import wav_bytes

        payload = decode_payload(spec_json, self.scratch)
        if asdict(payload.model) != asdict(self.model):
            raise UserError("payload model differs from the worker's; pass the same spec to both")
        self.worker.long_text = payload.long_text
        unknown = [c for c in cell_ids if c not in payload.cells]
        if unknown:
            raise UserError(f"cells {unknown} are not in the payload")
        done = set(done_keys)
        call = self.calls
        self.calls += 1
        records: list[dict[str, Any]] = []

        def sink(record: dict[str, Any], audio: Any) -> None:
            if record["status"] == "ok" and audio is not None and payload.keep_audio:
                record["audio_wav_b64"] = base64.b64encode(wav_bytes(audio)).decode("ascii")
            record.update(cold_start_seconds=self.cold_start_seconds,
                          model_load_seconds=self.model_load_seconds,
                          container_id=self.container_id, container_call=call)
            records.append(record)

        for cell_id in cell_ids:
            cell = payload.cells[cell_id]
            generations = [g for g in plan([cell], payload.prompts, payload.seeds, payload.repeats)
                           if g.key not in done]
            self.worker.run_cell(cell, generations, payload.warmup, sink)
        return records


# In-process runners by model parameters: a second local call reuses the loaded model,
# as a warm container would.
_LOCAL_RUNNERS: dict[str, CellRunner] = {}


def run_cells_local(spec_json: str, cell_ids: list[str], done_keys: list[str]) -> list[dict[str, Any]]:
    """What ``BenchWorker.run_cells`` does, in this process (tests, debugging)."""
    params = json.dumps(json.loads(spec_json)["model"], sort_keys=True)
    runner = _LOCAL_RUNNERS.get(params)
    if runner is None:
        runner = _LOCAL_RUNNERS[params] = CellRunner(params)
        runner.load()
    return runner.run(spec_json, cell_ids, done_keys)


# --------------------------------------------------------------------------- Modal objects


@app.cls(image=image, gpu=DEFAULT_GPU, volumes=_volumes(), secrets=_secrets(),
         timeout=WORKER_TIMEOUT_S, max_containers=1, scaledown_window=WORKER_SCALEDOWN_S)
class BenchWorker:
    """A GPU container that loads the model once and runs cells (one call per cell)."""

    params: str = modal.parameter()  # model_params(...) JSON
    runner: CellRunner = modal.parameter(init=False)  # set by load(), typed for mypy

    @modal.enter()
    def load(self) -> None:
        self.runner = CellRunner(self.params, started_at=_IMPORTED_AT)
        self.runner.load()

    @modal.method()
    def run_cells(self, spec_json: str, cell_ids: list[str], done_keys: list[str]
                  ) -> list[dict[str, Any]]:
        return self.runner.run(spec_json, cell_ids, done_keys)


# Chunk containers for chunk_workers cells (bench.backends.modal_parallel).
ChunkWorker = app.cls(image=image, gpu=DEFAULT_GPU, volumes=_volumes(), secrets=_secrets(),
                      timeout=WORKER_TIMEOUT_S, max_containers=MAX_CHUNK_CONTAINERS,
                      scaledown_window=WORKER_SCALEDOWN_S)(modal_parallel.ChunkWorker)


@app.function(image=image, volumes=_volumes(), secrets=_secrets(), timeout=2 * 60 * 60,
              memory=16 * 1024)
def prefetch() -> None:
    """Download every weight file a sweep needs into the cache volumes and commit them."""
    import whisper
    from huggingface_hub import hf_hub_download

    from echo_tts.autoencoder import CODEC_FILENAME, DEFAULT_CODEC_REPO, PCA_FILENAME
    from echo_tts.weights import DEFAULT_MODEL_REPO, MODEL_FILENAME

    for repo, filename in ((DEFAULT_MODEL_REPO, MODEL_FILENAME),
                           (DEFAULT_MODEL_REPO, PCA_FILENAME),
                           (DEFAULT_CODEC_REPO, CODEC_FILENAME)):
        print(f"{repo}/{filename} -> {hf_hub_download(repo, filename)}")
    whisper.load_model(WHISPER_MODEL, device="cpu", download_root=WHISPER_CACHE_DIR)
    print(f"whisper {WHISPER_MODEL} -> {WHISPER_CACHE_DIR}")
    hf_cache.commit()
    whisper_cache.commit()


@app.function(image=image, volumes=_volumes(with_outputs=True), gpu=DEFAULT_GPU,
              timeout=6 * 60 * 60)
def score_and_report(run_id: str) -> None:
    """Score a run on the outputs volume (Whisper on a GPU) and render its report."""
    outputs.reload()
    run_dir = Path(OUTPUTS_RUNS) / run_id
    score_hook(run_dir)
    report_hook(run_dir)
    outputs.commit()


@app.function(image=image, volumes={OUTPUTS_DIR: outputs}, schedule=modal.Cron(NIGHTLY_CRON),
              timeout=NIGHTLY_TIMEOUT_S)
def nightly() -> str:
    """The scheduled sweep: nightly.toml on Modal GPUs; returns the run id."""
    from bench.backends.modal_orchestrator import InAppWorkers, ModalBackend
    from bench.commands.sweep import resolve_spec_path
    from bench.runner import run_sweep
    from bench.spec import load_spec

    spec = load_spec(resolve_spec_path(NIGHTLY_SPEC), allow_large=True)
    # The run is written on the container's disk (the store locks files with flock, which
    # a volume need not honour) and copied to the volume after every cell.
    local_root = Path(tempfile.mkdtemp(prefix="echo-bench-runs-"))

    def after_cell(store: Any, cell: Cell, keys: list[str]) -> None:
        sync_tree(store.path, Path(OUTPUTS_RUNS) / store.path.name)
        outputs.commit()

    backend = ModalBackend(confirm=False, workers=InAppWorkers())
    outcome = run_sweep(spec, backend, root=local_root, after_cell=after_cell, progress=False)
    sync_tree(outcome.run_dir, Path(OUTPUTS_RUNS) / outcome.run_dir.name)
    outputs.commit()
    score_and_report.remote(outcome.run_dir.name)
    return outcome.run_dir.name


# --------------------------------------------------------------------------- hooks


def score_hook(run_dir: Path, whisper_root: str = WHISPER_CACHE_DIR) -> None:
    """Score a run's ok generations with Whisper (the spec's ``asr``, weights from the
    cache volume) and the spec's quality metrics (models in ``echo-bench-models`` on the
    same volume), then rebuild its parquet, as ``echo-bench score`` does."""
    from bench.scoring.run_scoring import score_run

    _, outcome, quality, _ = score_run(run_dir, download_root=whisper_root,
                                       models_root=f"{whisper_root}/echo-bench-models")
    print(f"scored {outcome.scored} generations of {run_dir.name}")
    for name, message in quality.missing.items():
        print(f"{name} not scored: {message}")


def report_hook(run_dir: Path) -> None:
    """Write ``<run_dir>/report.html``."""
    from bench.report import render_run_report

    print(f"report: {render_run_report(run_dir)}")


def sync_tree(src: Path, dst: Path) -> None:
    """Copy files of ``src`` to ``dst`` that are new or changed (by size and mtime), so
    copying a growing run after each cell costs only what changed; skips the lock."""
    for path in src.rglob("*"):
        if not path.is_file() or path.name == "lock":
            continue
        target = dst / path.relative_to(src)
        stat = path.stat()
        if target.exists():
            tstat = target.stat()
            if tstat.st_size == stat.st_size and tstat.st_mtime >= stat.st_mtime:
                continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
