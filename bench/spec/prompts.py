"""The prompts a spec names: the built-in set, a file (JSONL, meta.lst), or a standard
set of :mod:`bench.spec.prompt_sets` by name, filtered by ids and limit, with the built-in
espeak-ng speakers assigned when the spec asks for them. The readers of each file format
and the :class:`Prompt` type are in :mod:`bench.spec.prompt_files`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from bench.spec.prompt_files import (
    BUILTIN,
    Prompt,
    PromptError,
    check_audio_header,
    load_builtin,
    load_jsonl,
    load_meta_lst,
)
from bench.spec.sweep import PromptSpec

# --------------------------------------------------------------------------- loaders


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
        check_audio_header(wav, "[prompts].speaker clip")
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
    voice, see :mod:`bench.scoring.controls`). Without espeak-ng: a PromptError when
    ``required``, else the prompts unchanged and a one-line note on stderr (the first
    time only).
    """
    global _espeak_note_shown
    from bench.spec.speakers import EspeakMissing, builtin_speakers

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
    from bench.spec.prompt_sets import NAMED_SETS, load_named

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


