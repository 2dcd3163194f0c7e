"""The standard speaker-conditioned prompt sets F5-TTS and Seed-TTS report on, by name.

``seed-tts-eval:en``
    Seed-TTS-eval test-en (ByteDance, github.com/BytedanceSpeech/seed-tts-eval): about a thousand
    English utterances from Common Voice, each with a speaker prompt clip, the text to say
    and the ground-truth recording. Layout of the published ``seedtts_testset.tar``:
    ``en/meta.lst`` (``utt|prompt_text|prompt_wav|infer_text[|gt_wav]``),
    ``en/prompt-wavs/``, ``en/wavs/``. Licence: the clips come from Mozilla Common Voice,
    released under CC0 1.0; the lists are from the seed-tts-eval repository; check its
    terms before redistributing.
``librispeech-pc:test-clean``
    LibriSpeech-PC test-clean, cross-sentence (the VALL-E / Voicebox / F5-TTS protocol):
    F5-TTS's list ``librispeech_pc_test_clean_cross_sentence.lst`` (tab-separated
    ``ref_utt  ref_dur  ref_txt  gen_utt  gen_dur  gen_txt``, 4-10 s targets with ~3 s
    prompts) over the LibriSpeech test-clean audio
    (``LibriSpeech/test-clean/<speaker>/<chapter>/<utt>.flac``). The prompt clip is the
    ``ref_utt`` recording, the text ``gen_txt`` (punctuated and cased, from LibriSpeech-PC)
    and the ground truth the ``gen_utt`` recording. Licence: LibriSpeech (OpenSLR 12) and
    LibriSpeech-PC (OpenSLR 145) are CC BY 4.0: credit Panayotov et al. 2015 and
    Meister et al. 2023 when publishing figures; the list is from the F5-TTS repository
    (MIT).

Neither set is shipped or downloaded behind the user's back. ``echo-bench prompt-sets
install NAME --from PATH`` copies a folder or unpacks an archive the user downloaded
into the set cache (``$ECHO_BENCH_PROMPT_SETS``, else ``~/.cache/echo-bench/prompt-sets``;
point it at a mounted Modal Volume to fill the Volume); ``--download`` fetches the
LibriSpeech-PC files from their public URLs (Seed-TTS-eval sits on Google Drive, which
needs a browser: download it and use ``--from``).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.spec.prompt_files import Prompt, PromptError, load_meta_lst

__all__ = [
    "LIBRISPEECH_LIST",
    "NAMED_SETS",
    "NamedSet",
    "install",
    "load_librispeech_pc",
    "load_named",
    "load_seed_tts_eval",
    "set_folder",
    "sets_root",
]

LIBRISPEECH_LIST = "librispeech_pc_test_clean_cross_sentence.lst"


def sets_root() -> Path:
    """``$ECHO_BENCH_PROMPT_SETS``, else ``~/.cache/echo-bench/prompt-sets``."""
    env = os.environ.get("ECHO_BENCH_PROMPT_SETS")
    return Path(env) if env else Path.home() / ".cache" / "echo-bench" / "prompt-sets"


def load_seed_tts_eval(folder: str | Path) -> list[Prompt]:
    """Seed-TTS-eval English from its folder (the one holding ``meta.lst``, or its parent
    holding ``en/meta.lst``); every prompt clip and ground-truth recording must exist."""
    folder = Path(folder)
    meta = folder / "meta.lst"
    if not meta.is_file() and (folder / "en" / "meta.lst").is_file():
        meta = folder / "en" / "meta.lst"
    if not meta.is_file():
        raise PromptError(f"{folder}: no meta.lst (nor en/meta.lst); unpack seedtts_testset.tar "
                          "there or run `echo-bench prompt-sets install seed-tts-eval:en --from "
                          "seedtts_testset.tar`")
    prompts = load_meta_lst(meta)
    missing = [p.id for p in prompts if p.ground_truth_wav is None]
    if missing:
        raise PromptError(f"{meta}: no ground-truth recording for {len(missing)} prompts (e.g. "
                          f"{meta.parent / 'wavs' / (missing[0] + '.wav')}); the set is "
                          "incomplete: unpack the whole seedtts_testset.tar again")
    return prompts


def _librispeech_audio(root: Path, utt: str, where: str) -> Path:
    parts = utt.split("-")
    if len(parts) != 3:
        raise PromptError(f"{where}: utterance id {utt!r} is not <speaker>-<chapter>-<n>; "
                          f"use F5-TTS's {LIBRISPEECH_LIST} unchanged")
    path = root.joinpath(parts[0], parts[1], f"{utt}.flac")
    if not path.is_file():
        raise PromptError(f"{where}: {path} does not exist; unpack LibriSpeech test-clean "
                          "(openslr.org/12, test-clean.tar.gz) beside the list")
    return path


def load_librispeech_pc(folder: str | Path) -> list[Prompt]:
    """LibriSpeech-PC test-clean cross-sentence from a folder holding F5-TTS's list and
    ``LibriSpeech/test-clean/`` (or ``test-clean/``)."""
    folder = Path(folder)
    lst = folder / LIBRISPEECH_LIST
    if not lst.is_file():
        raise PromptError(f"{folder}: no {LIBRISPEECH_LIST}; put F5-TTS's list there (its "
                          "repository's data/ folder) or run `echo-bench prompt-sets install "
                          "librispeech-pc:test-clean --download`")
    audio_root = next((c for c in (folder / "LibriSpeech" / "test-clean", folder / "test-clean")
                       if c.is_dir()), None)
    if audio_root is None:
        raise PromptError(f"{folder}: no LibriSpeech/test-clean folder; unpack "
                          "test-clean.tar.gz (openslr.org/12) into it")
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    text = lst.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{lst}:{number}"
        fields = line.split("\t")
        if len(fields) != 6:
            raise PromptError(f"{where}: expected 6 tab-separated fields (ref_utt ref_dur "
                              f"ref_txt gen_utt gen_dur gen_txt), found {len(fields)}")
        ref_utt, _, ref_txt, gen_utt, _, gen_txt = (f.strip() for f in fields)
        if not gen_txt:
            raise PromptError(f"{where}: empty gen_txt; use F5-TTS's list unchanged")
        if gen_utt in seen:
            raise PromptError(f"{where}: duplicate utterance {gen_utt!r} (first on line "
                              f"{seen[gen_utt]}); ids must be unique")
        seen[gen_utt] = number
        prompts.append(Prompt(id=gen_utt, text=gen_txt,
                              speaker_wav=_librispeech_audio(audio_root, ref_utt, where),
                              reference_text=ref_txt or None,
                              ground_truth_wav=_librispeech_audio(audio_root, gen_utt, where)))
    if not prompts:
        raise PromptError(f"{lst}: no prompts in the file")
    return prompts


@dataclass(frozen=True)
class NamedSet:
    """A standard set: its cache sub-folder, loader and where its files come from."""

    folder: str
    load: Callable[[Path], list[Prompt]]
    downloads: tuple[tuple[str, str], ...]  # (URL, file name); empty: manual download
    manual: str


NAMED_SETS: dict[str, NamedSet] = {
    "seed-tts-eval:en": NamedSet(
        "seed-tts-eval", load_seed_tts_eval, (),
        "download seedtts_testset.tar from the link in github.com/BytedanceSpeech/seed-tts-eval"
        " (Google Drive) and pass it with --from"),
    "librispeech-pc:test-clean": NamedSet(
        "librispeech-pc", load_librispeech_pc,
        (("https://www.openslr.org/resources/12/test-clean.tar.gz", "test-clean.tar.gz"),
         ("https://raw.githubusercontent.com/SWivid/F5-TTS/main/data/" + LIBRISPEECH_LIST,
          LIBRISPEECH_LIST)),
        "download test-clean.tar.gz (openslr.org/12) and F5-TTS's data/"
        f"{LIBRISPEECH_LIST}, and pass each with --from"),
}


def _named(name: str) -> NamedSet:
    try:
        return NAMED_SETS[name]
    except KeyError:
        raise PromptError(f"unknown prompt set {name!r}; choose one of "
                          f"{', '.join(NAMED_SETS)}") from None


def set_folder(name: str, root: Path | None = None) -> Path:
    """Where set ``name`` lives under the set cache."""
    return (root or sets_root()) / _named(name).folder


def load_named(name: str, root: Path | None = None) -> list[Prompt]:
    """Load a standard set from the set cache; a missing folder says how to fill it."""
    entry = _named(name)
    folder = set_folder(name, root)
    if not folder.is_dir():
        fill = ("--download" if entry.downloads else "--from <downloaded file>")
        raise PromptError(f"prompt set {name} is not in {folder}; fill it with `echo-bench "
                          f"prompt-sets install {name} {fill}` ({entry.manual}), or set "
                          "ECHO_BENCH_PROMPT_SETS to the folder that holds it")
    return entry.load(folder)


def _unpack(archive: Path, target: Path) -> None:
    """Unpack a tar archive into ``target`` without letting members escape it."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError) as err:
        raise PromptError(f"{archive}: cannot unpack ({err}); pass the archive as "
                          "downloaded, or an unpacked folder") from None


def _place(source: Path, target: Path) -> None:
    """Copy a folder's content, unpack an archive, or copy one file into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    elif tarfile.is_tarfile(source):
        _unpack(source, target)
    else:
        shutil.copy2(source, target / source.name)


def _flatten(target: Path, name: str) -> None:
    """The published archives wrap the set in one folder (``seedtts_testset/``); move the
    content up so the loader finds it where it looks."""
    entry = _named(name)
    try:
        entry.load(target)
        return
    except PromptError:
        pass
    children = [c for c in target.iterdir() if c.is_dir()]
    for child in children:
        try:
            entry.load(child)
        except PromptError:
            continue
        for item in child.iterdir():
            shutil.move(str(item), target / item.name)
        child.rmdir()
        return


def install(name: str, sources: list[Path], *, download: bool = False,
            root: Path | None = None,
            fetch: Callable[[str, Path], object] = urllib.request.urlretrieve) -> list[Prompt]:
    """Fill the set cache with set ``name`` from downloaded ``sources`` (folders, tar
    archives or single files), or from its public URLs with ``download``; returns the
    loaded prompts, so a broken install fails here and not in a sweep."""
    entry = _named(name)
    target = set_folder(name, root)
    if download:
        if not entry.downloads:
            raise PromptError(f"{name} cannot be downloaded here: {entry.manual}")
        with tempfile.TemporaryDirectory(prefix="echo-bench-download-") as tmp:
            for url, file_name in entry.downloads:
                path = Path(tmp) / file_name
                try:
                    fetch(url, path)
                except OSError as err:
                    raise PromptError(f"cannot download {url} ({err}); {entry.manual}") from None
                _place(path, target)
    if not sources and not download:
        raise PromptError(f"nothing to install for {name}: pass --from PATH or --download "
                          f"({entry.manual})")
    for source in sources:
        if not source.exists():
            raise PromptError(f"{source} does not exist; pass the downloaded file or folder")
        _place(source, target)
    _flatten(target, name)
    return entry.load(target)
