"""Standard prompt sets (Seed-TTS-eval test-en, LibriSpeech-PC test-clean) from fixtures
written here in the published layouts, and the set cache's install command."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.cli import main
from bench.spec.parser import parse_spec
from bench.spec.prompt_files import PromptError
from bench.spec.prompt_sets import LIBRISPEECH_LIST, install, load_named, set_folder
from bench.spec.prompts import load_prompts


def _wav(path: Path, seconds: float = 0.5, rate: int = 16_000, fmt: str = "WAV") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), 0.1 * np.sin(2 * np.pi * 220 * t), rate, format=fmt)
    return path


def seed_tts_fixture(folder: Path, n: int = 3) -> Path:
    """``folder/en/{meta.lst, prompt-wavs/, wavs/}`` as in seedtts_testset.tar (4 fields,
    ground truth implied as wavs/<utt>.wav)."""
    en = folder / "en"
    lines = []
    for i in range(n):
        utt = f"common_voice_en_{i:05d}-common_voice_en_{i + 100:05d}"
        _wav(en / "prompt-wavs" / f"common_voice_en_{i + 100:05d}.wav")
        _wav(en / "wavs" / f"{utt}.wav")
        lines.append(f"{utt}|Prompt text {i}.|prompt-wavs/common_voice_en_{i + 100:05d}.wav|"
                     f"Target text number {i}.")
    (en / "meta.lst").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def librispeech_fixture(folder: Path) -> Path:
    """F5-TTS's list plus ``LibriSpeech/test-clean/<spk>/<chapter>/<utt>.flac``."""
    rows = [("1089-134686-0001", "3.2", "Stuff it into you.", "1089-134686-0000", "8.1",
             "He hoped there would be stew for dinner."),
            ("121-121726-0000", "2.9", "Also, a popular contrivance.", "121-121726-0001",
             "4.4", "Harangue, the tiresome product of a tireless tongue.")]
    audio = folder / "LibriSpeech" / "test-clean"
    for ref, _, _, gen, _, _ in rows:
        for utt in (ref, gen):
            spk, chapter, _ = utt.split("-")
            _wav(audio / spk / chapter / f"{utt}.flac", fmt="FLAC")
    (folder / LIBRISPEECH_LIST).write_text(
        "\n".join("\t".join(r) for r in rows) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def sets_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "sets"
    monkeypatch.setenv("ECHO_BENCH_PROMPT_SETS", str(root))
    return root


def test_seed_tts_eval_loads_prompt_clip_text_and_ground_truth(sets_root: Path) -> None:
    seed_tts_fixture(sets_root / "seed-tts-eval")
    prompts = load_prompts("seed-tts-eval:en", limit=2)
    assert [p.text for p in prompts] == ["Target text number 0.", "Target text number 1."]
    first = prompts[0]
    assert first.speaker_wav is not None and first.speaker_wav.name.endswith("00100.wav")
    assert first.reference_text == "Prompt text 0."
    assert first.ground_truth_wav == (sets_root / "seed-tts-eval" / "en" / "wavs"
                                      / f"{first.id}.wav").resolve()


def test_seed_tts_eval_missing_ground_truth_names_the_file(sets_root: Path) -> None:
    folder = seed_tts_fixture(sets_root / "seed-tts-eval")
    missing = next((folder / "en" / "wavs").iterdir())
    missing.unlink()
    with pytest.raises(PromptError, match=r"no ground-truth recording for 1 prompts .*"
                       + missing.name) as err:
        load_named("seed-tts-eval:en")
    assert "\n" not in str(err.value)


def test_librispeech_pc_cross_sentence(sets_root: Path) -> None:
    librispeech_fixture(sets_root / "librispeech-pc")
    prompts = load_prompts("librispeech-pc:test-clean")
    assert [p.id for p in prompts] == ["1089-134686-0000", "121-121726-0001"]
    p = prompts[0]
    assert p.text == "He hoped there would be stew for dinner."
    assert p.reference_text == "Stuff it into you."
    assert p.speaker_wav is not None and p.speaker_wav.name == "1089-134686-0001.flac"
    assert p.ground_truth_wav is not None and p.ground_truth_wav.name == "1089-134686-0000.flac"


def test_librispeech_pc_missing_audio_names_the_file(sets_root: Path) -> None:
    folder = librispeech_fixture(sets_root / "librispeech-pc")
    gone = folder / "LibriSpeech" / "test-clean" / "121" / "121726" / "121-121726-0001.flac"
    gone.unlink()
    with pytest.raises(PromptError, match=r"lst:2: .*121-121726-0001.flac does not exist"):
        load_named("librispeech-pc:test-clean")


def test_librispeech_pc_bad_line_says_the_format(sets_root: Path) -> None:
    folder = librispeech_fixture(sets_root / "librispeech-pc")
    (folder / LIBRISPEECH_LIST).write_text("a\tb\tc\n", encoding="utf-8")
    with pytest.raises(PromptError, match="expected 6 tab-separated fields"):
        load_named("librispeech-pc:test-clean")


def test_set_not_installed_says_how_to_install(sets_root: Path) -> None:
    with pytest.raises(PromptError, match=r"prompt-sets install seed-tts-eval:en --from"):
        load_prompts("seed-tts-eval:en")
    with pytest.raises(PromptError, match="unknown prompt set 'seed-tts-eval:zh'"):
        load_named("seed-tts-eval:zh")


def test_install_from_the_published_archive(tmp_path: Path, sets_root: Path) -> None:
    # The archive wraps the set in seedtts_testset/; install moves it into place.
    staged = seed_tts_fixture(tmp_path / "staging" / "seedtts_testset")
    archive = tmp_path / "seedtts_testset.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(staged, arcname="seedtts_testset")
    prompts = install("seed-tts-eval:en", [archive])
    assert len(prompts) == 3
    assert (set_folder("seed-tts-eval:en") / "en" / "meta.lst").is_file()
    assert len(load_prompts("seed-tts-eval:en")) == 3


def test_install_download_uses_the_public_files(tmp_path: Path, sets_root: Path) -> None:
    source = librispeech_fixture(tmp_path / "upstream")
    archive = tmp_path / "test-clean.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "LibriSpeech", arcname="LibriSpeech")
    fetched: list[str] = []

    def fetch(url: str, target: Path) -> None:  # stands in for the network
        fetched.append(url)
        local = archive if url.endswith(".tar.gz") else source / LIBRISPEECH_LIST
        target.write_bytes(local.read_bytes())

    prompts = install("librispeech-pc:test-clean", [], download=True, fetch=fetch)
    assert len(prompts) == 2 and len(fetched) == 2
    assert fetched[0].startswith("https://www.openslr.org/resources/12/")


def test_install_command_bad_input_is_one_line(sets_root: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompt-sets", "install", "seed-tts-eval:en", "--download"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be downloaded here" in err[0] and "--from" in err[0]
    assert main(["prompt-sets", "install", "seed-tts-eval:en", "--from", "/nonexistent.tar"]) == 2


def test_spec_keeps_a_named_set_as_a_name(tmp_path: Path) -> None:
    text = ('[model]\nmodel = "random:tiny"\ncodec = "random:tiny"\n[prompts]\n'
            'set = "seed-tts-eval:en"\n[grid]\nnum_steps = [4]\n')
    spec = parse_spec(text, base_dir=tmp_path, name="t")
    assert spec.prompts.source == "seed-tts-eval:en"


def test_meta_lst_fifth_field_names_the_ground_truth(tmp_path: Path) -> None:
    _wav(tmp_path / "p.wav")
    _wav(tmp_path / "gt" / "u1.wav")
    lst = tmp_path / "meta.lst"
    lst.write_text("u1|ref|p.wav|Say this.|gt/u1.wav\nu2|ref|p.wav|And this.|gt/none.wav\n",
                   encoding="utf-8")
    first, second = load_prompts(lst)
    assert first.ground_truth_wav == (tmp_path / "gt" / "u1.wav").resolve()
    assert second.ground_truth_wav is None  # optional for a plain meta.lst
