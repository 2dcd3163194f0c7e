"""Prompt files: the Prompt type and the readers of JSONL, Seed-TTS-eval meta.lst and the
built-in English set, each checked line by line with a one-line error naming the line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import soundfile as sf

from echo_tts.errors import first_line

BUILTIN = "builtin"

BUILTIN_FILE = "prompts_en.jsonl"

JSONL_KEYS = ("id", "text", "speaker_wav", "reference_text", "category")


class PromptError(ValueError):
    """A prompt file cannot be used; the message names the file, line and fix."""


@dataclass(frozen=True)
class Prompt:
    """One text to synthesise.

    ``speaker_wav`` is the speaker reference clip (None: no speaker conditioning) and
    ``reference_text`` its transcript (Seed-TTS-eval's ``prompt_text``); ``category``
    groups the built-in prompts (short, numbers, passage, ...) for per-category reports.
    ``ground_truth_wav`` is a recording of ``text`` by the reference speaker, where the
    set has one (Seed-TTS-eval's ``gt_wav``): the control row scores it.
    """

    id: str
    text: str
    speaker_wav: Path | None = None
    reference_text: str | None = None
    category: str | None = None
    ground_truth_wav: Path | None = None


def load_builtin() -> list[Prompt]:
    """The built-in English set shipped as ``bench/data/prompts_en.jsonl``."""
    resource = resources.files("bench").joinpath("data", BUILTIN_FILE)
    with resources.as_file(resource) as path:
        return load_jsonl(path)


def load_meta_lst(path: str | Path) -> list[Prompt]:
    """A Seed-TTS-eval list: ``utt|prompt_text|prompt_wav|infer_text[|gt_wav]`` per line.

    Relative ``prompt_wav`` paths resolve against the file's folder; blank lines are
    skipped. ``gt_wav`` (the ground-truth recording; when absent, ``wavs/<utt>.wav`` as
    the published set lays it out) is kept when the file exists and is not required.
    """
    path = Path(path)
    prompts: list[tuple[int, Prompt]] = []
    for number, line in _lines(path):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) not in (4, 5):
            raise PromptError(
                f"{path}:{number}: expected 4 or 5 '|'-separated fields "
                f"(utt|prompt_text|prompt_wav|infer_text[|gt_wav]), found {len(fields)}")
        utt, prompt_text, prompt_wav, infer_text = (f.strip() for f in fields[:4])
        if not utt:
            raise PromptError(f"{path}:{number}: empty utterance id in the first field")
        speaker = _speaker_path(path, number, prompt_wav) if prompt_wav else None
        gt_name = fields[4].strip() if len(fields) == 5 else f"wavs/{utt}.wav"
        prompts.append((number, Prompt(id=utt, text=_text(path, number, infer_text),
                                       speaker_wav=speaker, reference_text=prompt_text or None,
                                       ground_truth_wav=_optional_file(path, gt_name))))
    return _checked(path, prompts)


def load_jsonl(path: str | Path) -> list[Prompt]:
    """One JSON object per line: ``{"id", "text"}`` plus optional ``speaker_wav``
    (relative paths resolve against the file's folder), ``reference_text`` and
    ``category``. Blank lines are skipped."""
    path = Path(path)
    prompts: list[tuple[int, Prompt]] = []
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptError(f"{path}:{number}: not valid JSON ({exc.msg}); write one "
                              'object per line, e.g. {"id": "p1", "text": "Hello."}') from None
        if not isinstance(row, dict):
            raise PromptError(f"{path}:{number}: expected a JSON object, got "
                              f"{type(row).__name__}")
        unknown = sorted(set(row) - set(JSONL_KEYS))
        if unknown:
            raise PromptError(f"{path}:{number}: unknown field(s) {', '.join(unknown)}; "
                              f"allowed: {', '.join(JSONL_KEYS)}")
        for key in ("id", "text"):
            if key not in row:
                raise PromptError(f"{path}:{number}: missing field {key!r}; every line needs "
                                  '"id" and "text"')
        for key in JSONL_KEYS:
            if key in row and not isinstance(row[key], str):
                raise PromptError(f"{path}:{number}: field {key!r} must be a string "
                                  f"(got {row[key]!r})")
            if key in row and not _encodable(row[key]):
                # JSON allows "\ud800" escapes; such text cannot be written back as UTF-8
                # (records, file names), so refuse it here rather than crash mid-sweep.
                raise PromptError(f"{path}:{number}: field {key!r} holds an unpaired "
                                  "surrogate escape (e.g. \\ud800); fix the text")
        if not row["id"].strip():
            raise PromptError(f"{path}:{number}: empty id")
        wav = row.get("speaker_wav")
        prompts.append((number, Prompt(
            id=row["id"].strip(),
            text=_text(path, number, row["text"]),
            speaker_wav=_speaker_path(path, number, wav) if wav else None,
            reference_text=row.get("reference_text") or None,
            category=row.get("category") or None,
        )))
    return _checked(path, prompts)


def _lines(path: Path) -> list[tuple[int, str]]:
    """(1-based number, text) of each line of a UTF-8 file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PromptError(f"{path}: no such prompt file; check the path "
                          "(relative paths resolve against the spec's folder)") from None
    except IsADirectoryError:
        raise PromptError(f"{path}: is a folder; point at the .lst or .jsonl file") from None
    try:
        text = data.decode("utf-8-sig")  # tolerate a BOM: editors on Windows add one
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise PromptError(f"{path}:{line}: not valid UTF-8; re-save the file as UTF-8") from None
    return list(enumerate(text.splitlines(), 1))


def _optional_file(path: Path, name: str) -> Path | None:
    """``name`` resolved against ``path``'s folder when it is an existing file, else None
    (an optional file must not fail a set that is otherwise fine)."""
    if not name:
        return None
    try:
        file = (path.resolve().parent / Path(name).expanduser()).resolve()
        return file if file.is_file() else None
    except (OSError, RuntimeError, ValueError):  # NUL byte, unknown ~user, too long
        return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(path: Path, number: int, text: Any) -> str:
    text = str(text).strip()
    if not text:
        raise PromptError(f"{path}:{number}: empty text; remove the line or give it text")
    return text


def _speaker_path(path: Path, number: int, wav: str) -> Path:
    try:
        speaker = Path(wav).expanduser()
        if not speaker.is_absolute():
            speaker = (path.resolve().parent / speaker).resolve()
        exists = speaker.is_file()
    except (OSError, RuntimeError, ValueError) as err:  # NUL byte, unknown ~user, too long
        raise PromptError(f"{path}:{number}: speaker clip {wav!r} is not a usable path ({err}); "
                          "fix the path") from None
    if not exists:
        raise PromptError(f"{path}:{number}: speaker clip {speaker} does not exist; fix the "
                          "path (relative paths resolve against this file's folder)")
    check_audio_header(speaker, f"{path}:{number}: speaker clip")
    return speaker


def check_audio_header(wav: Path, where: str) -> None:
    """Fail now, not hours into a sweep, on a clip that is not audio (header read only)."""
    try:
        info = sf.info(str(wav))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        reason = first_line(err)
        raise PromptError(f"{where} {wav} is not readable audio ({reason}); pass a WAV or "
                          "FLAC file") from None
    if info.frames == 0:
        raise PromptError(f"{where} {wav} holds no audio; pass a recording of the speaker")


def _checked(path: Path, numbered: list[tuple[int, Prompt]]) -> list[Prompt]:
    """Reject empty sets and duplicate ids (records are keyed by prompt id)."""
    if not numbered:
        raise PromptError(f"{path}: no prompts in the file")
    first_line: dict[str, int] = {}
    for number, prompt in numbered:
        if prompt.id in first_line:
            raise PromptError(f"{path}:{number}: duplicate prompt id {prompt.id!r} (first on "
                              f"line {first_line[prompt.id]}); ids must be unique")
        first_line[prompt.id] = number
    return [prompt for _, prompt in numbered]
