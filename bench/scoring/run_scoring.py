"""Score a run's generations: transcribe their audio, add WER/CER to the records, then the
audio quality metrics the spec asks for (SIM, UTMOS, DNSMOS; `bench.scoring.quality`).

Scores go to the run's ``scores.jsonl`` (merged into the records when read), one line per
generation and ASR model. Scoring is resumable: generations already scored with the same
ASR are skipped, and transcripts are cached by audio content, so re-scoring costs nothing.
NaN or silent audio is not transcribed: its score line says why and scores it as an empty
transcript (all deletions), as :mod:`bench.scoring.outcomes` counts it everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core import faults
from bench.scoring.asr import ASR, WhisperASR, transcribe_files
from bench.scoring.asr_ct2 import PREFIX as FASTER_WHISPER
from bench.scoring.asr_ct2 import FasterWhisperASR
from bench.scoring.cache import TranscriptCache
from bench.scoring.metric import Metric
from bench.scoring.models import models_dir
from bench.scoring.outcomes import NO_SPEECH_SCORES
from bench.scoring.protocols import Protocol, get_protocol, protocol_fields
from bench.scoring.quality import QualityOutcome, load_metrics, resolve_present, score_quality
from bench.store.run_store import RunStore
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
             batch_size: int = 16, models_root: str | None = None) -> ASR:
    """The ASR for a spec's ``asr``/``asr_device``: ``faster-whisper:<name or folder>``
    (named models from the models folder, see `bench.scoring.models`), else openai-whisper
    (download root from ``ECHO_BENCH_WHISPER_CACHE`` when set: a Modal Volume in production)."""
    from bench.core.devices import resolve_device  # bench.core.devices imports the error registry

    if name.startswith(FASTER_WHISPER):
        return FasterWhisperASR(name.removeprefix(FASTER_WHISPER), models_dir(models_root),
                                device=resolve_device(device).type, batch_size=batch_size)
    root = download_root or os.environ.get("ECHO_BENCH_WHISPER_CACHE")
    return WhisperASR(name, device=resolve_device(device), download_root=root,
                      batch_size=batch_size)


@dataclass
class QualityScorer:
    """The quality metrics of a spec (``measure.sim``, ``measure.mos``), loaded once, with
    the one-line messages of those whose model is missing."""

    metrics: list[Metric]
    missing: dict[str, str]
    #: One line saying which "when present" choice fell back (None: none did); the
    #: caller prints it once.
    note: str | None = None

    @classmethod
    def load(cls, sim: str, mos: Iterable[str], device: str = "auto",
             models_root: str | None = None) -> QualityScorer:
        from bench.core.devices import resolve_device

        root = models_dir(models_root)
        sim, chosen, note = resolve_present(sim, list(mos), root)
        metrics, missing = load_metrics(sim, chosen, root, str(resolve_device(device)))
        return cls(metrics, missing, note)

    def __bool__(self) -> bool:
        return bool(self.metrics or self.missing)

    def score(self, store: RunStore, keys: Iterable[str] | None = None,
              rescore: bool = False) -> QualityOutcome:
        return score_quality(store, self.metrics, missing=self.missing, keys=keys, rescore=rescore)


def score_run(run_dir: Path, *, asr: str | None = None, device: str | None = None,
              download_root: str | None = None, progress: bool = False,
              rescore: bool = False, sim: str | None = None, mos: Iterable[str] | None = None,
              models_root: str | None = None, protocol: str | None = None,
              lock: bool = True
              ) -> tuple[ASR, ScoringOutcome, QualityScorer, QualityOutcome]:
    """Score a whole run and rebuild its parquet. ``asr``/``device``/``sim``/``mos``/
    ``protocol`` default to the run's spec (``measure.asr``, else large-v3;
    ``measure.asr_device``, else auto; ``measure.sim``, else none; ``measure.mos``, else
    none; ``measure.wer_protocol``, else whisper-normalizer). ``lock=False`` for a run on
    a Modal Volume (see :meth:`RunStore.create`)."""
    with RunStore.open(run_dir, lock=lock) as store:
        measure = store.manifest.get("spec", {}).get("measure", {})
        device = device or measure.get("asr_device", "auto")
        wer_protocol = get_protocol(protocol or measure.get("wer_protocol"))
        model = make_asr(asr or measure.get("asr", "large-v3"), device, download_root,
                         models_root=models_root)
        outcome = score_records(store, model, progress=progress, rescore=rescore,
                                protocol=wer_protocol)
        quality = QualityScorer.load(sim or measure.get("sim", "none"),
                                     measure.get("mos", []) if mos is None else mos,
                                     device, models_root)
        quality_outcome = quality.score(store, rescore=rescore)
        store.write_parquet()
    return model, outcome, quality, quality_outcome


def score_records(store: RunStore, asr: ASR, *, keys: Iterable[str] | None = None,
                  cache: TranscriptCache | None = None, progress: bool = False,
                  rescore: bool = False, protocol: Protocol | None = None) -> ScoringOutcome:
    """Score the ok generations of ``store`` (only ``keys`` when given) with ``asr``,
    WER under ``protocol`` (default whisper-normalizer)."""
    protocol = protocol or get_protocol(None)
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
        if reason in NO_SPEECH_SCORES:
            # No speech to transcribe: scored as an empty transcript (every reference word
            # deleted), the rule of bench.scoring.outcomes, so the line carries the cell's loss.
            store.append_score(record["key"], {**store.score_of(record["key"]),
                                               **score_fields(record, "", asr, protocol),
                                               "score_status": reason})
            outcome.skipped[reason] = outcome.skipped.get(reason, 0) + 1
            continue
        if reason:
            store.append_score(record["key"], {**store.score_of(record["key"]),
                                               "asr_model": asr.name, "score_status": reason,
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
            store.append_score(record["key"], {**store.score_of(record["key"]),
                                               "asr_model": asr.name, "score_status": "failed",
                                               "score_error": error[:300], "wer": None, "cer": None})
            outcome.failed[record["key"]] = error
            continue
        earlier = store.score_of(record["key"])
        earlier.pop("score_error", None)  # from a failed earlier attempt
        store.append_score(record["key"],
                           {**earlier, **score_fields(record, transcript, asr, protocol)})
        outcome.scored += 1
        faults.after_event("kill_during_scoring")
    return outcome


def score_fields(record: dict[str, Any], transcript: str, asr: ASR,
                 protocol: Protocol | None = None) -> dict[str, Any]:
    """The score line of one generation (the raw transcript is kept, so the WER fields can
    be recomputed under another protocol without the ASR)."""
    return {
        "asr_model": asr.name,
        "asr_random": asr.is_random,
        "score_status": "ok",
        "transcript": transcript,
        **protocol_fields(record["text"], transcript, protocol or get_protocol(None)),
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
