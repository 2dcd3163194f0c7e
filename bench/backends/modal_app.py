"""The Modal app: image, volumes, the GPU classes, weight prefetch and the scheduled runs.

This module owns every Modal object; orchestration (:mod:`bench.backends.modal_orchestrator`,
:mod:`bench.backends.modal_nightly`) is plain code that receives these objects, and the
CLI imports both. Nothing imports this module back (no import circle).

Importing it builds Modal *descriptions* only (an image recipe, volume and secret
references by name, schedules); nothing contacts Modal until a command runs the app
(``modal run`` / ``modal deploy`` / ``app.run()``), so it imports offline and without
credentials, in a checkout, an installed package or the container alike.

What runs where:

* ``BenchWorker`` (GPU; one container pool per GPU type, ``max_containers=1`` so each
  type loads the model once): ``@modal.enter`` loads the pipeline, ``run_cells`` runs
  one group of cells that share it, in interleaved rounds
  (:class:`~bench.backends.modal_cells.CellRunner`). The outputs Volume is mounted: each
  call journals its finished generations there (a restarted input continues), and a
  nightly worker writes its kept WAVs straight into the run.
* ``Transcriber`` (GPU, same image): Whisper from the whisper-cache Volume, used by the
  CI gate (``echo-bench gate --backend modal``) so the runner never loads large-v3.
* ``prefetch`` (CPU): downloads the Echo-TTS, codec and Whisper weights and the SIM/MOS
  scoring models (WavLM-ECAPA, UTMOS22 strong) into the cache volumes and commits them,
  so workers never download at start-up.
* ``nightly`` (CPU, cron ``0 3 * * 1-6`` UTC) runs the canary spec, ``weekly`` (``0 3 * * 0``)
  the full grid; both orchestrate from inside Modal, non-preemptible, one at a time,
  and resume the night's run after a restart (:mod:`bench.backends.modal_nightly`), then
  ``score_and_report`` (GPU) scores the run and renders its report on the Volume.

This module deliberately has no ``from __future__ import annotations``: Modal reads the
type of ``modal.parameter()`` fields at class-definition time and needs real types.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import modal

from bench.backends import modal_parallel
from bench.backends.modal_cells import CellRunner, container_started_at
from bench.backends.modal_parallel import (
    MAX_CHUNK_CONTAINERS,
    ModalChunkDispatcher,
    modal_spawner,
)
from bench.spec.gpus import DEFAULT_GPU

APP_NAME = "echo-bench"
HF_CACHE_DIR = "/cache/hf"
WHISPER_CACHE_DIR = "/cache/whisper"  # = $XDG_CACHE_HOME/whisper, Whisper's default root
# The scoring models folder ($ECHO_BENCH_MODELS, bench.scoring.models) on the same Volume.
MODELS_DIR = f"{WHISPER_CACHE_DIR}/echo-bench-models"
# Scoring models `prefetch` puts there: what the scheduled specs' "when present" SIM and
# UTMOS choices look for (bench.scoring.quality).
SCORING_MODELS = ("wavlm-ecapa", "utmos22-strong")
OUTPUTS_DIR = "/outputs"
OUTPUTS_RUNS = f"{OUTPUTS_DIR}/runs"
HF_CACHE_VOLUME = "echo-bench-hf-cache"
WHISPER_CACHE_VOLUME = "echo-bench-whisper-cache"
OUTPUTS_VOLUME = "echo-bench-outputs"
# modal.Cron's timezone defaults to "UTC". The full grid runs on Sundays instead of the
# canary, so no night pays for both.
NIGHTLY_CRON = "0 3 * * 1-6"
WEEKLY_CRON = "0 3 * * 0"
NIGHTLY_SPEC = "nightly"
WEEKLY_SPEC = "weekly"
# One call runs one group: every cell of a GPU type that shares a loaded pipeline (the
# weekly grid's largest is hours), so the limit is Modal's longest (24 h). A restart
# resumes from the call's journal, so a long call loses at most one generation.
WORKER_TIMEOUT_S = 24 * 60 * 60
# A worker that crashes (not preempted: Modal restarts those by itself) gets one more
# attempt on the same input, which continues from the journal; a second crash fails
# the group's remaining generations.
WORKER_RETRIES = 1
# The Transcriber and chunk containers serve short calls (a batch, a chunk): an hour.
CALL_TIMEOUT_S = 60 * 60
# Modal's longest function timeout (24 h); the weekly grid takes hours.
NIGHTLY_TIMEOUT_S = 24 * 60 * 60
# Keep a worker warm between calls of a sweep, so a GPU type pays its cold start once.
WORKER_SCALEDOWN_S = 5 * 60
# Name of an optional Modal secret holding HF_TOKEN (the official weights are public, so
# it is off unless ECHO_BENCH_HF_SECRET names one when deploying / running the app).
HF_SECRET_ENV = "ECHO_BENCH_HF_SECRET"
WHISPER_MODEL = "large-v3"
# The uv that wrote uv.lock (pinned in the dev extra too): the image installs with it.
UV_VERSION = "0.13.9"
# The packages live in /root in the container; bench/run/measure.py hashes
# Path(bench.__file__).parents[1] / "uv.lock", so the lock goes to /root/uv.lock.
REMOTE_ROOT = "/root"

# --------------------------------------------------------------------------- image


@dataclass(frozen=True)
class ImageRecipe:
    """Where the image's dependency set comes from: a folder holding pyproject.toml and
    uv.lock (``project_dir``), installed with ``uv sync --locked`` (never re-resolved)."""

    project_dir: Path
    uv_version: str = UV_VERSION

    @property
    def lock(self) -> Path:
        return self.project_dir / "uv.lock"

    @property
    def remote_lock(self) -> str:
        return f"{REMOTE_ROOT}/uv.lock"


def find_project_dir(module_file: Path = Path(__file__), cwd: Path | None = None) -> Path:
    """The checkout holding uv.lock: beside the packages (a checkout or an editable
    install), else the working directory (an installed echo-bench run from its checkout).

    Only needed to *build* the image; a container importing this module never builds,
    so a missing lock is reported when building (by :func:`check_recipe`), not here.
    """
    beside = module_file.resolve().parents[2]
    for folder in (beside, (cwd or Path.cwd()).resolve()):
        if (folder / "uv.lock").is_file() and (folder / "pyproject.toml").is_file():
            return folder
    return beside


def check_recipe(recipe: ImageRecipe) -> None:
    """Refuse to build without the lock: one line saying where to run from."""
    from bench.core.errors import UserError

    if not recipe.lock.is_file():
        raise UserError(f"no uv.lock in {recipe.project_dir}: the Modal image installs from the "
                        "committed lock; run from an echo-bench checkout (cd into it)")


def build_image(recipe: ImageRecipe, base: Any = None) -> Any:
    """Debian slim + Python 3.11 + the locked dependencies (``uv sync --locked``, no dev
    extra, the project itself not installed) + the lock file at /root/uv.lock + our source
    (mounted last: Modal requires mount layers after every build step, and mounting means
    editing the code does not rebuild the image). ``base`` replaces
    ``modal.Image.debian_slim`` in tests, to record the recipe."""
    image = base if base is not None else modal.Image.debian_slim(python_version="3.11")
    return (
        image
        # frozen=False + --locked: uv checks the lock matches pyproject.toml and fails the
        # build rather than re-resolving (frozen=True would skip that check).
        # The nightly and gate sweeps give prompts speaker references from the built-in
        # espeak-ng speaker set (bench.spec.speakers), made where the orchestrator runs.
        .apt_install("espeak-ng")
        .uv_sync(str(recipe.project_dir), frozen=False, extra_options="--locked",
                 uv_version=recipe.uv_version)
        .env({
            "HF_HOME": HF_CACHE_DIR,
            # Whisper's default download root is $XDG_CACHE_HOME/whisper = the volume.
            "XDG_CACHE_HOME": "/cache",
            "ECHO_BENCH_WHISPER_CACHE": WHISPER_CACHE_DIR,
            "ECHO_BENCH_MODELS": MODELS_DIR,
            "PYTHONUNBUFFERED": "1",
        })
        .add_local_file(recipe.lock, recipe.remote_lock)
        .add_local_python_source("echo_tts", "bench", ignore=_ignore_source)
    )


def _ignore_source(path: Path) -> bool:
    # Ship the packages' data (sweeps/*.toml, data/*, report templates) as well as their
    # .py files; Modal's default would keep .py files only.
    return "__pycache__" in path.parts or path.suffix == ".pyc"


IMAGE_RECIPE = ImageRecipe(find_project_dir())
image = build_image(IMAGE_RECIPE)
hf_cache = modal.Volume.from_name(HF_CACHE_VOLUME, create_if_missing=True)
whisper_cache = modal.Volume.from_name(WHISPER_CACHE_VOLUME, create_if_missing=True)
outputs = modal.Volume.from_name(OUTPUTS_VOLUME, create_if_missing=True)


def _volumes(*, with_outputs: bool = False
             ) -> dict[str | PurePosixPath, modal.Volume | modal.CloudBucketMount]:
    """Mounts: the two weight caches, plus the outputs volume where runs live."""
    mounts: dict[str | PurePosixPath, modal.Volume | modal.CloudBucketMount] = {
        HF_CACHE_DIR: hf_cache, WHISPER_CACHE_DIR: whisper_cache}
    if with_outputs:
        mounts[OUTPUTS_DIR] = outputs
    return mounts


def _secrets() -> list[modal.Secret]:
    name = os.environ.get(HF_SECRET_ENV)
    return [modal.Secret.from_name(name, required_keys=["HF_TOKEN"])] if name else []


app = modal.App(APP_NAME)


# --------------------------------------------------------------------------- GPU classes


@app.cls(image=image, gpu=DEFAULT_GPU, volumes=_volumes(with_outputs=True), secrets=_secrets(),
         timeout=WORKER_TIMEOUT_S, retries=WORKER_RETRIES, max_containers=1,
         scaledown_window=WORKER_SCALEDOWN_S)
class BenchWorker:
    """A GPU container that loads the model once and runs groups of cells (one call per
    group of cells that share a loaded pipeline)."""

    params: str = modal.parameter()  # model_params(...) JSON
    runner: CellRunner = modal.parameter(init=False)  # set by load(), typed for mypy

    @modal.enter()
    def load(self) -> None:
        entered = time.time()
        # The container's own start (PID 1), not this module's import: image pull and
        # boot happen before Python starts.
        started = container_started_at() or entered
        self.runner = CellRunner(self.params, container_started_at=started,
                                 enter_started_at=entered, volume_root=Path(OUTPUTS_DIR))
        if os.environ.get("MODAL_TASK_ID"):  # in a container: chunk_workers cells fan out
            self.runner.worker.chunk_dispatcher = ModalChunkDispatcher(
                self.params, modal_spawner(ChunkWorker), DEFAULT_GPU)
        self.runner.load()

    @modal.method()
    def run_cells(self, spec_json: str, cell_ids: list[str], done_keys: list[str],
                  spawned_at: float, group_index: int, call_key: str) -> list[dict[str, Any]]:
        # A warm container must see the run folder the orchestrator created since, and a
        # restarted input the journal its first attempt committed.
        outputs.reload()
        return self.runner.run(spec_json, cell_ids, done_keys, spawned_at, commit=outputs.commit,
                               group_index=group_index, call_key=call_key)


@app.cls(image=image, gpu=DEFAULT_GPU, volumes=_volumes(), timeout=CALL_TIMEOUT_S,
         max_containers=1, scaledown_window=WORKER_SCALEDOWN_S)
class Transcriber:
    """Whisper on a GPU, weights from the whisper-cache Volume (filled by ``prefetch``)."""

    asr: str = modal.parameter(default=WHISPER_MODEL)
    model: Any = modal.parameter(init=False)

    @modal.enter()
    def load(self) -> None:
        from bench.scoring.run_scoring import make_asr

        # "auto" is the GPU in the container (and the CPU in tests, under .local()).
        self.model = make_asr(self.asr, "auto", download_root=WHISPER_CACHE_DIR)

    @modal.method()
    def describe(self) -> tuple[str, bool]:
        """The ASR's cache identity and whether its weights are random."""
        return self.model.name, bool(self.model.is_random)

    @modal.method()
    def transcribe(self, audios: list[bytes]) -> list[str]:
        """Transcripts of 16 kHz mono float32 waveforms sent as raw bytes."""
        from bench.scoring.remote_asr import decode_audio

        return list(self.model.transcribe([decode_audio(a) for a in audios]))


# Chunk containers for chunk_workers cells (bench.backends.modal_parallel).
ChunkWorker = app.cls(image=image, gpu=DEFAULT_GPU, volumes=_volumes(), secrets=_secrets(),
                      timeout=CALL_TIMEOUT_S, max_containers=MAX_CHUNK_CONTAINERS,
                      scaledown_window=WORKER_SCALEDOWN_S)(modal_parallel.ChunkWorker)


# --------------------------------------------------------------------------- CPU functions


@app.function(image=image, volumes=_volumes(), secrets=_secrets(), timeout=2 * 60 * 60,
              memory=16 * 1024)
def prefetch() -> None:
    """Download every weight file a sweep needs into the cache volumes and commit them:
    Echo-TTS, its codec and PCA, Whisper, and the SIM/MOS scoring models (skipped when
    already there, so running it again only fills what is missing)."""
    import whisper
    from huggingface_hub import hf_hub_download

    from echo_tts.autoencoder import CODEC_FILENAME, DEFAULT_CODEC_REPO, PCA_FILENAME
    from echo_tts.weights import DEFAULT_MODEL_REPO, MODEL_FILENAME

    prefetch_scoring_models(Path(MODELS_DIR))

    for repo, filename in ((DEFAULT_MODEL_REPO, MODEL_FILENAME),
                           (DEFAULT_MODEL_REPO, PCA_FILENAME),
                           (DEFAULT_CODEC_REPO, CODEC_FILENAME)):
        print(f"{repo}/{filename} -> {hf_hub_download(repo, filename)}")
    whisper.load_model(WHISPER_MODEL, device="cpu", download_root=WHISPER_CACHE_DIR)
    print(f"whisper {WHISPER_MODEL} -> {WHISPER_CACHE_DIR}")
    hf_cache.commit()
    whisper_cache.commit()


def prefetch_scoring_models(root: Path, fetch: Any = None) -> list[Path]:
    """Put :data:`SCORING_MODELS` into ``root`` (``fetch``: bench.scoring.models.fetch_model,
    replaced in tests); a model already there is kept. Returns their paths."""
    from bench.scoring.models import MODEL_FILES, fetch_model

    fetch = fetch or fetch_model
    paths = []
    for name in SCORING_MODELS:
        path = root / MODEL_FILES[name].filename
        if path.is_file():
            print(f"{name}: already in {root}")
        else:
            path = fetch(name, root)
            print(f"{name} -> {path}")
        paths.append(path)
    return paths


@app.function(image=image, volumes=_volumes(with_outputs=True), gpu=DEFAULT_GPU,
              timeout=6 * 60 * 60, max_containers=1)
def score_and_report(run_id: str) -> None:
    """Score a run on the outputs volume (Whisper on a GPU) and render its report.

    Runs after the orchestrator has finished with the run, so it is the run's one
    writer; scoring is resumable, so running it twice costs only what is left. The
    quality metrics' models (SIM, MOS) are read from the whisper-cache Volume too."""
    from bench.report import render_run_report
    from bench.scoring.run_scoring import score_run

    outputs.reload()
    run_dir = Path(OUTPUTS_RUNS) / run_id
    _, outcome, quality, _ = score_run(run_dir, download_root=WHISPER_CACHE_DIR, lock=False,
                                       models_root=MODELS_DIR)
    print(f"scored {outcome.scored} generations of {run_id}")
    if quality.note:
        print(quality.note)
    for name, message in quality.missing.items():
        print(f"{name} not scored: {message}")
    print(f"report: {render_run_report(run_dir)}")
    outputs.commit()


def look_scorer(spec: Any) -> Any:
    """For a ``[history]`` spec: WER of what each look ran, through the GPU
    ``Transcriber``, written by the orchestrator (the run's one writer) before the look's
    decision; SIM and MOS wait for ``score_and_report`` (their models load on a GPU).
    None for a spec that is not scored or not history-aware."""
    if spec.history is None or not spec.measure.score:
        return None
    from bench.scoring.protocols import get_protocol
    from bench.scoring.remote_asr import RemoteASR
    from bench.scoring.run_scoring import score_records

    asr: list[RemoteASR] = []

    def score(store: Any) -> None:
        if not asr:  # asked of the remote side once, when the first look is done
            asr.append(RemoteASR(Transcriber(asr=spec.measure.asr)))  # type: ignore[call-arg, arg-type]
        score_records(store, asr[0], protocol=get_protocol(spec.measure.wer_protocol))

    return score


def scheduled_run(spec_name: str) -> str:
    """The body of ``nightly``/``weekly``: run or resume tonight's run on the Volume,
    score it, record its billed cost as far as Modal's report has it (provisional), and
    settle the billed cost of earlier runs now final."""
    from datetime import UTC, datetime

    from bench.backends.dashboard_publish import publish_dashboard
    from bench.backends.modal_nightly import retain, run_on_volume
    from bench.backends.modal_orchestrator import ModalWorkers
    from bench.spec.parser import load_spec
    from bench.spec.shipped import resolve_spec_path

    spec = load_spec(resolve_spec_path(spec_name), allow_large=True)
    workers = ModalWorkers(BenchWorker, region=spec.modal.region, volume=outputs)
    run_id, _ = run_on_volume(spec, root=Path(OUTPUTS_RUNS), volume=outputs, workers=workers,
                              score_look=look_scorer(spec))
    score_and_report.remote(run_id)
    record_billing(run_id)
    settle_billing()
    kept = retain(Path(OUTPUTS_RUNS), Path(OUTPUTS_DIR), outputs, datetime.now(UTC))
    print(f"volume retention: {kept.files_packed} WAV(s) of {kept.runs_packed} old run(s) "
          f"packed, {kept.journals_removed} stale journal(s) removed")
    publish_dashboard(Path(OUTPUTS_RUNS), outputs)  # the trend with tonight in it
    return run_id


def billing_report() -> Any:
    """The workspace's billing report (``Workspace.billing.report``, modal >= 1.5.4)."""
    return modal.Workspace.from_context().billing.report


def record_billing(run_id: str, now: Any = None) -> str:
    """Billed cost of the run's hours into its manifest (``bench.backends.billing``):
    provisional until Modal's figures for its last hour are settled, then final.
    Returns what was recorded, in a line."""
    from datetime import UTC, datetime

    from bench.backends.billing import billed_cost
    from bench.store.run_store import RunStore

    now = now or datetime.now(UTC)
    from bench.core.errors import UserError

    run_dir = Path(OUTPUTS_RUNS) / run_id
    outputs.reload()
    if not (run_dir / "manifest.json").is_file():
        raise UserError(f"no run {run_id} on the outputs volume; run ids are the folders "
                        "under runs/ there (`echo-bench pull` fetches them)")
    with RunStore.open(run_dir, lock=False) as store:
        started = datetime.fromisoformat(str(store.manifest["started_at"]))
        finished = store.manifest.get("finished_at")
        end = datetime.fromisoformat(str(finished)) if finished else now
        cost = dict(store.manifest.get("cost") or {})
        if cost.get("billed_status") == "final":
            return f"{run_id}: billed {cost.get('billed_usd')} USD (final already)"
        try:
            billed = billed_cost(billing_report(), str(app.app_id), started, end, now)
        except Exception as err:  # no permission / no data yet: the estimate stays alone
            line = (f"{run_id}: billing report unavailable ({type(err).__name__}: {err}); "
                    "the run keeps the estimate only")
            print(line)
            return line
        cost.update(billed)
        store.update_manifest(cost=cost)
    outputs.commit()
    line = f"{run_id}: billed {billed['billed_usd']} USD ({billed['billed_status']})"
    print(line)
    return line


#: Runs started this many days back are looked at for a provisional billed cost to settle.
SETTLE_LOOKBACK_DAYS = 14


def settle_billing(now: Any = None) -> list[str]:
    """Read again the billed cost of recent runs still provisional and due (their last
    hour settled); what was recorded, a line per run."""
    from datetime import UTC, datetime, timedelta

    from bench.store.files import read_json
    from bench.store.history import list_runs
    from bench.store.layout import MANIFEST

    now = now or datetime.now(UTC)
    since = (now - timedelta(days=SETTLE_LOOKBACK_DAYS)).isoformat()
    lines = []
    for entry in list_runs(OUTPUTS_RUNS):
        if str(entry.get("started_at") or "") < since:
            continue
        manifest = Path(OUTPUTS_RUNS) / str(entry.get("path") or entry["run_id"]) / MANIFEST
        cost = (read_json(manifest).get("cost") or {}) if manifest.is_file() else {}
        due = str(cost.get("billed_final_after") or "9999")
        if cost.get("billed_status") == "provisional" and due <= now.isoformat():
            lines.append(record_billing(str(entry["run_id"]), now=now))
    return lines


_SCHEDULED = dict(image=image, volumes={OUTPUTS_DIR: outputs}, timeout=NIGHTLY_TIMEOUT_S,
                  # The orchestrator waits for hours: Modal's non-preemptible placement
                  # (3x the CPU/memory price of a tiny container) avoids most restarts,
                  # and the run resumes after any that still happen.
                  nonpreemptible=True, max_containers=1, retries=2)


@app.function(schedule=modal.Cron(NIGHTLY_CRON), **_SCHEDULED)
def nightly(spec: str = NIGHTLY_SPEC) -> str:
    """The nightly canary (``bench/sweeps/nightly.toml``); returns the run id."""
    return scheduled_run(spec)


@app.function(schedule=modal.Cron(WEEKLY_CRON), **_SCHEDULED)
def weekly(spec: str = WEEKLY_SPEC) -> str:
    """The full grid (``bench/sweeps/weekly.toml``); returns the run id."""
    return scheduled_run(spec)


@app.function(image=image, volumes={OUTPUTS_DIR: outputs}, timeout=10 * 60)
def billing(run_id: str) -> str:
    """``echo-bench modal billing RUN``: read the run's billed cost again (final once
    Modal's figures for its hours are settled); the line recorded."""
    return record_billing(run_id)
