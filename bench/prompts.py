"""Prompt sets: the built-in English set, Seed-TTS-eval ``meta.lst`` files and JSONL, the
standard sets of :mod:`bench.prompt_sets` by name, and the built-in espeak-ng speakers.

Every loader returns :class:`Prompt` objects in file order and checks what a sweep would
otherwise trip over hours later: missing or non-UTF-8 files, missing fields, duplicate
ids, empty text and speaker clips that do not exist. Errors are :class:`PromptError`s
whose one-line message names the file, the line and the fix.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import soundfile as sf

from bench.spec import PromptSpec
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


# --------------------------------------------------------------------------- loaders


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


def load_prompts(
    spec: PromptSpec | str | Path = BUILTIN,
    *,
    limit: int | None = None,
    ids: Sequence[str] | None = None,
    speaker: str | Path | None = None,
    speakers: str | None = None,
) -> list[Prompt]:
    """The prompts a sweep runs: a :class:`PromptSpec`, or a source ("builtin", a
    ``.lst`` or a ``.jsonl`` path) with the same options as keywords.

    Selection keeps the set's order: ``ids`` picks prompts (every id must exist), then
    ``limit`` keeps the first N. ``speaker`` replaces every prompt's speaker clip and
    clears ``reference_text``, which transcribed the replaced clip. ``speakers``
    ("espeak" or "espeak-or-none") gives every prompt without a clip one of the built-in
    speakers (:func:`assign_builtin_speakers`).
    """
    if isinstance(spec, PromptSpec):
        if limit is not None or ids is not None or speaker is not None or speakers is not None:
            raise TypeError("pass either a PromptSpec or keyword options, not both")
        source: str | Path = spec.source
        limit, ids, speaker, speakers = spec.limit, spec.ids, spec.speaker, spec.speakers
    else:
        source = spec
    if limit is not None and limit < 1:
        raise PromptError(f"limit must be >= 1 (got {limit})")

    prompts = _load_source(source)
    if speakers is not None:
        # Assigned over the whole set before selection, so a prompt keeps its voice
        # whichever subset a spec picks.
        prompts = assign_builtin_speakers(prompts, required=speakers == "espeak")
    if ids is not None:
        known = {p.id for p in prompts}
        missing = [i for i in ids if i not in known]
        if missing:
            raise PromptError(f"{source}: no prompt with id {', '.join(map(repr, missing))}; "
                              f"ids are like {prompts[0].id!r}")
        wanted = set(ids)
        prompts = [p for p in prompts if p.id in wanted]
    if limit is not None:
        prompts = prompts[:limit]
    if speaker is not None:
        wav = Path(speaker).expanduser()
        if not wav.is_file():
            raise PromptError(f"speaker clip {wav} does not exist; fix [prompts].speaker")
        _check_audio_header(wav, "[prompts].speaker clip")
        prompts = [replace(p, speaker_wav=wav, reference_text=None) for p in prompts]
    return prompts


# Whether the no-espeak-ng note was printed: once per process (one run) is enough, and a
# sweep loads its prompts many times over (spec check, cells, controls, scoring, report):
# the smoke sweep printed it 16 times.
_espeak_note_shown = False


def assign_builtin_speakers(prompts: Sequence[Prompt], *, required: bool = True
                            ) -> list[Prompt]:
    """Give each prompt without a speaker clip a built-in espeak-ng speaker, in turn.

    The n-th such prompt gets voice n mod 6 (the control row reads its text with the same
    voice, see :mod:`bench.controls`). Without espeak-ng: a PromptError when
    ``required``, else the prompts unchanged and a one-line note on stderr (the first
    time only).
    """
    global _espeak_note_shown
    from bench.speakers import EspeakMissing, builtin_speakers

    try:
        voices = builtin_speakers()
    except EspeakMissing as err:
        if required:
            raise PromptError(str(err)) from None
        if not _espeak_note_shown:
            _espeak_note_shown = True
            print("echo-bench: note: espeak-ng not found; running without speaker references "
                  "(install espeak-ng for speaker-conditioned runs)", file=sys.stderr)
        return list(prompts)
    out = []
    turn = 0
    for prompt in prompts:
        if prompt.speaker_wav is None:
            voice = voices[turn % len(voices)]
            turn += 1
            prompt = replace(prompt, speaker_wav=voice.wav, reference_text=voice.text)
        out.append(prompt)
    return out


# --------------------------------------------------------------------------- helpers


def _load_source(source: str | Path) -> list[Prompt]:
    if str(source) == BUILTIN:
        return load_builtin()
    from bench.prompt_sets import NAMED_SETS, load_named

    if str(source) in NAMED_SETS:
        return load_named(str(source))
    path = Path(source)
    if path.suffix == ".lst":
        return load_meta_lst(path)
    if path.suffix == ".jsonl":
        return load_jsonl(path)
    raise PromptError(f"{path}: unknown prompt-set format {path.suffix or '(no suffix)'!r}; "
                      f'use "builtin", {", ".join(NAMED_SETS)}, a Seed-TTS-eval .lst or a '
                      ".jsonl file")


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
    _check_audio_header(speaker, f"{path}:{number}: speaker clip")
    return speaker


def _check_audio_header(wav: Path, where: str) -> None:
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
