"""The Modal app module, offline: it imports without credentials, its image installs the
project's dependencies, GPU names are checked, and the worker's cell code runs in-process
on the tiny model with records shaped like the local backend's."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import modal
import pytest
import soundfile as sf

from bench.backends import modal_app
from bench.backends.local import LocalBackend
from bench.backends.modal_app import ImageRecipe, build_image, check_recipe, find_project_dir
from bench.backends.modal_cells import (
    MODAL_RECORD_FIELDS,
    VOLUME_AUDIO_FIELD,
    container_started_at,
    decode_payload,
    encode_payload,
    local_volume,
    run_cells_local,
)
from bench.commands.modal import modal_command
from bench.core.errors import UserError
from bench.run.runner import pending_work
from bench.spec.gpus import GpuError, modal_gpu, validate_gpu
from bench.spec.parser import parse_spec
from bench.spec.prompt_files import Prompt
from bench.spec.prompts import load_prompts
from bench.spec.sweep import SweepSpec
from tests.tiny import TINY_MODEL_TOML

REPO = Path(__file__).resolve().parents[2]

TINY_SPEC = """
name = "modal-tiny"
""" + TINY_MODEL_TOML + """[prompts]
set = "builtin"
ids = ["en-002"]
long_text = "truncate"  # one sampler call at 16 latents, to stay quick
[grid]
num_steps = [2]
cfg_mode = ["independent", "none"]
sequence_length = [16]
[measure]
warmup = 0
score = false
"""


def tiny_spec(tmp_path: Path) -> SweepSpec:
    return parse_spec(TINY_SPEC, base_dir=tmp_path, name="modal-tiny")


def test_module_imports_without_credentials_or_network(tmp_path: Path) -> None:
    # A fresh interpreter with no Modal config, no token and an unreachable server: if the
    # import tried to talk to Modal it would fail (or hang until the timeout).
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(HOME=str(tmp_path), MODAL_SERVER_URL="http://127.0.0.1:9",
               MODAL_CONFIG_PATH=str(tmp_path / "none.toml"))
    code = ("import bench.backends.modal_app as m; "
            "print(m.app.name, type(m.image).__name__, type(m.BenchWorker).__name__)")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["echo-bench", "Image", "Cls"]


class RecordingImage:
    """Records the image recipe's calls (Modal's Image methods, same signatures)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def method(*args: Any, **kwargs: Any) -> RecordingImage:
            self.calls.append((name, args, kwargs))
            return self
        return method


def test_image_installs_from_the_committed_lock_and_carries_it() -> None:
    recipe = ImageRecipe(find_project_dir())
    assert recipe.project_dir == REPO and recipe.lock == REPO / "uv.lock"
    recorder = RecordingImage()
    build_image(recipe, base=recorder)
    names = [c[0] for c in recorder.calls]
    assert names == ["apt_install", "uv_sync", "env", "add_local_file",
                     "add_local_python_source"]
    _, args, kwargs = recorder.calls[1]
    assert args == (str(REPO),) and "--locked" in kwargs["extra_options"]
    assert kwargs["uv_version"] == "0.13.9" and not kwargs.get("extras")
    # bench/run/measure.py hashes Path(bench.__file__).parents[1] / "uv.lock"; the packages
    # live in /root in the container, so the lock must be /root/uv.lock.
    _, args, _ = recorder.calls[3]
    assert args == (REPO / "uv.lock", "/root/uv.lock")
    assert recorder.calls[4][1] == ("echo_tts", "bench")
    assert isinstance(build_image(recipe), modal.Image)


def test_image_builds_without_an_editable_install(tmp_path: Path) -> None:
    # echo-bench installed as a plain package (no pyproject.toml/uv.lock beside it), run
    # from the checkout: the lock is found there; run elsewhere: import still works and
    # building says what to do.
    site = tmp_path / "site"
    for package in ("bench", "echo_tts"):
        shutil.copytree(REPO / package, site / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import bench.backends.modal_app as m; print(m.IMAGE_RECIPE.project_dir); "
            "m.check_recipe(m.IMAGE_RECIPE)")
    env = {**os.environ, "PYTHONPATH": str(site)}
    ok = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(REPO)
    elsewhere = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120, check=False)
    assert "no uv.lock in" in elsewhere.stderr and "checkout" in elsewhere.stderr
    with pytest.raises(UserError, match=r"no uv\.lock"):
        check_recipe(ImageRecipe(tmp_path))


def test_app_objects_are_modal_objects_with_the_documented_schedule() -> None:
    assert isinstance(modal_app.app, modal.App)
    assert isinstance(modal_app.BenchWorker, modal.Cls)
    assert isinstance(modal_app.Transcriber, modal.Cls)
    for function in (modal_app.prefetch, modal_app.nightly, modal_app.weekly,
                     modal_app.score_and_report):
        assert isinstance(function, modal.Function)
    # The canary Monday to Saturday, the full grid on Sunday: never both in one night.
    assert modal_app.NIGHTLY_CRON == "0 3 * * 1-6" and modal_app.WEEKLY_CRON == "0 3 * * 0"


@pytest.mark.parametrize(("given", "expected", "sent"), [
    ("L4", "L4", "L4"), ("l4", "L4", "L4"), ("a100-80gb", "A100-80GB", "A100-80GB"),
    ("H100:2", "H100:2", "H100:2"), ("H100!", "H100!", "H100!"), ("A10G", "A10G", "A10"),
    ("A10G:4", "A10G:4", "A10:4"), ("B200+", "B200+", "B200+"), ("H100:8", "H100:8", "H100:8"),
])
def test_gpu_names_are_normalised(given: str, expected: str, sent: str) -> None:
    # The spec keeps what was written (cell ids stay stable); Modal gets today's name.
    assert validate_gpu(given) == expected
    assert modal_gpu(given) == sent


@pytest.mark.parametrize(("given", "fragment"), [
    ("Z100", "unknown Modal GPU type 'Z100'"), ("A10G:0", "bad GPU count"),
    ("L4:x", "bad GPU count"), ("L4:9", "bad GPU count"), ("", "unknown Modal GPU type"),
    ("A10:5", "A10:1 to A10:4"), ("A10G:8", "A10G:1 to A10G:4"),
])
def test_bad_gpu_names_are_clear_errors(given: str, fragment: str) -> None:
    from bench.cli import USER_ERRORS

    assert GpuError in USER_ERRORS  # the CLI prints one line and exits 2
    with pytest.raises(GpuError, match=fragment.replace("(", r"\(")):
        validate_gpu(given)


def test_payload_round_trip_keeps_cells_and_inlines_speakers(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path)
    wav = tmp_path / "voice.wav"
    sf.write(str(wav), [0.0, 0.1, -0.1, 0.0], 44_100)
    prompts = [Prompt("p1", "Hello there.", speaker_wav=wav, category="short"),
               Prompt("p2", "Second one.")]
    payload = decode_payload(encode_payload(spec, prompts), tmp_path / "remote")
    assert list(payload.cells) == [c.id for c in spec.cells]
    for cell in spec.cells:
        decoded = payload.cells[cell.id]
        assert decoded == cell and decoded.label == cell.label
    assert payload.model == spec.model
    first, second = payload.prompts
    assert first.id == "p1" and first.category == "short" and second.speaker_wav is None
    assert first.speaker_wav is not None and first.speaker_wav.parent == tmp_path / "remote"
    assert first.speaker_wav.read_bytes() == wav.read_bytes()


def test_payload_of_another_version_is_refused(tmp_path: Path) -> None:
    data = json.loads(encode_payload(tiny_spec(tmp_path), []))
    data["version"] = 99
    with pytest.raises(UserError, match="redeploy"):
        decode_payload(json.dumps(data), tmp_path)


def _local_records(spec: SweepSpec) -> list[dict[str, Any]]:
    work, _ = pending_work(spec, load_prompts(spec.prompts), set())
    records: list[dict[str, Any]] = []
    LocalBackend().execute(spec, work, lambda r, a: records.append(r), lambda c: None)
    return records


ORDER = ("order_group", "order_round", "order_position", "order_interleaved")


def test_worker_code_runs_in_process_with_local_record_keys(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path)
    prompts = load_prompts(spec.prompts)
    records = run_cells_local(encode_payload(spec, prompts), [c.id for c in spec.cells], [])
    # One call runs the group as the local backend does: same rounds, same order.
    local = _local_records(spec)
    assert [r["key"] for r in records] == [r["key"] for r in local]
    assert [[r[f] for f in ORDER] for r in records] == [[r[f] for f in ORDER] for r in local]
    assert all(r["order_interleaved"] for r in records)
    assert all(r["status"] == "ok" for r in records)
    for ours, theirs in zip(records, local, strict=True):
        assert set(ours) - set(MODAL_RECORD_FIELDS) - {VOLUME_AUDIO_FIELD} == set(theirs)
        assert set(MODAL_RECORD_FIELDS) <= set(ours)
        assert ours["container_id"] == "local" and ours["audio_kept"] == "all"
        # The kept WAV waits on the (stand-in) Volume for the orchestrator to read.
        audio, rate = sf.read(io.BytesIO((local_volume() / ours[VOLUME_AUDIO_FIELD]).read_bytes()))
        assert rate == 44_100 and len(audio) > 0
    first = records[0]
    if first["container_call"] == 0:  # this process's runner paid the cold start here
        assert first["cold_start_seconds"] >= first["model_load_seconds"] > 0
        assert first["cold_start_seconds"] == pytest.approx(
            first["container_boot_seconds"] + first["model_load_seconds"])
    assert all(r["first_call_overhead_seconds"] >= 0 for r in records)


def test_a_warm_call_reports_queueing_and_no_cold_start(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path)
    payload = encode_payload(spec, load_prompts(spec.prompts))
    run_cells_local(payload, [spec.cells[0].id], [])  # the "container" is now warm
    spawned = __import__("time").time() - 5.0  # spawned 5 s before it started
    [record] = run_cells_local(payload, [spec.cells[1].id], [], spawned_at=spawned)
    assert record["container_call"] > 0
    assert record["cold_start_seconds"] == record["model_load_seconds"] == 0.0
    assert record["queue_seconds"] >= 5.0 and record["spawned_at"] == spawned


def test_container_start_comes_from_pid_1(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    ticks = os.sysconf("SC_CLK_TCK")
    fields = ["S"] + ["0"] * 18 + [str(250 * ticks)]  # field 22 = starttime
    (proc / "1" / "stat").write_text("1 (init (x)) " + " ".join(fields) + " 0 0\n")
    (proc / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
    assert container_started_at(proc) == 1_700_000_250
    assert container_started_at(tmp_path / "nothing") is None


def test_worker_skips_done_keys_and_counts_calls(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path)
    payload = encode_payload(spec, load_prompts(spec.prompts))
    cell = spec.cells[0]
    first = run_cells_local(payload, [cell.id], [])
    assert len(first) == 1
    again = run_cells_local(payload, [cell.id], [first[0]["key"]])
    assert again == []
    later = run_cells_local(payload, [spec.cells[1].id], [])
    assert later[0]["container_call"] > first[0]["container_call"]  # the model stayed loaded
    with pytest.raises(UserError, match="not in the payload"):
        run_cells_local(payload, ["nope"], [])


def test_modal_commands_shell_out_to_the_modal_cli() -> None:
    base = [sys.executable, "-m", "modal"]
    assert modal_command("prefetch") == [*base, "run", "-m", "bench.backends.modal_app::prefetch"]
    assert modal_command("deploy", env="dev") == [*base, "deploy", "--env", "dev", "-m",
                                                  "bench.backends.modal_app"]
    with pytest.raises(UserError):
        modal_command("launch")


def test_run_nightly_spawns_the_deployed_function_and_says_where_the_run_appears(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from modal.exception import NotFoundError

    from bench.commands import modal as modal_cmd

    spawned: list[tuple[str, str, str | None, str]] = []

    class Function:
        def __init__(self, app: str, name: str, environment_name: str | None) -> None:
            self.where = (app, name, environment_name)

        def spawn(self, spec: str) -> Any:
            spawned.append((*self.where, spec))
            return type("Call", (), {"object_id": "fc-123"})()

    assert modal_cmd.start_nightly("weekly", "prod", Function) == "fc-123"
    assert spawned == [("echo-bench", "nightly", "prod", "weekly")]

    def missing(*args: Any, **kwargs: Any) -> Any:
        raise NotFoundError("App 'echo-bench' not found")

    with pytest.raises(UserError, match="deploy it first: echo-bench modal deploy"):
        modal_cmd.start_nightly("nightly", None, missing)

    monkeypatch.setattr(modal_cmd, "start_nightly", lambda spec, env: f"fc-{spec}")
    parser = argparse.ArgumentParser()
    modal_cmd.add(parser.add_subparsers())
    summary = tmp_path / "summary.md"
    args = parser.parse_args(["modal", "run-nightly", "--spec", "weekly", "--env", "prod",
                              "--summary", str(summary)])
    assert args.handler(args) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("started Modal call fc-weekly (weekly)")
    assert "echo-bench-outputs" in line and "echo-bench pull --env prod" in line
    assert summary.read_text() == line + "\n"


def test_modal_billing_calls_the_deployed_billing_function(
        capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from modal.exception import NotFoundError

    from bench.commands import modal as modal_cmd

    called: list[tuple[str, str, str | None, str]] = []

    class Function:
        def __init__(self, app: str, name: str, environment_name: str | None) -> None:
            self.where = (app, name, environment_name)

        def remote(self, run_id: str) -> str:
            called.append((*self.where, run_id))
            return f"{run_id}: billed 0.3 USD (final)"

    run_id = "20261206-030000-nightly-ab12cd"
    assert modal_cmd.read_billing(run_id, "prod", Function) == f"{run_id}: billed 0.3 USD (final)"
    assert called == [("echo-bench", "billing", "prod", run_id)]
    with pytest.raises(UserError, match="bad run id"):
        modal_cmd.read_billing("../etc", None, Function)

    def missing(*args: Any, **kwargs: Any) -> Any:
        raise NotFoundError("App 'echo-bench' not found")

    with pytest.raises(UserError, match="deployed"):
        modal_cmd.read_billing(run_id, None, missing)
    parser = argparse.ArgumentParser()
    modal_cmd.add(parser.add_subparsers())
    args = parser.parse_args(["modal", "billing", run_id, "--dry-run"])
    assert args.handler(args) == 0
    assert capsys.readouterr().out.strip() == f"would call echo-bench.billing('{run_id}')"


def test_modal_command_dry_run_prints_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from bench.commands import modal as modal_cmd

    parser = argparse.ArgumentParser()
    modal_cmd.add(parser.add_subparsers())
    args = parser.parse_args(["modal", "deploy", "--dry-run", "--hf-secret", "hf"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("ECHO_BENCH_HF_SECRET=hf ") and "deploy -m bench.backends.modal_app" in out


def test_bench_worker_runs_through_local_on_the_tiny_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The Modal class itself (@modal.enter, then the method), in this process; its
    # outputs Volume is the stand-in, so the nightly's write-to-Volume path runs too.
    from bench.backends.modal_cells import model_params
    from bench.store.layout import audio_filename
    from tests.modal_standin import FakeVolume

    volume = FakeVolume(tmp_path / "outputs")
    monkeypatch.setattr(modal_app, "outputs", volume)
    monkeypatch.setattr(modal_app, "OUTPUTS_DIR", str(volume.mount))
    spec = tiny_spec(tmp_path)
    audio_dir = volume.mount / "runs" / "r1" / "audio"
    payload = encode_payload(spec, load_prompts(spec.prompts), audio_dir=str(audio_dir))
    worker = cast(Any, modal_app.BenchWorker)(
        params=model_params(spec.model, spec.prompts.long_text))
    commits = volume.commits
    records = worker.run_cells.local(payload, [spec.cells[0].id], [], __import__("time").time(),
                                     0, "call-1")
    assert [r["status"] for r in records] == ["ok"]
    [record] = records
    assert record["audio_path"] == f"audio/{audio_filename(record['key'])}"
    assert (volume.committed / "runs" / "r1" / record["audio_path"]).is_file()
    # One commit for the container's start (the crash-loop count), one at the end of
    # the call for the journaled generation (commits are batched) and the placed WAV.
    assert volume.commits == commits + 2 and VOLUME_AUDIO_FIELD not in record
    assert record["container_call"] == 0 and record["cold_start_seconds"] > 0
    # The call's journal (the finished generation, committed) is on the Volume under
    # /outputs, where a restart of the same input would find it.
    journal = volume.committed / "journals" / "call-1" / "records.jsonl"
    assert [json.loads(x)["key"] for x in journal.read_text().splitlines()] == [record["key"]]


def test_transcriber_runs_through_local_behind_the_remote_asr(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from bench.scoring.remote_asr import RemoteASR

    monkeypatch.setattr(modal_app, "WHISPER_CACHE_DIR", str(tmp_path))
    transcriber = cast(Any, modal_app.Transcriber)(asr="random:tiny")
    asr = RemoteASR(transcriber, call=lambda method, *args: method.local(*args))
    assert asr.is_random and asr.name.startswith("whisper:random:tiny")
    texts = asr.transcribe([np.zeros(16_000, dtype=np.float32)])
    assert len(texts) == 1 and isinstance(texts[0], str)


def test_prefetch_puts_the_sim_and_mos_models_where_scoring_looks(tmp_path: Path) -> None:
    from bench.scoring.models import MODEL_FILES
    from bench.scoring.quality import MOS_IF_PRESENT, SIM_PREFERRED, resolve_present

    fetched: list[str] = []

    def fetch(name: str, root: Path) -> Path:  # stands in for the download
        fetched.append(name)
        root.mkdir(parents=True, exist_ok=True)
        path = root / MODEL_FILES[name].filename
        path.write_bytes(b"weights")
        return path

    root = tmp_path / "echo-bench-models"
    modal_app.prefetch_scoring_models(root, fetch)
    assert fetched == ["wavlm-ecapa", "utmos22-strong"]
    modal_app.prefetch_scoring_models(root, fetch)  # again: nothing downloaded twice
    assert fetched == ["wavlm-ecapa", "utmos22-strong"]
    # The scheduled specs' "when present" choices now find them on the Volume.
    assert resolve_present(SIM_PREFERRED, ["dnsmos", MOS_IF_PRESENT], root) == (
        "wavlm-ecapa", ["dnsmos", "utmos"], None)
    assert modal_app.MODELS_DIR.startswith(modal_app.WHISPER_CACHE_DIR)
