"""Control rows and ``score-audio``: audio Echo did not make, scored like a sweep's."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from bench.analysis.quality import quality_section
from bench.cli import main
from bench.core.errors import UserError
from bench.scoring.controls import (
    control_dirs,
    ground_truth_files,
    match_folder,
    score_audio_folder,
    score_control,
)
from bench.scoring.protocols import PROTOCOLS
from bench.spec import speakers
from bench.spec.prompt_files import Prompt
from bench.spec.prompts import load_prompts
from bench.store.records import load_records
from bench.store.run_store import RunStore
from tests.unit.test_prompt_sets import _wav, seed_tts_fixture


class EchoASR:
    """A stand-in ASR that "hears" a fixed transcript per audio length (no model)."""

    name = "test:fixed"
    is_random = False

    def __init__(self, text: str) -> None:
        self.text = text
        self.calls = 0

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        self.calls += len(audios)
        return [self.text for _ in audios]


PROMPTS = [Prompt(id="a", text="I have fifty apples."), Prompt(id="b", text="Hello there.")]


def test_match_folder_by_prompt_id(tmp_path: Path) -> None:
    _wav(tmp_path / "a.wav")
    _wav(tmp_path / "b.flac", fmt="FLAC")
    (tmp_path / "notes.txt").write_text("ignored", encoding="utf-8")
    assert {k: v.name for k, v in match_folder(tmp_path, PROMPTS).items()} == {
        "a": "a.wav", "b": "b.flac"}


def test_files_that_match_no_prompt_are_refused(tmp_path: Path) -> None:
    _wav(tmp_path / "a.wav")
    _wav(tmp_path / "typo.wav")
    with pytest.raises(UserError, match=r"1 file\(s\) in .* match no prompt id .*'typo.wav'"):
        match_folder(tmp_path, PROMPTS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"holds no \.wav or \.flac files"):
        match_folder(tmp_path / "empty", PROMPTS)
    with pytest.raises(UserError, match="is not a folder"):
        match_folder(tmp_path / "missing", PROMPTS)


def test_score_audio_folder_scores_under_the_protocol(tmp_path: Path) -> None:
    audio = tmp_path / "other-tts"
    _wav(audio / "a.wav")
    asr = EchoASR("I have 50 apples")
    run_dir, outcome, without = score_audio_folder(audio, PROMPTS, tmp_path / "runs", asr,
                                                   PROTOCOLS["seed-tts-eval"])
    assert (outcome.scored, without, asr.calls) == (1, 1, 1)
    records = load_records(run_dir)
    row = records.iloc[0]
    assert row["cell_id"] == "control-other-tts" and bool(row["control"])
    assert row["wer"] == 0.25 and row["wer_protocol"] == "seed-tts-eval"
    assert Path(row["audio_path"]) == (audio / "a.wav").resolve()


def test_score_audio_command_bad_folder_is_one_line(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _wav(tmp_path / "no-such-prompt.wav")
    code = main(["score-audio", str(tmp_path), "--prompts", "builtin", "--asr", "random:tiny",
                 "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "match no prompt id" in err[0]
    assert main(["score-audio", str(tmp_path), "--prompts", "builtin",
                 "--protocol", "wer"]) == 2
    assert "unknown WER protocol" in capsys.readouterr().err


def test_control_row_of_a_set_with_ground_truth(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECHO_BENCH_PROMPT_SETS", str(tmp_path / "sets"))
    seed_tts_fixture(tmp_path / "sets" / "seed-tts-eval", n=2)
    prompts = load_prompts("seed-tts-eval:en")
    run = RunStore.create(tmp_path / "runs", spec={}, spec_name="s", spec_hash="h",
                          environment={})
    run.close()
    asr = EchoASR("target text number 0")
    done = score_control(run.path, prompts, asr, PROTOCOLS["whisper-normalizer"])
    assert done is not None
    control, outcome = done
    assert control_dirs(run.path) == [control] and outcome.scored == 2
    wers = sorted(load_records(control)["wer"])
    assert wers == [0.0, 0.25]  # "0" is heard for both; the second says "1"
    # The two fixture recordings have the same bytes, so the ASR heard them once.
    assert asr.calls == 1
    # Scoring the control again reuses everything: no new records, no new ASR calls.
    again = score_control(run.path, prompts, asr, PROTOCOLS["whisper-normalizer"])
    assert again is not None and again[1].scored == 0 and again[1].already == 2
    assert asr.calls == 1


def test_no_control_without_recordings(tmp_path: Path) -> None:
    assert score_control(tmp_path, PROMPTS, EchoASR(""), PROTOCOLS["f5-tts"]) is None


@pytest.mark.skipif(not speakers.espeak_available(), reason="espeak-ng is not installed")
def test_builtin_ground_truth_is_the_prompt_read_by_its_voice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECHO_BENCH_SPEAKER_CACHE", str(tmp_path / "speakers"))
    prompts = load_prompts("builtin", ids=["en-002"], speakers="espeak")
    files = ground_truth_files(prompts)
    assert set(files) == {"en-002"}
    voice = next(s.voice for s in speakers.builtin_speakers()
                 if s.wav == prompts[0].speaker_wav)
    assert files["en-002"] == speakers.speak_text(voice, prompts[0].text)


def test_quality_section_shows_the_control(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    audio = tmp_path / "audio"
    _wav(audio / "a.wav")
    run = RunStore.create(tmp_path / "runs", spec={}, spec_name="s", spec_hash="h",
                          environment={})
    with run:
        run.append({"key": "c1/a/0/0", "status": "ok", "cell_id": "c1", "cell_label": "c1",
                    "prompt_id": "a", "seed": 0, "text": "I have fifty apples.", "rtf": 0.2})
    files = {"a": audio / "a.wav"}
    monkeypatch.setattr("bench.scoring.controls.ground_truth_files", lambda prompts: files)
    score_control(run.path, PROMPTS, EchoASR("I have fifty apples"),
                  PROTOCOLS["whisper-normalizer"])
    section = quality_section(run.path, n_boot=50)
    assert list(section.controls["cell_label"]) == ["ground-truth"]
    assert section.controls.iloc[0]["wer"] == 0.0
