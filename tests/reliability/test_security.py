"""Security: no pickle for weights, no secrets in run files, escaped reports, file names
that cannot leave the run folder, and specs that are data only."""

from __future__ import annotations

import ast
import importlib.util
import json
import secrets
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.store.run_store import RunStore
from tests.reliability.conftest import REPO, cli, cli_subprocess, run_dir, size, write_spec

pytestmark = pytest.mark.slow

HAS_REPORT = importlib.util.find_spec("bench.commands.report") is not None
NO_REPORT = "the `echo-bench report` command does not exist in this checkout yet"


def python_files() -> list[Path]:
    return sorted([*(REPO / "echo_tts").rglob("*.py"), *(REPO / "bench").rglob("*.py")])


def test_no_pickle_for_weights(tally: Counter[str]) -> None:
    """The only torch.loads are the scoring checkpoints' (Whisper, Resemblyzer, WavLM-ECAPA,
    UTMOS), all with weights_only=True; nothing imports pickle (or a module that unpickles)
    in echo_tts/ or bench/."""
    loads: list[str] = []
    for path in python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        tally["source_files_scanned"] += 1
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not {"pickle", "cPickle", "dill", "joblib", "shelve"} & set(names), (
                    f"{path}:{node.lineno} imports an unpickler")
            if isinstance(node, ast.Call):
                func = ast.unparse(node.func)
                if func.endswith(("pickle.load", "pickle.loads", "np.load", "numpy.load")):
                    pytest.fail(f"{path}:{node.lineno}: {func}")
                if func.endswith("torch.load"):
                    keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                    loads.append(f"{path.relative_to(REPO)}:{keywords.get('weights_only')}")
    assert sorted(loads) == ["bench/scoring/asr.py:True", "bench/scoring/speaker.py:True",
                             "bench/scoring/speaker.py:True", "bench/scoring/utmos.py:True"], loads


SECRET_NAMES = ("HF_TOKEN", "MODAL_TOKEN_SECRET", "AWS_SECRET_ACCESS_KEY")


def test_secrets_in_the_environment_never_reach_run_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally: Counter[str]) -> None:
    planted = {name: f"sekret-{secrets.token_hex(16)}" for name in SECRET_NAMES}
    for name, value in planted.items():  # for the in-process score and report
        monkeypatch.setenv(name, value)
    spec = write_spec(tmp_path, steps=[1])
    root = tmp_path / "runs"
    outputs = []
    sweep = cli_subprocess("sweep", str(spec), "--out", str(root), env=planted)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    outputs += [sweep.stdout, sweep.stderr]
    run = run_dir(root)
    score = cli("score", str(run), "--rescore")
    assert score.code == 0, score.err[-2000:]
    outputs += [score.out, score.err]
    if HAS_REPORT:
        report = cli("report", str(run))
        assert report.code == 0, report.err[-2000:]
        outputs += [report.out, report.err]
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "records.parquet" for p in files)
    for value in planted.values():
        for output in outputs:
            assert value not in output
        for path in files:
            assert value.encode() not in path.read_bytes(), f"secret leaked into {path}"
    tally["secrets_planted"] += len(planted)
    tally["files_checked_for_secrets"] += len(files)
    tally["secrets_leaked"] += 0
    if not HAS_REPORT:
        pytest.skip(NO_REPORT + " (sweep + score were checked)")


HOSTILE_IDS = ["../../x", "/etc/passwd", "a\\b", "..", ".hidden", "a/../../b", "~root",
               "x" * 400, "<script>alert(1)</script>", "C:\\Windows\\win.ini", "nul", "ü/ö"]


@settings(max_examples=size(200, 3000), deadline=None, derandomize=True)
# Surrogates excluded: the prompt loaders refuse ids that are not valid Unicode
# (test_bad_inputs.test_lone_surrogate_ids_are_refused).
@given(prompt_id=st.text(st.characters(blacklist_characters="\x00",
                                       blacklist_categories=("Cs",)), min_size=1, max_size=300))
def test_audio_names_of_any_prompt_id_stay_in_the_audio_folder(prompt_id: str) -> None:
    store = object.__new__(RunStore)  # audio_path only needs the run's path
    store.path = Path("/r/run")
    path = store.audio_path(f"abc123/{prompt_id}/0/0")
    assert path.parent == Path("/r/run/audio") and len(path.name.encode()) < 255
    assert "/" not in path.name and not path.name.startswith(".")


def test_hostile_prompt_ids_stay_inside_the_run(tmp_path: Path, tally: Counter[str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    prompts = work / "hostile.jsonl"
    ids = HOSTILE_IDS[: size(6, len(HOSTILE_IDS))]
    prompts.write_text("".join(json.dumps({"id": pid, "text": "Hi."}) + "\n" for pid in ids))
    spec = write_spec(work, steps=[1], prompts=str(prompts), name="hostile", score=False)
    root = work / "runs"
    before = {p for p in tmp_path.rglob("*")}
    result = cli("sweep", str(spec), "--out", str(root), "--no-report")
    assert result.code == 0, result.err[-2000:]
    run = run_dir(root)
    if HAS_REPORT:
        assert cli("report", str(run)).code == 0
    created = {p for p in tmp_path.rglob("*")} - before
    for path in created:
        assert path.resolve().is_relative_to(root.resolve()), f"{path} escapes the run root"
    wavs = list((run / "audio").glob("*.wav"))
    assert len(wavs) == len(ids)
    assert all(p.parent == run / "audio" and len(p.name) < 255 for p in wavs)
    assert not Path("/tmp/x").exists() or Path("/tmp/x").stat().st_mtime < 0
    tally["hostile_prompt_ids"] += len(ids)
    tally["files_escaping_run_folder"] += 0


@pytest.mark.skipif(not HAS_REPORT, reason=NO_REPORT)
def test_report_escapes_prompts_and_errors(tmp_path: Path, tally: Counter[str]) -> None:
    script = "<script>alert(1)</script>"
    img = "<img src=x onerror=alert(2)>"
    prompts = tmp_path / "xss.jsonl"
    prompts.write_text(json.dumps({"id": f"p{script}", "text": f"Say {script} now."}) + "\n")
    spec = write_spec(tmp_path, steps=[1], prompts=str(prompts), name="xss", score=False)
    root = tmp_path / "runs"
    assert cli("sweep", str(spec), "--out", str(root), "--no-report").code == 0
    run = run_dir(root)
    with RunStore.open(run) as store:  # a failure whose message carries markup
        record = store.records()[0]
        store.append({**record, "key": record["key"].replace("/0/0", "/0/1"), "repeat": 1,
                      "status": "failed", "error": f"RuntimeError: {img}",
                      "error_type": "RuntimeError"})
    assert cli("report", str(run)).code == 0
    html = "\n".join(p.read_text(encoding="utf-8", errors="replace")
                     for p in run.rglob("*.html"))
    assert html, "no HTML report written"
    assert script not in html and img not in html
    tally["markup_strings_escaped"] += 2


INJECTION = "__import__('os').system('touch {marker}')"


def test_spec_strings_are_data_only(tmp_path: Path, tally: Counter[str]) -> None:
    marker = tmp_path / "pwned"
    short = tmp_path / "short.jsonl"
    short.write_text('{"id": "p1", "text": "Hi."}\n')
    payload = json.dumps(INJECTION.format(marker=marker))
    fields = {
        "name": None, "description": None, "model.model": "model", "model.codec": "model",
        "model.pca": "model", "model.dtype": "model", "model.device": "model",
        "prompts.set": "prompts", "prompts.speaker": "prompts", "prompts.long_text": "prompts",
        "grid.cfg_mode": "grid", "grid.gpu": "grid", "measure.asr": "measure",
        "measure.asr_device": "measure",
    }
    for dotted, section in fields.items():
        key = dotted.rsplit(".", 1)[-1]
        value = f"[{payload}]" if section == "grid" else payload
        base = {"model": ['model = "random:tiny"', 'codec = "random:tiny"', 'pca = "random:tiny"',
                          'device = "cpu"'],
                "prompts": [f"set = {json.dumps(str(short))}"], "grid": ["num_steps = [1]", "sequence_length = [16]"],
                "measure": ["warmup = 0", "score = false"]}
        top = [f"{key} = {value}"] if section is None else []
        if section is not None:
            base[section] = [line for line in base[section] if not line.startswith(key + " ")]
            base[section].append(f"{key} = {value}")
        text = "\n".join(top + [f"[{s}]\n" + "\n".join(lines) for s, lines in base.items()])
        spec = tmp_path / "inject.toml"
        spec.write_text(text + "\n")
        for extra in (["--dry-run"], ["--no-report"]):
            result = cli("sweep", str(spec), "--out", str(tmp_path / "runs"), "--new", *extra)
            tally["spec_injection_attempts"] += 1
            assert "Traceback" not in result.err
            assert result.code == 0 or result.one_line_error() or result.code == 1, result.err
            assert not marker.exists(), f"code ran from {dotted}"
    tally["spec_code_executions"] += 0
