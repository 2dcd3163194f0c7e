"""Text normalisation, per-utterance error counts, and per-cell WER/CER summaries.

Conventions (all rates are fractions, 0.05 = 5 %):

* Both texts are normalised with Whisper's ``EnglishTextNormalizer`` before scoring
  (lower case, punctuation dropped, contractions expanded, spelled-out numbers turned
  into digits, British spellings mapped to American, fillers such as "uh"/"um" removed).
  "Empty" below means empty *after* normalisation.
* corpus WER = total word errors / total reference words (what jiwer gives on lists).
* mean WER = mean of per-utterance WER (the Seed-TTS-eval convention). Utterances whose
  reference is empty have no defined WER and are left out of the mean, whether or not
  the hypothesis is empty too; their count is reported as ``n_empty_ref`` and their
  insertions still count in the corpus WER.
* CER counts characters of the normalised texts, spaces included (jiwer's default).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import jiwer
import numpy as np
from whisper.normalizers import EnglishTextNormalizer

from bench.scoring.stats import bootstrap_ratio_replicates, percentile_interval, ratio_of_sums

__all__ = [
    "CellQuality",
    "PairedDiff",
    "UtteranceScore",
    "normalize",
    "paired_difference",
    "score_utterance",
    "summarize",
]

K = TypeVar("K", bound=Hashable)


@lru_cache(maxsize=1)
def _normalizer() -> EnglishTextNormalizer:
    # Building it reads Whisper's spelling table (english.json); do that once.
    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    """Whisper's English normalisation, with runs of whitespace collapsed.

    Examples: "Twenty five apples." -> "25 apples"; "I'm here." -> "i am here";
    "Uh, hello WORLD!" -> "hello world".
    """
    return " ".join(_normalizer()(text).split())


@dataclass(frozen=True)
class UtteranceScore:
    """Error counts of one hypothesis against its reference (both normalised).

    Word counts are in words, character counts in characters of the normalised text.
    ``wer``/``cer`` are NaN when the reference is empty (undefined rate, also when the
    hypothesis is empty too); they are 1.0 when the hypothesis is empty and the reference
    is not.
    """

    ref_raw: str
    hyp_raw: str
    ref_norm: str
    hyp_norm: str
    ref_words: int
    hits: int
    substitutions: int
    deletions: int
    insertions: int
    wer: float
    ref_chars: int
    char_errors: int
    cer: float
    empty_hyp: bool
    empty_ref: bool

    @property
    def word_errors(self) -> int:
        """Substitutions + deletions + insertions, in words."""
        return self.substitutions + self.deletions + self.insertions


def _char_counts(ref: str, hyp: str) -> tuple[int, int]:
    """(reference characters, character edit errors) of two non-empty strings."""
    out = jiwer.process_characters(ref, hyp)
    return (
        out.hits + out.substitutions + out.deletions,
        out.substitutions + out.deletions + out.insertions,
    )


def score_utterance(ref: str, hyp: str) -> UtteranceScore:
    """Normalise both texts and count word and character errors of ``hyp`` against ``ref``.

    Never raises on empty texts: jiwer rejects an empty reference, so the empty cases
    are counted here directly (every hypothesis word is an insertion, every reference
    word a deletion).
    """
    ref_norm, hyp_norm = normalize(ref), normalize(hyp)
    ref_tokens, hyp_tokens = ref_norm.split(), hyp_norm.split()
    empty_ref, empty_hyp = not ref_tokens, not hyp_tokens
    nan = float("nan")
    if empty_ref:
        hits = subs = dels = 0
        ins = len(hyp_tokens)
        ref_chars, char_errors = 0, len(hyp_norm)
        # No reference words: the rate is undefined whatever the hypothesis, so the
        # utterance is left out of the mean WER (both empty included; see the module
        # docstring). Its insertions, if any, still count in the corpus WER.
        wer = cer = nan
    elif empty_hyp:
        hits = subs = ins = 0
        dels = len(ref_tokens)
        ref_chars = char_errors = len(ref_norm)
        wer = cer = 1.0
    else:
        words = jiwer.process_words(ref_norm, hyp_norm)
        hits, subs = words.hits, words.substitutions
        dels, ins = words.deletions, words.insertions
        wer = (subs + dels + ins) / len(ref_tokens)
        ref_chars, char_errors = _char_counts(ref_norm, hyp_norm)
        cer = char_errors / ref_chars
    return UtteranceScore(
        ref_raw=ref,
        hyp_raw=hyp,
        ref_norm=ref_norm,
        hyp_norm=hyp_norm,
        ref_words=len(ref_tokens),
        hits=hits,
        substitutions=subs,
        deletions=dels,
        insertions=ins,
        wer=wer,
        ref_chars=ref_chars,
        char_errors=char_errors,
        cer=cer,
        empty_hyp=empty_hyp,
        empty_ref=empty_ref,
    )


def _ratio_columns(scores: Sequence[UtteranceScore]) -> tuple[np.ndarray, np.ndarray]:
    """Per-utterance numerators and denominators, shape [n, 3].

    Columns: corpus WER (errors / ref words), mean WER (wer / 1, NaN rows zeroed),
    CER (char errors / ref chars).
    """
    num = np.zeros((len(scores), 3))
    den = np.zeros((len(scores), 3))
    for i, s in enumerate(scores):
        defined = not math.isnan(s.wer)
        num[i] = (s.word_errors, s.wer if defined else 0.0, s.char_errors)
        den[i] = (s.ref_words, 1.0 if defined else 0.0, s.ref_chars)
    return num, den


@dataclass(frozen=True)
class CellQuality:
    """Quality summary of one cell; rates are fractions, intervals are 95 % percentile
    intervals of a bootstrap that resamples prompts (clusters) with replacement.

    ``n`` counts utterances; ``n_mean_wer`` those with a defined WER (non-empty
    reference), which is the denominator of ``mean_wer``.
    """

    n: int
    n_clusters: int
    corpus_wer: float
    corpus_wer_ci: tuple[float, float]
    mean_wer: float
    mean_wer_ci: tuple[float, float]
    n_mean_wer: int
    cer: float
    cer_ci: tuple[float, float]
    share_above_50: float
    n_empty_hyp: int
    n_empty_ref: int
    ref_words: int
    word_errors: int
    n_boot: int


def summarize(
    scores: Sequence[UtteranceScore],
    n_boot: int = 1000,
    seed: int = 0,
    cluster: Sequence[Hashable] | None = None,
) -> CellQuality:
    """Summarise a cell's utterance scores with cluster-bootstrap intervals.

    Args:
        scores: one score per generated utterance.
        n_boot: bootstrap replicates.
        seed: bootstrap seed; a fixed seed gives identical intervals.
        cluster: prompt id of each score (same length as ``scores``), so seeds of one
            prompt are resampled together; None treats every utterance as independent.

    Returns:
        A `CellQuality`; with no scores every rate and interval is NaN.
    """
    num, den = _ratio_columns(scores)
    point = ratio_of_sums(num, den) if len(scores) else np.full(3, np.nan)
    reps = bootstrap_ratio_replicates(num, den, cluster, n_boot=n_boot, seed=seed)
    cis = [percentile_interval(reps[:, j]) for j in range(3)]
    defined = [s.wer for s in scores if not math.isnan(s.wer)]
    n_clusters = len(set(cluster)) if cluster is not None else len(scores)
    return CellQuality(
        n=len(scores),
        n_clusters=n_clusters,
        corpus_wer=float(point[0]),
        corpus_wer_ci=cis[0],
        mean_wer=float(point[1]),
        mean_wer_ci=cis[1],
        n_mean_wer=len(defined),
        cer=float(point[2]),
        cer_ci=cis[2],
        share_above_50=(sum(w > 0.5 for w in defined) / len(defined)) if defined else math.nan,
        n_empty_hyp=sum(s.empty_hyp for s in scores),
        n_empty_ref=sum(s.empty_ref for s in scores),
        ref_words=sum(s.ref_words for s in scores),
        word_errors=sum(s.word_errors for s in scores),
        n_boot=n_boot,
    )


@dataclass(frozen=True)
class PairedDiff:
    """Paired difference b - a of quality rates (fractions; positive = b is worse).

    ``ci_low``/``ci_high`` bound ``delta_corpus_wer``; the other deltas carry their own
    interval. Keys present in only one side are not compared; they are counted in
    ``n_only_a``/``n_only_b``.
    """

    n_pairs: int
    n_clusters: int
    delta_corpus_wer: float
    ci_low: float
    ci_high: float
    delta_mean_wer: float
    delta_mean_wer_ci: tuple[float, float]
    delta_cer: float
    delta_cer_ci: tuple[float, float]
    n_only_a: int
    n_only_b: int
    n_boot: int


def _first(key: Any) -> Hashable:
    """Default cluster of a (prompt_id, seed) key: the prompt id."""
    first: Hashable = key[0]
    return first


def paired_difference(
    a: Mapping[K, UtteranceScore],
    b: Mapping[K, UtteranceScore],
    n_boot: int = 1000,
    seed: int = 0,
    cluster_of: Callable[[K], Hashable] = _first,
) -> PairedDiff:
    """Difference b - a in corpus WER, mean WER and CER over the keys both cells share.

    Pairs are matched by key (typically ``(prompt_id, seed)``). The bootstrap resamples
    clusters (``cluster_of(key)``, by default the prompt id) and applies the same draw to
    a and b, so the interval reflects the paired design. Comparing a cell with itself
    gives exactly 0 with a zero-width interval.

    For the mean WER, a pair is used only when both sides have a defined WER.
    """
    # Sort by repr so the result does not depend on the mappings' insertion order.
    common = sorted((k for k in a if k in b), key=repr)
    sa = [a[k] for k in common]
    sb = [b[k] for k in common]
    num_a, den_a = _ratio_columns(sa)
    num_b, den_b = _ratio_columns(sb)
    both = (den_a[:, 1] > 0) & (den_b[:, 1] > 0)
    for num, den in ((num_a, den_a), (num_b, den_b)):
        num[~both, 1] = 0.0
        den[~both, 1] = 0.0
    num = np.concatenate([num_a, num_b], axis=1)
    den = np.concatenate([den_a, den_b], axis=1)
    clusters = [cluster_of(k) for k in common]
    if common:
        point = ratio_of_sums(num, den)
        delta = point[3:] - point[:3]
    else:
        delta = np.full(3, np.nan)
    reps = bootstrap_ratio_replicates(num, den, clusters, n_boot=n_boot, seed=seed)
    rep_delta = reps[:, 3:] - reps[:, :3]
    cis = [percentile_interval(rep_delta[:, j]) for j in range(3)]
    return PairedDiff(
        n_pairs=len(common),
        n_clusters=len(set(clusters)),
        delta_corpus_wer=float(delta[0]),
        ci_low=cis[0][0],
        ci_high=cis[0][1],
        delta_mean_wer=float(delta[1]),
        delta_mean_wer_ci=cis[1],
        delta_cer=float(delta[2]),
        delta_cer_ci=cis[2],
        n_only_a=len(a) - len(common),
        n_only_b=len(b) - len(common),
        n_boot=n_boot,
    )
