from __future__ import annotations

import json
from pathlib import Path

from bench.cli import main


def test_profile_writes_json_with_floor_and_reference(tmp_path: Path) -> None:
    code = main(["profile", "--model", "random:tiny", "--device", "cpu", "--steps", "3",
                 "--length", "16", "--cfg-mode", "independent", "none", "--repeats", "1",
                 "--out", str(tmp_path)])
    assert code == 0
    (path,) = tmp_path.glob("*.json")
    result = json.loads(path.read_text())
    independent, none = result["cases"]
    assert independent["reference_median_s"] > 0 and independent["rel_error"] < 1e-4
    assert none["reference_median_s"] is None  # the reference has no such mode
    for case in (independent, none):
        assert case["achieved_tflops"] > 0 and case["ours_over_floor"] > 0
        assert case["seconds_per_row"] == case["ours_median_s"] / case["nfe_rows"]
    assert result["matmul_tflops"] > 0 and result["environment"]["packages"]["torch"]


def test_profile_times_the_masked_layout_alongside(tmp_path: Path) -> None:
    code = main(["profile", "--model", "random:tiny", "--device", "cpu", "--steps", "3",
                 "--length", "16", "--repeats", "2", "--speaker-latents", "12",
                 "--attention", "sliced", "masked", "--out", str(tmp_path)])
    assert code == 0
    (path,) = tmp_path.glob("*-eager.json")
    result = json.loads(path.read_text())
    (case,) = result["cases"]
    assert result["speaker_latents"] == 12
    assert len(case["alternatives"]["eager-masked"]) == 2
    assert case["alternative_rel_errors"]["eager-masked"] < 1e-5
    assert case["alternative_over_ours"]["eager-masked"] > 0
    # With the speaker reference the reference run agrees as well.
    assert case["rel_error"] < 1e-4


def test_profile_refuses_a_speaker_that_is_not_whole_patches(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["profile", "--model", "random:tiny", "--device", "cpu",
                 "--speaker-latents", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "multiple of 4" in err[0]


def test_profile_times_whisper_scoring(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ECHO_BENCH_WHISPER_CACHE", str(tmp_path / "whisper"))
    code = main(["profile", "--model", "random:tiny", "--device", "cpu", "--steps", "2",
                 "--length", "64", "--repeats", "1", "--no-reference", "--asr", "random:tiny",
                 "--asr-batch", "2", "--asr-tokens", "4", "--out", str(tmp_path)])
    assert code == 0
    (path,) = tmp_path.glob("*.json")
    scoring = json.loads(path.read_text())["scoring"]
    assert scoring["model"].startswith("whisper:random:tiny") and scoring["decode_tokens"] == 4
    assert abs(scoring["clip_seconds"] - 64 * 2048 / 44_100) < 1e-9 and scoring["batch"] == 2
    assert scoring["seconds_per_clip_alone"] > 0 and scoring["seconds_per_clip_batched"] > 0


def test_gpu_profile_script_rehearses_on_cpu(tmp_path: Path) -> None:
    # The GPU table is measured in rare sessions with a GPU: its script must not fail
    # there on a typo. The same script, tiny models, CPU, 2 steps, one short length and
    # one attention layout (arguments are passed on after the script's own, and the last
    # one given wins): every line of the script still runs, on 8 cases (4 CFG modes x
    # batch 1, 2) instead of 16, and compiles one graph instead of two (the masked layout's
    # compiled graph is checked against eager in tests/unit/test_pipeline.py).
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, DEVICE="cpu", MODEL="random:tiny", CODEC="random:tiny",
               ASR="random:tiny", OUT=str(tmp_path), PYTHON=sys.executable,
               ECHO_BENCH_WHISPER_CACHE=str(tmp_path / "whisper"))
    done = subprocess.run(
        ["bash", str(root / "bench/scripts/profile_gpu.sh"), "--steps", "2", "--repeats", "1",
         "--asr-tokens", "4", "--asr-batch", "2", "--length", "16", "--speaker-latents", "16",
         "--attention", "sliced"],
        cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = {p.name.rsplit("-", 1)[1]: p for p in tmp_path.glob("*.json")}
    assert sorted(runs) == ["compile.json", "eager.json"]
    full = json.loads(runs["eager.json"].read_text())
    assert len(full["cases"]) == 8 and full["stages"]["decode"] > 0 and full["scoring"]
    assert {case["sequence_length"] for case in full["cases"]} == {16}
