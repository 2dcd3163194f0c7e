"""Named WER/CER protocols, so a figure can sit beside the published table it claims to match.

A protocol fixes two things the ASR does not: how reference and transcript are normalised
before words are compared, and which average is the headline figure.

* ``whisper-normalizer`` (this harness's default): Whisper's ``EnglishTextNormalizer``
  (lower case, punctuation dropped, contractions expanded, spelled numbers turned into
  digits, British spellings mapped to American, fillers dropped); headline = corpus WER
  (total errors / total reference words).
* ``seed-tts-eval`` (the Seed-TTS paper's ``run_wer.py``): every ASCII punctuation mark
  and the CJK/typographic marks of ``zhon.hanzi.punctuation`` deleted *without* a space
  (so "twenty-five" becomes "twentyfive") except the ASCII apostrophe, then lower case;
  no number normalisation ("fifty" and "50" differ); headline = mean of per-utterance WER.
  Published with Whisper large-v3 (transformers).
* ``f5-tts`` (F5-TTS ``eval/utils_eval.py``, ``run_asr_wer``): the same deletion as
  seed-tts-eval but the ASCII apostrophe goes too ("don't" becomes "dont"), then lower
  case; headline = mean of per-utterance WER. Published with faster-whisper large-v3,
  beam 5.

In both published scripts the deleted set includes the typographic apostrophe U+2019, so
"don\u2019t" loses it even under seed-tts-eval. Both then hand the strings to jiwer, which
splits on whitespace; collapsing runs of spaces here gives the same words.

Raw transcripts stay in the records, so :func:`protocol_fields` re-scores a run under
another protocol without running the ASR again.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from bench.core.errors import UserError
from bench.scoring.wer import CellQuality, UtteranceScore, normalize, score_utterance

__all__ = [
    "DEFAULT_PROTOCOL",
    "PROTOCOLS",
    "Protocol",
    "ProtocolError",
    "get_protocol",
    "headline_wer",
    "protocol_fields",
]

DEFAULT_PROTOCOL = "whisper-normalizer"

# The non-ASCII marks that zhon.hanzi.punctuation lists (fullwidth ASCII variants, CJK
# brackets and stops, dashes, curly quotes, ellipsis, middle dots), written as code
# points so the list can be checked against the package's documentation.
_ZHON_CODEPOINTS = (
    [*range(0xFF02, 0xFF0E), 0xFF0F, *range(0xFF1A, 0xFF1F), 0xFF20, *range(0xFF3B, 0xFF41),
     *range(0xFF5B, 0xFF61), *range(0xFF62, 0xFF65), 0x3000, 0x3001, 0x3003,
     *range(0x3008, 0x3012), *range(0x3014, 0x3020), 0x3030, 0x303E, 0x303F, 0x2013, 0x2014,
     0x2018, 0x2019, 0x201B, 0x201C, 0x201D, 0x201E, 0x201F, 0x2026, 0x2027, 0xFE4F, 0xFE51,
     0xFE54, 0x00B7, 0xFF0E, 0xFF01, 0xFF1F, 0xFF61, 0x3002]
)
_ALL_PUNCTUATION = frozenset(string.punctuation) | {chr(c) for c in _ZHON_CODEPOINTS}


def _deleter(keep: str) -> dict[int, None]:
    return {ord(c): None for c in _ALL_PUNCTUATION if c not in keep}


_SEED_TABLE = _deleter(keep="'")
_F5_TABLE = _deleter(keep="")


def normalize_seed_tts(text: str) -> str:
    """Seed-TTS-eval English: punctuation deleted except ``'``, lower case, spaces collapsed.

    Example: "Mr. Smith's twenty-five cats!" -> "mr smith's twentyfive cats".
    """
    return " ".join(text.translate(_SEED_TABLE).lower().split())


def normalize_f5_tts(text: str) -> str:
    """F5-TTS English: every punctuation mark deleted (apostrophes too), lower case.

    Example: "Mr. Smith's twenty-five cats!" -> "mr smiths twentyfive cats".
    """
    return " ".join(text.translate(_F5_TABLE).lower().split())


class ProtocolError(UserError):
    """An unknown protocol name; the message lists the known ones."""


@dataclass(frozen=True)
class Protocol:
    """One WER convention.

    Attributes:
        name: the name used in specs, records (``wer_protocol``) and reports.
        normalize: text -> normalised text (applied to reference and transcript alike).
        headline: which WER the source publishes: "mean" (of per-utterance WER) or
            "corpus" (errors / reference words).
        source: where the convention comes from and the ASR it was published with.
    """

    name: str
    normalize: Callable[[str], str]
    headline: Literal["mean", "corpus"]
    source: str

    @property
    def headline_label(self) -> str:
        """E.g. "mean per-utterance WER (seed-tts-eval)"."""
        kind = "mean per-utterance WER" if self.headline == "mean" else "corpus WER"
        return f"{kind} ({self.name})"

    def score(self, ref: str, hyp: str) -> UtteranceScore:
        """Error counts of ``hyp`` against ``ref`` under this protocol."""
        return score_utterance(ref, hyp, normalizer=self.normalize)


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("whisper-normalizer", normalize, "corpus",
                 "Whisper's EnglishTextNormalizer; corpus WER"),
        Protocol("seed-tts-eval", normalize_seed_tts, "mean",
                 "Seed-TTS-eval run_wer.py; Whisper large-v3"),
        Protocol("f5-tts", normalize_f5_tts, "mean",
                 "F5-TTS eval utils_eval.run_asr_wer; faster-whisper large-v3"),
    )
}


def get_protocol(name: str | None) -> Protocol:
    """The protocol called ``name`` (None: the default); unknown names raise ProtocolError."""
    key = DEFAULT_PROTOCOL if name is None else name
    try:
        return PROTOCOLS[key]
    except KeyError:
        raise ProtocolError(f"unknown WER protocol {name!r}; choose one of "
                            f"{', '.join(PROTOCOLS)}") from None


def headline_wer(quality: CellQuality, protocol: Protocol
                 ) -> tuple[float, tuple[float, float]]:
    """The protocol's headline WER of a cell summary, with its bootstrap interval."""
    if protocol.headline == "mean":
        return quality.mean_wer, quality.mean_wer_ci
    return quality.corpus_wer, quality.corpus_wer_ci


def protocol_fields(reference: str, transcript: str, protocol: Protocol) -> dict[str, Any]:
    """The WER/CER fields of one score line under ``protocol`` (no ASR involved)."""
    score = protocol.score(reference, transcript)
    return {
        "wer_protocol": protocol.name,
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
    }
