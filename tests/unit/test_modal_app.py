"""The Modal app module, offline: it imports without credentials, its image installs the
project's dependencies, GPU names are checked, and the worker's cell code runs in-process
on the tiny model with records shaped like the local backend's."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import modal
import pytest
import soundfile as sf

from bench.backends import modal_app
from bench.backends.local import LocalBackend
from bench.backends.modal_app import (
    IMAGE_PACKAGES,
    MODAL_RECORD_FIELDS,
    decode_payload,
    encode_payload,
    run_cells_local,
    sync_tree,
    validate_gpu,
)
from bench.commands.modal import modal_command
from bench.errors import UserError
from bench.prompts import Prompt, load_prompts
from bench.runner import pending_work
from bench.spec import SweepSpec, parse_spec
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


def test_image_installs_exactly_the_project_dependencies() -> None:
    with (REPO / "pyproject.toml").open("rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    assert list(IMAGE_PACKAGES) == deps
    assert isinstance(modal_app.build_image(), modal.Image)


def test_app_objects_are_modal_objects_with_the_documented_schedule() -> None:
    assert isinstance(modal_app.app, modal.App)
    assert isinstance(modal_app.BenchWorker, modal.Cls)
    for function in (modal_app.prefetch, modal_app.nightly, modal_app.score_and_report):
        assert isinstance(function, modal.Function)
    assert modal_app.NIGHTLY_CRON == "0 3 * * *"


@pytest.mark.parametrize(("given", "expected"), [
    ("L4", "L4"), ("l4", "L4"), ("a100-80gb", "A100-80GB"), ("H100:2", "H100:2"),
    ("H100!", "H100!"),
])
def test_gpu_names_are_normalised(given: str, expected: str) -> None:
    assert validate_gpu(given) == expected


@pytest.mark.parametrize(("given", "fragment"), [
    ("Z100", "unknown Modal GPU type 'Z100'"), ("A10G:0", "bad GPU count"),
    ("L4:x", "bad GPU count"), ("L4:9", "bad GPU count"), ("", "unknown Modal GPU type"),
])
def test_bad_gpu_names_are_clear_errors(given: str, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment.replace("(", r"\(")):
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


def test_worker_code_runs_in_process_with_local_record_keys(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path)
    prompts = load_prompts(spec.prompts)
    records = run_cells_local(encode_payload(spec, prompts), [c.id for c in spec.cells], [])
    # The local backend interleaves the cells in rounds; Modal runs them one by one.
    local = sorted(_local_records(spec), key=lambda r: [x["key"] for x in records].index(r["key"]))
    assert [r["key"] for r in records] == [r["key"] for r in local]
    assert all(r["status"] == "ok" for r in records)
    for ours, theirs in zip(records, local, strict=True):
        assert set(ours) - set(MODAL_RECORD_FIELDS) == set(theirs)
        assert set(MODAL_RECORD_FIELDS) <= set(ours)
        assert ours["cold_start_seconds"] >= ours["model_load_seconds"] > 0
        assert ours["container_id"] == "local"
        audio, rate = sf.read(io.BytesIO(base64.b64decode(ours["audio_wav_b64"])))
        assert rate == 44_100 and len(audio) > 0


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


def test_sync_tree_copies_new_and_changed_files_but_not_the_lock(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "audio").mkdir(parents=True)
    (src / "records.jsonl").write_text("a\n")
    (src / "audio" / "x.wav").write_bytes(b"wav")
    (src / "lock").write_text("123\n")
    sync_tree(src, dst)
    assert (dst / "audio" / "x.wav").read_bytes() == b"wav" and not (dst / "lock").exists()
    (src / "records.jsonl").write_text("a\nb\n")
    sync_tree(src, dst)
    assert (dst / "records.jsonl").read_text() == "a\nb\n"


def test_modal_commands_shell_out_to_the_modal_cli() -> None:
    base = [sys.executable, "-m", "modal"]
    assert modal_command("prefetch") == [*base, "run", "-m", "bench.backends.modal_app::prefetch"]
    assert modal_command("deploy", env="dev") == [*base, "deploy", "--env", "dev", "-m",
                                                  "bench.backends.modal_app"]
    assert modal_command("run-nightly")[3:5] == ["run", "--detach"]
    with pytest.raises(UserError):
        modal_command("launch")


def test_modal_command_dry_run_prints_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from bench.commands import modal as modal_cmd

    parser = argparse.ArgumentParser()
    modal_cmd.add(parser.add_subparsers())
    args = parser.parse_args(["modal", "deploy", "--dry-run", "--hf-secret", "hf"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("ECHO_BENCH_HF_SECRET=hf ") and "deploy -m bench.backends.modal_app" in out
