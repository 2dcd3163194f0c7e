"""Score a run's generations with the audio quality metrics (SIM, UTMOS, DNSMOS).

Columns go to the run's score lines beside WER/CER (each line keeps the columns earlier
scorers wrote). Per metric: ``<name>_model`` and its values, or ``<name>_skipped`` with the
reason ("too short", "no speaker reference", "model missing: ...", ...), never a made-up
number. Vectors are cached by audio content and model, records are written chunk by chunk,
and a record already scored with the same model is left alone: scoring is resumable.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from bench.scoring.asr import read_audio_16k
from bench.scoring.cache import VectorCache, sha256_file
from bench.scoring.metric import Metric
from bench.scoring.models import ModelMissingError
from bench.spec.prompt_files import PromptError
from bench.spec.prompts import load_prompts
from bench.spec.speakers import EspeakMissing
from bench.store.run_store import RunStore
from echo_tts.errors import first_line

__all__ = ["MOS_IF_PRESENT", "MOS_METRICS", "SIM_PREFERRED", "QualityOutcome", "load_metrics",
           "resolve_present", "score_quality", "vector_cache_for"]

CACHE_DIRNAME = ".score-cache"
MOS_METRICS = ("dnsmos", "utmos")
#: Spec values for "the published model when its weights are in the models folder, else
#: what ships with the packages": the scheduled Modal runs use them, so a Volume that
#: `echo-bench modal prefetch` filled scores like Seed-TTS-eval, and one that it did not
#: still scores (Resemblyzer SIM, no UTMOS) and says so once.
SIM_PREFERRED = "wavlm-ecapa-or-resemblyzer"
MOS_IF_PRESENT = "utmos-if-present"
# The metric each choice becomes, and the model file (bench.scoring.models) it needs.
_PREFERRED = {SIM_PREFERRED: ("wavlm-ecapa", "wavlm-ecapa", "resemblyzer")}
_IF_PRESENT = {MOS_IF_PRESENT: ("utmos", "utmos22-strong")}
TOO_SHORT = "too short"
_CHUNK = 32  # records scored (and written) at a time


@dataclass
class QualityOutcome:
    scored: dict[str, int] = field(default_factory=dict)  # metric -> records scored
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)  # metric -> reason -> n
    already: dict[str, int] = field(default_factory=dict)

    def count(self, table: dict[str, int], metric: str) -> None:
        table[metric] = table.get(metric, 0) + 1

    def skip(self, metric: str, reason: str) -> None:
        self.count(self.skipped.setdefault(metric, {}), reason)


def vector_cache_for(run_dir: Path) -> VectorCache:
    """The cache shared by all runs under the same root (``<root>/.score-cache``)."""
    return VectorCache(Path(os.environ.get("ECHO_BENCH_SCORE_CACHE", run_dir.parent / CACHE_DIRNAME)))


def resolve_present(sim: str, mos: Sequence[str], models_root: Path
                    ) -> tuple[str, list[str], str | None]:
    """Settle the "when present" choices (:data:`SIM_PREFERRED`, :data:`MOS_IF_PRESENT`) by
    what is in ``models_root``: the SIM encoder and MOS metrics to load, and one line
    saying what fell back (None when nothing did). Other names pass through unchanged.
    """
    from bench.scoring.models import MODEL_FILES, fetch_command

    fell_back: list[str] = []
    missing: list[str] = []

    def present(model: str) -> bool:
        if (models_root / MODEL_FILES[model].filename).is_file():
            return True
        missing.append(model)
        return False

    if sim in _PREFERRED:
        best, model, fallback = _PREFERRED[sim]
        sim = best if present(model) else fallback
        if sim == fallback:
            fell_back.append(f"SIM with {fallback} instead of {best}")
    chosen: list[str] = []
    for name in mos:
        if name in _IF_PRESENT:
            metric, model = _IF_PRESENT[name]
            if present(model):
                chosen.append(metric)
            else:
                fell_back.append(f"no {metric.upper()}")
        else:
            chosen.append(name)
    if not fell_back:
        return sim, chosen, None
    note = (f"quality models {', '.join(missing)} not in {models_root}: {'; '.join(fell_back)} "
            f"(fill with `{fetch_command('NAME', models_root)}`, or on Modal "
            "`echo-bench modal prefetch`)")
    return sim, chosen, note


def load_metrics(sim: str, mos: Sequence[str], models_root: Path, device: str = "cpu"
                 ) -> tuple[list[Metric], dict[str, str]]:
    """Load the metrics a spec asks for, each once.

    Args:
        sim: a speaker encoder name (see `bench.scoring.speaker.SPEAKER_ENCODERS`) or "none".
        mos: any of MOS_METRICS.
    Returns:
        (loaded metrics, {metric name: one-line "model missing" message} for the others).
    """
    metrics: list[Metric] = []
    missing: dict[str, str] = {}

    def attempt(name: str, build: Any) -> None:
        try:
            metrics.append(build())
        except ModelMissingError as err:
            missing[name] = str(err)

    if sim != "none":
        from bench.scoring.speaker import SpeakerSimilarity, load_speaker_encoder

        attempt("sim", lambda: SpeakerSimilarity(load_speaker_encoder(sim, models_root, device)))
    for name in mos:
        if name == "dnsmos":
            from bench.scoring.dnsmos import DNSMOS

            attempt(name, DNSMOS)
        elif name == "utmos":
            from bench.scoring.utmos import UTMOS

            attempt(name, lambda: UTMOS(models_root, device))
        else:
            raise ValueError(f"unknown MOS metric {name!r}; choose from {', '.join(MOS_METRICS)}")
    return metrics, missing


def score_quality(store: RunStore, metrics: Sequence[Metric], *,
                  missing: Mapping[str, str] | None = None, keys: Iterable[str] | None = None,
                  cache: VectorCache | None = None, rescore: bool = False) -> QualityOutcome:
    """Add the columns of ``metrics`` to the ok generations of ``store`` (only ``keys``).

    Metrics in ``missing`` (name -> message) are recorded as skipped with that reason on
    records that do not have them yet, so the report says why a column is empty.
    """
    cache = cache or vector_cache_for(store.path)
    outcome = QualityOutcome()
    references = _references(store)
    todo = [r for r in store.records(with_scores=True, keys=keys) if r.get("status") == "ok"]
    for start in range(0, len(todo), _CHUNK):
        chunk = todo[start : start + _CHUNK]
        updates: dict[str, dict[str, Any]] = {r["key"]: {} for r in chunk}
        for metric in metrics:
            _score_metric(store, metric, chunk, references, cache, rescore, updates, outcome)
        for name, message in (missing or {}).items():
            for record in chunk:
                if record.get(f"{name}_model") is None:
                    updates[record["key"]][f"{name}_skipped"] = f"model missing: {message}"
                    outcome.skip(name, "model missing")
        for key, fields in updates.items():
            if fields:
                store.append_score(key, {**store.score_of(key), **fields})
    return outcome


class _Vectors:
    """Vectors of audio files under one metric: from the cache, else computed (and cached);
    a reason string instead of a vector for a clip that cannot be scored."""

    def __init__(self, metric: Metric, cache: VectorCache) -> None:
        self.metric = metric
        self.cache = cache
        self.found: dict[Path, list[float] | str] = {}

    def fill(self, paths: Iterable[Path]) -> None:
        pending: dict[Path, tuple[str, np.ndarray]] = {}
        for path in dict.fromkeys(paths):
            if path in self.found:
                continue
            try:
                seconds = sf.info(str(path)).duration
                if seconds < self.metric.min_seconds:
                    self.found[path] = TOO_SHORT
                    continue
                digest = sha256_file(path)
                hit = self.cache.get_vector(digest, self.metric.model_id)
                if hit is not None:
                    self.found[path] = hit
                    continue
                pending[path] = (digest, read_audio_16k(path))
            except Exception as err:  # unreadable file: say so on its record, score the rest
                self.found[path] = f"failed: {type(err).__name__}: {first_line(err, empty='')}"[:300]
        if pending:
            self._compute(pending)

    def _compute(self, pending: dict[Path, tuple[str, np.ndarray]]) -> None:
        items = list(pending.items())
        try:
            vectors: list[list[float] | str] = list(self.metric.compute([a for _, (_, a) in items]))
        except Exception:
            # One bad clip must not sink the others: retry one at a time to find it.
            vectors = [self._one(audio) for _, (_, audio) in items]
        for (path, (digest, _)), vector in zip(items, vectors, strict=True):
            if isinstance(vector, list):
                self.cache.put_vector(digest, self.metric.model_id, vector)
            self.found[path] = vector

    def _one(self, audio: np.ndarray) -> list[float] | str:
        try:
            return self.metric.compute([audio])[0]
        except Exception as err:
            return f"failed: {type(err).__name__}: {first_line(err, empty='')}"[:300]


def _score_metric(store: RunStore, metric: Metric, records: list[dict[str, Any]],
                  references: dict[str, dict[str, Path | None]], cache: VectorCache,
                  rescore: bool, updates: dict[str, dict[str, Any]], outcome: QualityOutcome) -> None:
    name = metric.name
    todo = []
    for record in records:
        if not rescore and record.get(f"{name}_model") == metric.model_id:
            outcome.count(outcome.already, name)
            continue
        reason = _audio_problem(store.path, record)
        if reason:
            updates[record["key"]].update({f"{name}_model": metric.model_id, f"{name}_skipped": reason})
            outcome.skip(name, reason)
            continue
        todo.append(record)
    if not todo:
        return
    refs_of = {r["key"]: {kind: _reference(r, references, kind) for kind in metric.references}
               for r in todo}
    if metric.references:
        # Nothing to compare against: say so without spending a model call on the clip.
        reason = f"no {metric.references[0]} reference"
        for record in [r for r in todo if not any(refs_of[r["key"]].values())]:
            updates[record["key"]].update({f"{name}_model": metric.model_id, name: None,
                                           f"{name}_skipped": reason})
            outcome.skip(name, reason)
            todo.remove(record)
    vectors = _Vectors(metric, cache)
    vectors.fill([store.path / r["audio_path"] for r in todo]
                 + [p for refs in refs_of.values() for p in refs.values() if p is not None])
    for record in todo:
        vector = vectors.found[store.path / record["audio_path"]]
        fields: dict[str, Any] = {f"{name}_model": metric.model_id}
        if isinstance(vector, str):
            fields[f"{name}_skipped"] = vector
            outcome.skip(name, vector.split(":")[0])
        else:
            ref_vectors: dict[str, list[float] | None] = {}
            for kind, path in refs_of[record["key"]].items():
                found = None if path is None else vectors.found[path]
                # A reference that cannot be embedded counts as no reference: the columns
                # then say "no ... reference" instead of comparing against nothing.
                ref_vectors[kind] = found if isinstance(found, list) else None
            fields.update({f"{name}_skipped": None, **metric.columns(vector, ref_vectors)})
            if fields.get(f"{name}_skipped"):
                outcome.skip(name, fields[f"{name}_skipped"])
            else:
                outcome.count(outcome.scored, name)
        updates[record["key"]].update(fields)


def _audio_problem(run_dir: Path, record: dict[str, Any]) -> str | None:
    if record.get("audio_nan"):
        return "nan audio"
    if record.get("audio_silent"):
        return "silent audio"
    if not record.get("audio_path") or not (run_dir / record["audio_path"]).is_file():
        return "no audio file"
    return None


def _reference(record: dict[str, Any], references: dict[str, dict[str, Path | None]],
               kind: str) -> Path | None:
    """The record's reference clip of ``kind`` ("speaker" or "gt"): a path the record
    carries (``speaker_wav`` / ``ground_truth_wav``), else the prompt's in the run's
    prompt set."""
    own = (record.get("speaker_wav") if kind == "speaker"
           else record.get("ground_truth_wav") or record.get("gt_wav"))
    if own:
        return Path(own)
    return references.get(str(record.get("prompt_id")), {}).get(kind)


def _references(store: RunStore) -> dict[str, dict[str, Path | None]]:
    """Reference clips per prompt id, from the prompt set recorded in the run's manifest."""
    prompts_spec = store.manifest.get("spec", {}).get("prompts") or {}
    if not prompts_spec.get("source"):
        return {}
    try:
        prompts = load_prompts(prompts_spec["source"], limit=prompts_spec.get("limit"),
                               ids=prompts_spec.get("ids"), speaker=prompts_spec.get("speaker"),
                               speakers=prompts_spec.get("speakers"))
    except (PromptError, EspeakMissing):
        # The set moved since the run, or espeak-ng is gone: records then say "no speaker
        # reference".
        return {}
    return {p.id: {"speaker": p.speaker_wav, "gt": p.ground_truth_wav} for p in prompts}

