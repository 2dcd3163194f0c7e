"""The built-in espeak-ng speaker set and its use by the prompt loader and the specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from bench.spec import prompts as prompts_module
from bench.spec import speakers
from bench.spec.parser import load_spec, parse_spec
from bench.spec.prompts import PromptError, load_prompts
from bench.spec.sweep import SpecError

needs_espeak = pytest.mark.skipif(not speakers.espeak_available(),
                                  reason="espeak-ng is not installed")
SWEEPS = Path(__file__).resolve().parents[2] / "bench" / "sweeps"


@pytest.fixture(autouse=True)
def speaker_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                  ) -> Path:
    # One cache for the module's tests: synthesising six voices costs seconds.
    cache = tmp_path_factory.getbasetemp() / "speakers"
    monkeypatch.setenv("ECHO_BENCH_SPEAKER_CACHE", str(cache))
    return cache


@needs_espeak
def test_six_distinct_voices_at_44k_cached(speaker_cache: Path) -> None:
    first = speakers.builtin_speakers()
    assert len({s.voice for s in first}) == 6
    stamps = {}
    for s in first:
        info = sf.info(str(s.wav))
        assert (info.samplerate, info.channels) == (44_100, 1)
        assert 3.0 < info.duration < 15.0
        assert s.wav.is_relative_to(speaker_cache)
        stamps[s.wav] = s.wav.stat().st_mtime_ns
    again = speakers.builtin_speakers()
    assert [s.wav for s in again] == [s.wav for s in first]
    assert all(s.wav.stat().st_mtime_ns == stamps[s.wav] for s in again)  # not re-made
    # Different voices give different audio.
    assert len({s.wav.read_bytes() for s in first}) == 6


@needs_espeak
def test_prompts_get_voices_in_turn_whatever_the_selection() -> None:
    everything = load_prompts("builtin", limit=8, speakers="espeak")
    voices = [p.speaker_wav for p in everything]
    assert len(set(voices[:6])) == 6 and voices[6] == voices[0]
    picked = load_prompts("builtin", ids=["en-002", "en-007"], speakers="espeak")
    by_id = {p.id: p.speaker_wav for p in everything}
    assert [p.speaker_wav for p in picked] == [by_id["en-002"], by_id["en-007"]]
    assert all(p.reference_text == speakers.PASSAGE for p in picked)


@needs_espeak
def test_speak_text_reads_a_prompt_with_a_voice() -> None:
    wav = speakers.speak_text("en-gb", "Hello there.")
    assert sf.info(str(wav)).samplerate == 44_100
    assert speakers.speak_text("en-gb", "Hello there.") == wav


def test_without_espeak_required_fails_in_one_line_and_optional_runs_plain(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(speakers.shutil, "which", lambda name: None)
    monkeypatch.setattr(prompts_module, "_espeak_note_shown", False)  # a fresh run
    with pytest.raises(PromptError, match=r"espeak-ng is not installed.*apt-get install "
                       r"espeak-ng.*drop \[prompts\]\.speakers"):
        load_prompts("builtin", limit=2, speakers="espeak")
    plain = load_prompts("builtin", limit=2, speakers="espeak-or-none")
    assert [p.speaker_wav for p in plain] == [None, None]
    # A run loads its prompts many times over; the note is printed the first time only.
    for _ in range(3):
        load_prompts("builtin", limit=2, speakers="espeak-or-none")
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and "running without speaker references" in note[0]


def test_spec_speakers_key(tmp_path: Path) -> None:
    head = '[model]\nmodel = "random:tiny"\ncodec = "random:tiny"\n[grid]\nnum_steps = [4]\n'
    spec = parse_spec(head + '[prompts]\nspeakers = "espeak"\n', base_dir=tmp_path, name="t")
    assert spec.prompts.speakers == "espeak"
    with pytest.raises(SpecError, match=r"prompts\.speakers must be one of espeak, "
                       r"espeak-or-none"):
        parse_spec(head + '[prompts]\nspeakers = "festival"\n', base_dir=tmp_path, name="t")
    with pytest.raises(SpecError, match="both set"):
        parse_spec(head + '[prompts]\nspeakers = "espeak"\nspeaker = "a.wav"\n',
                   base_dir=tmp_path, name="t")


def test_shipped_sweeps_are_speaker_conditioned() -> None:
    assert load_spec(SWEEPS / "nightly.toml").prompts.speakers == "espeak"
    assert load_spec(SWEEPS / "smoke.toml").prompts.speakers == "espeak-or-none"
    assert load_spec(SWEEPS / "smoke.toml").measure.control is True
    from bench.gate.sweep import load_gate_spec

    gate = load_gate_spec(SWEEPS / "gate.toml")
    assert gate.sweep["prompts"]["speakers"] == "espeak"
    assert gate.thresholds.utmos_margin == 0.1
