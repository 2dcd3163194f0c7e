"""Which generations of a cell keep their WAV when a run keeps only a sample.

A nightly grid makes up to 24,000 generations; keeping every WAV costs Volume space and
download time for audio nobody listens to. What is worth keeping: a sample that is the
same prompts in every cell and every night (so one can listen across cells and dates),
and everything suspicious: NaN or silent audio, and outliers of the cell in speech rate
(audio seconds per character far from the cell's median: truncated or babbling output)
or in compute time (a generation far slower than its neighbours). WER outliers are not
known until scoring, so they are not a criterion here.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Sequence
from typing import Any

#: A generation is an outlier when its figure is beyond this factor of the cell median
#: (either side for the speech rate, slower side for compute time).
OUTLIER_FACTOR = 2.0


def in_sample(prompt_id: str, fraction: float) -> bool:
    """Whether ``prompt_id`` belongs to the kept sample: a hash of the id, so the same
    prompts are chosen in every cell, run and machine."""
    if fraction >= 1.0:
        return True
    digest = hashlib.sha256(prompt_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _speech_rate(record: dict[str, Any]) -> float | None:
    chars = len(str(record.get("normalized_text") or record.get("text") or ""))
    seconds = record.get("audio_seconds")
    return float(seconds) / chars if chars and isinstance(seconds, int | float) else None


def keep_reasons(records: Sequence[dict[str, Any]], fraction: float | None) -> list[str | None]:
    """For each ok record of one cell, why its audio is kept (None: dropped).

    ``fraction`` None keeps everything ("all"). Failed records have no audio (None).
    """
    ok = [r for r in records if r.get("status") == "ok"]
    rates = [x for x in (_speech_rate(r) for r in ok) if x is not None]
    totals = [float(r["t_total"]) for r in ok if isinstance(r.get("t_total"), int | float)]
    rate_median = statistics.median(rates) if rates else None
    total_median = statistics.median(totals) if totals else None
    reasons: list[str | None] = []
    for record in records:
        if record.get("status") != "ok":
            reasons.append(None)
            continue
        rate = _speech_rate(record)
        total = record.get("t_total")
        if fraction is None:
            reasons.append("all")
        elif record.get("audio_nan"):
            reasons.append("nan")
        elif record.get("audio_silent"):
            reasons.append("silent")
        elif rate is not None and rate_median and not (
                rate_median / OUTLIER_FACTOR <= rate <= rate_median * OUTLIER_FACTOR):
            reasons.append("outlier-speech-rate")
        elif isinstance(total, int | float) and total_median and total > OUTLIER_FACTOR * total_median:
            reasons.append("outlier-time")
        elif in_sample(str(record.get("prompt_id")), fraction):
            reasons.append("sample")
        else:
            reasons.append(None)
    return reasons
