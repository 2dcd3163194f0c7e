"""Control rows: score audio that Echo did not generate with the same metrics as a sweep.

Every paper's table starts with a "ground truth" row: the test set's own recordings run
through the same ASR and speaker model. It is the floor of what the metrics can say (ASR
errors on real speech, SIM between two recordings of one speaker), so each setting can be
read against it rather than against zero. :func:`score_control` adds that row to a run;
:func:`score_audio_folder` scores any folder of audio (another TTS system, a recording
session) against a prompt set, for ``echo-bench score-audio DIR --prompts SET``.

Scored audio is kept as a run directory of its own (a :class:`~bench.store.run_store.RunStore` with
one record per file, ``control: true``), so scoring is resumable and cached exactly like a
sweep's; a sweep's control lives in ``<run>/controls/<name>/``. Records point at the audio
where it lies (absolute paths); nothing is copied.

Where a built-in prompt has a built-in espeak-ng speaker, its "ground truth" is its text
read by that same espeak-ng voice: synthetic, but the right floor for that set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from bench.core.errors import UserError
from bench.run.measure import capture_environment
from bench.scoring.asr import ASR
from bench.scoring.protocols import Protocol
from bench.scoring.run_scoring import QualityScorer, ScoringOutcome, score_records
from bench.spec.prompt_files import Prompt
from bench.spec.prompts import load_prompts
from bench.store.layout import record_key, utc_now
from bench.store.run_store import RunStore

__all__ = [
    "AUDIO_SUFFIXES",
    "CONTROLS_DIR",
    "GROUND_TRUTH",
    "control_dirs",
    "ground_truth_files",
    "match_folder",
    "prompts_of_run",
    "score_audio_folder",
    "score_control",
    "write_audio_run",
]

AUDIO_SUFFIXES = (".wav", ".flac")
CONTROLS_DIR = "controls"
GROUND_TRUTH = "ground-truth"
# The sweep's own silence threshold (bench.run.worker.SILENCE_PEAK): a file this quiet is not
# scored, exactly as a silent generation is not.
_SILENCE_PEAK = 1e-4


def ground_truth_files(prompts: Sequence[Prompt]) -> dict[str, Path]:
    """Prompt id -> recording of its text by its reference speaker, where one exists.

    The set's own ``ground_truth_wav`` where it has one; for a prompt whose speaker is a
    built-in espeak-ng voice, its text read by that voice (synthesised into the cache).
    """
    files = {p.id: p.ground_truth_wav for p in prompts if p.ground_truth_wav is not None}
    needs_voice = [p for p in prompts if p.id not in files and p.speaker_wav is not None]
    if needs_voice:
        from bench.spec.speakers import builtin_speakers, espeak_available, speak_text

        if espeak_available():
            voice_of = {s.wav.resolve(): s.voice for s in builtin_speakers()}
            for prompt in needs_voice:
                assert prompt.speaker_wav is not None
                voice = voice_of.get(prompt.speaker_wav.resolve())
                if voice is not None:
                    files[prompt.id] = speak_text(voice, prompt.text)
    return files


def match_folder(folder: Path, prompts: Sequence[Prompt]) -> dict[str, Path]:
    """Audio files of ``folder`` by prompt id (file stem == prompt id, .wav or .flac).

    Raises UserError when the folder is missing or empty, or when any audio file matches
    no prompt (a typo there would silently shrink the comparison).
    """
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; pass the folder holding the audio files")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise UserError(f"{folder} holds no .wav or .flac files; pass the folder of audio "
                        "named <prompt id>.wav")
    ids = {p.id for p in prompts}
    unmatched = [f.name for f in files if f.stem not in ids]
    if unmatched:
        example = prompts[0].id if prompts else "en-001"
        raise UserError(f"{len(unmatched)} file(s) in {folder} match no prompt id of the set "
                        f"(e.g. {unmatched[0]!r}); name each file <prompt id>.wav, e.g. "
                        f"{example}.wav, or pick the matching --prompts set")
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise UserError(f"{folder}: {seen[f.stem].name} and {f.name} are both prompt "
                            f"{f.stem!r}; keep one")
        seen[f.stem] = f
    return seen


def _audio_flags(path: Path) -> dict[str, Any]:
    """Duration and the NaN/silence flags the scorer reads, from the file's samples."""
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise UserError(f"{path} is not readable audio ({err}); remove it or re-export it "
                        "as WAV or FLAC") from None
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    nan = not math.isfinite(peak)
    return {"audio_seconds": audio.shape[0] / rate, "audio_nan": nan,
            "audio_silent": not nan and peak < _SILENCE_PEAK}


def write_audio_run(root: Path, name: str, files: Mapping[str, Path],
                    prompts: Sequence[Prompt], *, source: str, run_id: str | None = None
                    ) -> Path:
    """Create (or resume) a run of externally made audio: one record per file.

    Args:
        root: folder the run directory goes in.
        name: label of the audio, e.g. "ground-truth" or "cosyvoice2"; its cell id is
            ``control-<name>``.
        files: prompt id -> audio file.
        prompts: the prompt set (texts and speaker references of the files).
        source: what the audio is, for the manifest.
        run_id: folder name; an existing run of that name is resumed.

    Returns:
        The run directory.
    """
    cell_id = f"control-{name}".replace("/", "-")
    by_id = {p.id: p for p in prompts}
    path = root / run_id if run_id else None
    if path is not None and (path / "manifest.json").is_file():
        store = RunStore.open(path)
    else:
        spec = {"kind": "audio", "source": source, "name": name, "measure": {}}
        store = RunStore.create(root, run_id=run_id, spec=spec, spec_name=f"audio-{name}",
                                spec_hash="", environment=capture_environment())
    with store:
        for prompt_id, audio in files.items():
            prompt = by_id[prompt_id]
            key = record_key(cell_id, prompt_id, 0, 0)
            if key in store.done_keys():
                continue
            store.append({
                "key": key, "status": "ok", "cell_id": cell_id, "cell_label": name,
                "prompt_id": prompt_id, "seed": 0, "repeat": 0, "text": prompt.text,
                "control": True, "random_weights": False,
                "audio_path": str(audio.resolve()),
                "speaker_wav": None if prompt.speaker_wav is None else str(prompt.speaker_wav),
                "ground_truth_wav": (None if prompt.ground_truth_wav is None
                                     else str(prompt.ground_truth_wav)),
                "finished_at": utc_now(),
                **_audio_flags(audio),
            })
        store.finalize("complete")
        return store.path


def _score(run_dir: Path, asr: ASR, protocol: Protocol,
           quality: QualityScorer | None = None) -> ScoringOutcome:
    with RunStore.open(run_dir) as store:
        outcome = score_records(store, asr, protocol=protocol)
        if quality:  # SIM / MOS on the recordings, beside the cells' figures
            quality.score(store)
        store.write_parquet()
    return outcome


def score_audio_folder(folder: Path, prompts: Sequence[Prompt], out_root: Path, asr: ASR,
                       protocol: Protocol, *, name: str | None = None,
                       quality: QualityScorer | None = None
                       ) -> tuple[Path, ScoringOutcome, int]:
    """Score every audio file of ``folder`` against ``prompts``; returns the run directory,
    the scoring outcome and how many prompts had no file."""
    files = match_folder(folder, prompts)
    label = name or folder.resolve().name
    run_dir = write_audio_run(out_root, label, files, prompts, source=str(folder.resolve()))
    return run_dir, _score(run_dir, asr, protocol, quality), len(prompts) - len(files)


def control_dirs(run_dir: Path) -> list[Path]:
    """The control runs stored beside a sweep run (``<run>/controls/*``), sorted."""
    folder = run_dir / CONTROLS_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if (p / "manifest.json").is_file())


def prompts_of_run(manifest: Mapping[str, Any]) -> list[Prompt]:
    """The prompts a run's spec named (its manifest's ``spec.prompts``)."""
    table = manifest.get("spec", {}).get("prompts") or {}
    ids = table.get("ids")
    return load_prompts(table.get("source", "builtin"), limit=table.get("limit"),
                        ids=None if ids is None else tuple(ids), speaker=table.get("speaker"),
                        speakers=table.get("speakers"))


def score_control(run_dir: Path, prompts: Sequence[Prompt], asr: ASR, protocol: Protocol,
                  quality: QualityScorer | None = None
                  ) -> tuple[Path, ScoringOutcome] | None:
    """Score the prompts' ground-truth recordings as ``<run_dir>/controls/ground-truth``.

    Returns None when no prompt has a recording (a set without ground truth and without
    built-in speakers): there is no control to show.
    """
    files = ground_truth_files(prompts)
    if not files:
        return None
    control = write_audio_run(run_dir / CONTROLS_DIR, GROUND_TRUTH, files, prompts,
                              source="the prompt set's own recordings", run_id=GROUND_TRUTH)
    return control, _score(control, asr, protocol, quality)
