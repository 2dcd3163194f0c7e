"""Score a run's generations: transcribe their audio, add WER/CER to the records.

Scores go to the run's ``scores.jsonl`` (merged into the records when read), one line per
generation and ASR model. Scoring is resumable: generations already scored with the same
ASR are skipped, and transcripts are cached by audio content, so re-scoring costs nothing.
NaN or silent audio is not scored as a normal output: its score line says why.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import faults
from bench.scoring.asr import ASR, WhisperASR, transcribe_files
from bench.scoring.cache import TranscriptCache
from bench.scoring.wer import score_utterance
from bench.store import RunStore
from echo_tts.errors import first_line

CACHE_DIRNAME = ".transcript-cache"


@dataclass
class ScoringOutcome:
    scored: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    failed: dict[str, str] = field(default_factory=dict)  # key -> error
    already: int = 0


def transcript_cache_for(run_dir: Path) -> TranscriptCache:
    """The cache shared by all runs under the same root (``<root>/.transcript-cache``)."""
    return TranscriptCache(Path(os.environ.get("ECHO_BENCH_TRANSCRIPT_CACHE",
                                               run_dir.parent / CACHE_DIRNAME)))


def make_asr(name: str, device: str = "auto", download_root: str | None = None,
             batch_size: int = 16) -> WhisperASR:
    """The Whisper ASR for a spec's ``asr``/``asr_device`` (download root from
    ``ECHO_BENCH_WHISPER_CACHE`` when set: a Modal Volume in production)."""
    from bench.devices import resolve_device  # bench.devices imports the error registry

    root = download_root or os.environ.get("ECHO_BENCH_WHISPER_CACHE")
    return WhisperASR(name, device=resolve_device(device), download_root=root,
                      batch_size=batch_size)


def score_run(run_dir: Path, *, asr: str | None = None, device: str | None = None,
              download_root: str | None = None, progress: bool = False,
              rescore: bool = False, lock: bool = True) -> tuple[WhisperASR, ScoringOutcome]:
    """Score a whole run and rebuild its parquet. ``asr``/``device`` default to the run's
    spec (``measure.asr``, else large-v3; ``measure.asr_device``, else auto). ``lock=False``
    for a run on a Modal Volume (see :meth:`RunStore.create`)."""
    with RunStore.open(run_dir, lock=lock) as store:
        measure = store.manifest.get("spec", {}).get("measure", {})
        model = make_asr(asr or measure.get("asr", "large-v3"),
                         device or measure.get("asr_device", "auto"), download_root)
        outcome = score_records(store, model, progress=progress, rescore=rescore)
        store.write_parquet()
    return model, outcome


def score_records(store: RunStore, asr: ASR, *, keys: Iterable[str] | None = None,
                  cache: TranscriptCache | None = None, progress: bool = False,
                  rescore: bool = False) -> ScoringOutcome:
    """Score the ok generations of ``store`` (only ``keys`` when given) with ``asr``."""
    cache = cache or transcript_cache_for(store.path)
    outcome = ScoringOutcome()
    todo: list[dict[str, Any]] = []
    for record in store.records(with_scores=True, keys=keys):
        if record.get("status") != "ok":
            continue
        if not rescore and record.get("asr_model") == asr.name:
            outcome.already += 1
            continue
        reason = _skip_reason(store.path, record)
        if reason:
            store.append_score(record["key"], {"asr_model": asr.name, "score_status": reason,
                                               "wer": None, "cer": None})
            outcome.skipped[reason] = outcome.skipped.get(reason, 0) + 1
            continue
        todo.append(record)
    if not todo:
        return outcome
    paths = [store.path / r["audio_path"] for r in todo]
    try:
        for path in paths:
            faults.transcription(path.name)
        transcripts: list[str | Exception] = list(transcribe_files(asr, paths, cache, progress))
    except Exception:
        # One bad file must not sink the others: retry one at a time to find it.
        transcripts = [_transcribe_one(asr, path, cache) for path in paths]
    for record, transcript in zip(todo, transcripts, strict=True):
        if isinstance(transcript, Exception):
            error = f"{type(transcript).__name__}: {first_line(transcript, empty='')}"
            store.append_score(record["key"], {"asr_model": asr.name, "score_status": "failed",
                                               "score_error": error[:300], "wer": None, "cer": None})
            outcome.failed[record["key"]] = error
            continue
        store.append_score(record["key"], score_fields(record, transcript, asr))
        outcome.scored += 1
        faults.after_event("kill_during_scoring")
    return outcome


def score_fields(record: dict[str, Any], transcript: str, asr: ASR) -> dict[str, Any]:
    """The score line of one generation."""
    score = score_utterance(record["text"], transcript)
    return {
        "asr_model": asr.name,
        "asr_random": asr.is_random,
        "score_status": "ok",
        "transcript": transcript,
        "transcript_norm": score.hyp_norm,
        "reference_norm": score.ref_norm,
        "ref_words": score.ref_words,
        "hits": score.hits,
        "substitutions": score.substitutions,
        "deletions": score.deletions,
        "insertions": score.insertions,
        "ref_chars": score.ref_chars,
        "char_errors": score.char_errors,
        "wer": score.wer,
        "cer": score.cer,
        "empty_hyp": score.empty_hyp,
        "empty_ref": score.empty_ref,
        # Quality from random weights (either model) says nothing about speech.
        "quality_meaningful": not record.get("random_weights", False) and not asr.is_random,
    }


def _skip_reason(run_dir: Path, record: dict[str, Any]) -> str | None:
    if record.get("audio_nan"):
        return "skipped_nan_audio"
    if record.get("audio_silent"):
        return "skipped_silent_audio"
    if not record.get("audio_path") or not (run_dir / record["audio_path"]).is_file():
        return "skipped_no_audio"
    return None


def _transcribe_one(asr: ASR, path: Path, cache: TranscriptCache) -> str | Exception:
    try:
        faults.transcription(path.name)
        return transcribe_files(asr, [path], cache)[0]
    except Exception as err:
        return err
