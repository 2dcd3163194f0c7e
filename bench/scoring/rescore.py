"""Re-score a run under another WER protocol from the transcripts it already holds.

The ASR is the expensive half of scoring and its output does not depend on the protocol,
so changing protocol only re-normalises the stored ``transcript`` against the record's
text. Each re-scored generation gets a new score line: its latest score line with the WER
fields replaced, so other metrics on that line (SIM, MOS) are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.scoring.protocols import Protocol, protocol_fields
from bench.store.run_store import RunStore

__all__ = ["RescoreOutcome", "rescore_protocol"]


@dataclass(frozen=True)
class RescoreOutcome:
    """Counts of generations: re-scored now, already under the protocol, and ok
    generations without a transcript (they need the ASR)."""

    rescored: int
    already: int
    untranscribed: int


def rescore_protocol(store: RunStore, protocol: Protocol) -> RescoreOutcome:
    """Recompute WER/CER of every transcribed generation of ``store`` under ``protocol``."""
    rescored = already = untranscribed = 0
    for record in store.records(with_scores=True):
        if record.get("status") != "ok":
            continue
        transcript = record.get("transcript")
        if record.get("score_status") != "ok" or not isinstance(transcript, str):
            # Skipped audio (NaN, silent) keeps its skip line; unscored audio needs ASR.
            untranscribed += record.get("score_status") is None
            continue
        if record.get("wer_protocol", "whisper-normalizer") == protocol.name:
            already += 1
            continue
        latest = store.score_of(record["key"])
        store.append_score(record["key"], {**latest,
                                           **protocol_fields(record["text"], transcript,
                                                             protocol)})
        rescored += 1
    return RescoreOutcome(rescored, already, untranscribed)
