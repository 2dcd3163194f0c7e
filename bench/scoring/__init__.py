"""Scoring: Whisper transcripts, normalised WER/CER, and bootstrap confidence intervals.

Typical use::

    asr = WhisperASR("large-v3")  # or "tiny", a checkpoint path, "random:tiny"
    hyps = transcribe_files(asr, wav_paths, TranscriptCache(folder), progress=True)
    scores = [score_utterance(ref, hyp) for ref, hyp in zip(refs, hyps)]
    quality = summarize(scores, cluster=prompt_ids)
"""

from bench.scoring.asr import ASR, ASRError, WhisperASR, to_16k, transcribe_files
from bench.scoring.cache import TranscriptCache, hash_audio_array, sha256_file
from bench.scoring.wer import (
    CellQuality,
    PairedDiff,
    UtteranceScore,
    normalize,
    paired_difference,
    score_utterance,
    summarize,
)

__all__ = [
    "ASR",
    "ASRError",
    "CellQuality",
    "PairedDiff",
    "TranscriptCache",
    "UtteranceScore",
    "WhisperASR",
    "hash_audio_array",
    "normalize",
    "paired_difference",
    "score_utterance",
    "sha256_file",
    "summarize",
    "to_16k",
    "transcribe_files",
]
