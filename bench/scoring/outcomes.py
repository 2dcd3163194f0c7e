"""One rule for generations that produced no usable speech, shared by the report (HTML and
Markdown), the gate and history, so the three never disagree about a cell.

The rule:

* A **failed** generation (an exception, an out-of-memory error), a generation whose audio
  is **NaN** and one whose audio is **silent** produced no speech. Each counts against its
  cell: in its failure figures (:class:`Outcome`) and in its quality figures, as an empty
  transcript (every reference word a deletion: WER 1.0 for that utterance).
* The quality figures of a set of records exist only once it has been scored (some record
  carries a score): an unscored run has no WER, not a WER made only of failures.
* A generation the scorer could not judge for reasons outside the cell (audio not kept,
  the ASR itself failed) has no quality figure and is left out; nothing else is.
* A cell with any such generation is never a recommendation (:func:`usable`), and a cell
  that ran out of memory never "fits" the card it ran on.

Older runs stored silent/NaN generations as skip lines without figures; the rule rebuilds
their empty-transcript score from the prompt text, so old and new runs read alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

if TYPE_CHECKING:
    from bench.scoring.wer import UtteranceScore

#: Score lines of audio the scorer refused as speech (``bench.scoring.run_scoring``).
NO_SPEECH_SCORES: tuple[str, ...] = ("skipped_silent_audio", "skipped_nan_audio")


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool, not None/NaN, not a string)."""
    return (isinstance(value, int | float | np.integer | np.floating)
            and not isinstance(value, bool) and math.isfinite(float(value)))


def truthy(value: Any) -> bool:
    """True for set flags; a NaN (a field pandas filled in for a record without it) is not."""
    return bool(value) and not (isinstance(value, float) and math.isnan(value))


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """``frame[name]``, or an all-missing column when the records lack it (older runs,
    unscored runs)."""
    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


def no_speech(record: Mapping[Any, Any]) -> bool:
    """The generation produced no usable speech: failed, NaN audio or silent audio."""
    return (record.get("status") != "ok" or truthy(record.get("audio_nan"))
            or truthy(record.get("audio_silent"))
            or record.get("score_status") in NO_SPEECH_SCORES)


def is_out_of_memory(record: Mapping[Any, Any]) -> bool:
    """A failed generation whose error was running out of (device or host) memory."""
    if record.get("status") == "ok":
        return False
    text = f"{record.get('error_type') or ''} {record.get('error') or ''}".lower()
    return "outofmemory" in text or "out of memory" in text


def has_scores(records: pd.DataFrame) -> bool:
    """Whether the records were scored at all (any score line: a figure or a skip)."""
    return bool(column(records, "asr_model").map(lambda v: isinstance(v, str) and v != "").any()
                or column(records, "ref_words").map(is_number).any()
                or column(records, "score_status").isin(NO_SPEECH_SCORES).any())


def stored_score(r: Mapping[Any, Any]) -> UtteranceScore:
    """The UtteranceScore of one scored record, rebuilt from its stored fields.

    Character counts: the stored ``ref_chars``/``char_errors`` when present, else from the
    normalised reference (CER counts its characters, spaces included) and the stored CER.
    """
    ref_norm = str(r.get("reference_norm") or "")
    hyp_norm = str(r.get("transcript_norm") or "")
    ref_words = int(r.get("ref_words") or 0)
    cer = float(r["cer"]) if is_number(r.get("cer")) else math.nan
    stored_chars: Any = r.get("ref_chars")
    stored_errors: Any = r.get("char_errors")
    ref_chars = int(stored_chars) if is_number(stored_chars) else len(ref_norm)
    if is_number(stored_errors):
        char_errors = int(stored_errors)
    else:
        char_errors = round(cer * ref_chars) if math.isfinite(cer) else len(hyp_norm)
    wer = float(r["wer"]) if is_number(r.get("wer")) else math.nan
    # Imported here: the normaliser behind bench.scoring.wer is slow to import, and
    # unscored analyses never need it.
    from bench.scoring.wer import UtteranceScore

    return UtteranceScore(
        ref_raw=str(r.get("text") or ""), hyp_raw=str(r.get("transcript") or ""),
        ref_norm=ref_norm, hyp_norm=hyp_norm, ref_words=ref_words,
        hits=int(r.get("hits") or 0), substitutions=int(r.get("substitutions") or 0),
        deletions=int(r.get("deletions") or 0), insertions=int(r.get("insertions") or 0),
        wer=wer, ref_chars=ref_chars, char_errors=char_errors, cer=cer,
        empty_hyp=truthy(r.get("empty_hyp")), empty_ref=ref_words == 0,
    )


def empty_transcript(text: Any) -> UtteranceScore:
    """The score of saying nothing for ``text``: every reference word a deletion."""
    from bench.scoring.wer import score_utterance

    return score_utterance(str(text or ""), "")


def quality_scores(records: pd.DataFrame, *, scored: bool | None = None
                   ) -> tuple[pd.DataFrame, list[UtteranceScore]]:
    """The records that carry a quality figure under the rule, and their scores (aligned).

    ``scored`` says whether the records' run was scored (default: :func:`has_scores` of
    ``records``); pass the run's answer when ``records`` is one cell, so a cell whose
    every generation failed still gets its all-deletions figures in a scored run.
    """
    if scored is None:
        scored = has_scores(records)
    if not scored or not len(records):
        return records.iloc[0:0], []
    keep: list[bool] = []
    scores: list[UtteranceScore] = []
    for r in records.to_dict("records"):
        if no_speech(r):
            scores.append(empty_transcript(r.get("text")))
        elif _score_status(r) in (None, "ok") and is_number(r.get("ref_words")):
            scores.append(stored_score(r))
        else:  # not scored yet, audio not kept, or the ASR failed: no figure
            keep.append(False)
            continue
        keep.append(True)
    return records[np.asarray(keep, dtype=bool)], scores


def _score_status(record: Mapping[Any, Any]) -> str | None:
    # A table of records fills a missing status with NaN: that is "no status" too.
    status = record.get("score_status")
    return status if isinstance(status, str) else None


@dataclass(frozen=True)
class Outcome:
    """What a cell's generations came to: counts, and the share that produced no speech."""

    n: int
    n_failed: int
    n_oom: int
    n_nan: int
    n_silent: int

    @property
    def n_no_speech(self) -> int:
        """Failed, NaN and silent generations together."""
        return self.n_failed + self.n_nan + self.n_silent

    @property
    def failure_rate(self) -> float:
        """Share of generations that produced no speech (0 when there are none)."""
        return self.n_no_speech / self.n if self.n else math.nan


def outcome(records: Iterable[Mapping[Any, Any]]) -> Outcome:
    """Count a cell's generations by what they came to."""
    n = failed = oom = nan = silent = 0
    for r in records:
        n += 1
        if r.get("status") != "ok":
            failed += 1
            oom += is_out_of_memory(r)
        elif truthy(r.get("audio_nan")) or r.get("score_status") == "skipped_nan_audio":
            nan += 1
        elif truthy(r.get("audio_silent")) or r.get("score_status") == "skipped_silent_audio":
            silent += 1
    return Outcome(n=n, n_failed=failed, n_oom=oom, n_nan=nan, n_silent=silent)


def usable(cell: Mapping[Any, Any]) -> bool:
    """A cell (a row of ``bench.analysis.cells.summarize_cells``) that may be recommended: it ran
    and every generation produced speech."""
    n_ok: Any = cell.get("n_ok")
    return (is_number(n_ok) and int(n_ok) > 0
            and all(int(cell.get(k) or 0) == 0 for k in ("n_failed", "n_nan", "n_silent")))


def usable_mask(cells: pd.DataFrame) -> npt.NDArray[np.bool_]:
    """:func:`usable`'s rule over every row of a cell table at once (missing counts read
    as 0; a test checks the two agree): the headline's stability applies the headline
    to hundreds of resampled tables, where a row-by-row pass costs most of the time."""
    bad = sum(aligned_numbers(cells, k, 0.0) for k in ("n_failed", "n_nan", "n_silent"))
    return np.asarray((aligned_numbers(cells, "n_ok", 0.0) >= 1) & (bad == 0), dtype=bool)


def aligned_numbers(frame: pd.DataFrame, name: str, missing: float) -> npt.NDArray[np.float64]:
    """``frame[name]`` as floats aligned with the frame's rows (non-numbers -> missing)."""
    values = column(frame, name)
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(
            values.dtype):  # a typed column: no value-by-value checks (the same answer)
        out = values.to_numpy(dtype=np.float64, na_value=np.nan)
        return np.where(np.isfinite(out), out, missing)
    return np.asarray([float(v) if is_number(v) else missing for v in values],
                      dtype=np.float64)
