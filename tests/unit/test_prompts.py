"""Prompt sets: the built-in set, Seed-TTS-eval meta.lst, JSONL, selection, and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.spec.parser import load_spec
from bench.spec.prompt_files import Prompt, PromptError, load_builtin, load_jsonl, load_meta_lst
from bench.spec.prompts import load_prompts
from bench.spec.sweep import PromptSpec
from echo_tts.text import MAX_TEXT_BYTES, text_bytes


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def wav(path: Path) -> Path:
    # The loaders read the clip's header (a clip that is not audio fails at load time,
    # not hours into a sweep); decoding it is the pipeline's business.
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.full(441, 0.1, dtype="float32"), 44_100)
    return path


# --------------------------------------------------------------------------- built-in set


def test_builtin_set_size_ids_and_categories() -> None:
    prompts = load_builtin()
    assert len(prompts) >= 60
    ids = [p.id for p in prompts]
    assert len(set(ids)) == len(ids)
    assert all(i == f"en-{n:03d}" for n, i in enumerate(ids, 1))
    categories = {p.category for p in prompts}
    assert {"short", "medium", "long", "numbers", "abbreviations", "questions", "names",
            "dates_times", "lists", "passage"} <= categories
    assert all(p.speaker_wav is None and p.reference_text is None for p in prompts)


def test_builtin_lengths() -> None:
    words = {p.id: len(p.text.split()) for p in load_builtin()}
    by_category: dict[str | None, list[Prompt]] = {}
    for p in load_builtin():
        by_category.setdefault(p.category, []).append(p)
    assert min(words.values()) <= 3
    passages = by_category["passage"]
    assert len(passages) >= 4
    for p in passages:  # ~150 words: two 30-second chunks, over the encoder's byte limit
        assert 140 <= words[p.id] <= 170
        assert len(text_bytes(p.text)) > MAX_TEXT_BYTES
    for p in by_category["long"]:  # ~30 s: one chunk that fits
        assert 65 <= words[p.id] <= 80
        assert len(text_bytes(p.text)) <= MAX_TEXT_BYTES
    others = [p for c, ps in by_category.items() if c != "passage" for p in ps]
    assert all(len(text_bytes(p.text)) <= MAX_TEXT_BYTES for p in others)


def test_builtin_covers_hard_text() -> None:
    text = " ".join(p.text for p in load_builtin())
    for needle in ("$3.50", "1987", "42%", "Dr.", "NASA", "e.g.", "?", "7:30"):
        assert needle in text


def test_builtin_file_lines_have_exactly_the_documented_fields() -> None:
    from importlib import resources

    data = resources.files("bench").joinpath("data", "prompts_en.jsonl").read_text("utf-8")
    for line in data.splitlines():
        assert set(json.loads(line)) == {"id", "text", "category"}


# --------------------------------------------------------------------------- meta.lst


def test_meta_lst_resolves_relative_paths(tmp_path: Path) -> None:
    clip = wav(tmp_path / "wavs" / "a.wav")
    absolute = wav(tmp_path / "elsewhere" / "b.wav")
    meta = write(tmp_path / "set" / "meta.lst",
                 "utt1|The prompt clip says this.|../wavs/a.wav|Say this please.\n"
                 "\n"
                 f"utt2|Another clip.|{absolute}|And this.|gt/utt2.wav\n")
    prompts = load_meta_lst(meta)
    assert [p.id for p in prompts] == ["utt1", "utt2"]
    assert prompts[0].speaker_wav == clip.resolve()
    assert prompts[0].reference_text == "The prompt clip says this."
    assert prompts[0].text == "Say this please."
    assert prompts[1].speaker_wav == absolute
    assert load_prompts(meta) == prompts


def test_meta_lst_without_speaker_clip(tmp_path: Path) -> None:
    meta = write(tmp_path / "meta.lst", "u1|||Plain text.\n")
    (prompt,) = load_meta_lst(meta)
    assert prompt.speaker_wav is None and prompt.reference_text is None


# --------------------------------------------------------------------------- JSONL


def test_jsonl(tmp_path: Path) -> None:
    clip = wav(tmp_path / "voice.wav")
    path = write(tmp_path / "p.jsonl",
                 '{"id": "a", "text": "Hello there."}\n\n'
                 '{"id": "b", "text": "With a voice.", "speaker_wav": "voice.wav", '
                 '"reference_text": "clip words", "category": "x"}\n')
    a, b = load_jsonl(path)
    assert a == Prompt("a", "Hello there.")
    assert b.speaker_wav == clip and b.reference_text == "clip words" and b.category == "x"


# --------------------------------------------------------------------------- selection


def test_ids_then_limit_keep_set_order() -> None:
    prompts = load_prompts("builtin", ids=["en-027", "en-002", "en-010"])
    assert [p.id for p in prompts] == ["en-002", "en-010", "en-027"]
    assert [p.id for p in load_prompts("builtin", ids=["en-027", "en-002"], limit=1)] == [
        "en-002"]
    assert [p.id for p in load_prompts(limit=2)] == ["en-001", "en-002"]


def test_spec_speaker_replaces_every_clip(tmp_path: Path) -> None:
    voice = wav(tmp_path / "voice.wav")
    wav(tmp_path / "own.wav")
    meta = write(tmp_path / "meta.lst", "u1|own words|own.wav|Text one.\nu2|||Text two.\n")
    spec = PromptSpec(source=meta, speaker=voice)
    prompts = load_prompts(spec)
    assert all(p.speaker_wav == voice and p.reference_text is None for p in prompts)


def test_prompt_spec_from_a_spec_file(tmp_path: Path) -> None:
    wav(tmp_path / "voices" / "v.wav")
    write(tmp_path / "data" / "p.jsonl", '{"id": "a", "text": "One."}\n'
          '{"id": "b", "text": "Two."}\n')
    spec_file = write(tmp_path / "s.toml", '[model]\nmodel = "random:tiny"\n[prompts]\n'
                      'set = "data/p.jsonl"\nspeaker = "voices/v.wav"\nlimit = 1\n')
    (prompt,) = load_prompts(load_spec(spec_file).prompts)
    assert prompt.id == "a" and prompt.speaker_wav == tmp_path / "voices" / "v.wav"


def test_smoke_sweep_prompts() -> None:
    from importlib import resources

    spec = load_spec(Path(str(resources.files("bench").joinpath("sweeps", "smoke.toml"))))
    prompts = load_prompts(spec.prompts)
    assert [p.category for p in prompts] == ["short", "medium", "numbers"]


def test_spec_and_keywords_are_exclusive() -> None:
    with pytest.raises(TypeError):
        load_prompts(PromptSpec(), limit=2)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("name", "content", "fragments"),
    [
        ("p.jsonl", '{"id": "a"}\n', ["p.jsonl:1", "missing field 'text'"]),
        ("p.jsonl", '{"text": "x"}\n', ["p.jsonl:1", "missing field 'id'"]),
        ("p.jsonl", '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n',
         ["p.jsonl:2", "duplicate prompt id 'a'", "first on line 1"]),
        ("p.jsonl", '{"id": "a", "text": "  "}\n', ["p.jsonl:1", "empty text"]),
        ("p.jsonl", '{"id": "a", "text": "x", "speaker": "v.wav"}\n',
         ["p.jsonl:1", "unknown field(s) speaker", "speaker_wav"]),
        ("p.jsonl", '{"id": "a", "text": "x", "speaker_wav": "nope.wav"}\n',
         ["p.jsonl:1", "nope.wav does not exist"]),
        ("p.jsonl", '{"id": "a", "text": 3}\n', ["p.jsonl:1", "'text' must be a string"]),
        ("p.jsonl", '{"id": "a", "text": "x"}\n{"id": \n', ["p.jsonl:2", "not valid JSON"]),
        ("p.jsonl", '["a", "x"]\n', ["p.jsonl:1", "expected a JSON object"]),
        ("p.jsonl", "\n\n", ["p.jsonl", "no prompts"]),
        ("meta.lst", "u1|t|a.wav\n", ["meta.lst:1", "expected 4 or 5", "found 3"]),
        ("meta.lst", "u1|||ok\nu2|t|missing.wav|Text.\n", ["meta.lst:2", "missing.wav does not exist"]),
        ("meta.lst", "u1|||one\nu1|||two\n", ["meta.lst:2", "duplicate prompt id 'u1'"]),
        ("meta.lst", "u1|||   \n", ["meta.lst:1", "empty text"]),
        ("meta.lst", "|||text\n", ["meta.lst:1", "empty utterance id"]),
        ("meta.lst", "u1|t|a\x00.wav|Text.\n", ["meta.lst:1", "not a usable path"]),
        ("prompts.csv", "id,text\n", ["prompts.csv", "unknown prompt-set format '.csv'"]),
    ],
)
def test_prompt_errors(tmp_path: Path, name: str, content: str, fragments: list[str]) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(PromptError) as info:
        load_prompts(path)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="no such prompt file"):
        load_prompts(tmp_path / "missing.lst")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"id": "a", "text": "x"}\n{"id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(PromptError, match=r"bad.jsonl:2: not valid UTF-8"):
        load_jsonl(bad)


def test_selection_errors(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="no prompt with id 'en-999'"):
        load_prompts(ids=["en-001", "en-999"])
    with pytest.raises(PromptError, match="limit must be >= 1"):
        load_prompts(limit=0)
    with pytest.raises(PromptError, match=r"speaker clip .* does not exist"):
        load_prompts(speaker=tmp_path / "none.wav")
