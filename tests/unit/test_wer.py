"""Normalisation, per-utterance error counts, cell summaries and paired differences."""

from __future__ import annotations

import math

import pytest

from bench.scoring import (
    UtteranceScore,
    normalize,
    paired_difference,
    score_utterance,
    summarize,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("Twenty five apples.", "25 apples"),
        ("twenty-five", "25"),
        ("one hundred and twenty", "120"),
        # Spelled digits in a row become one number: a 3-word reference becomes 1 word.
        ("one two three", "123"),
        ("I'm here, aren't you?", "i am here are not you"),
        ("He won't go", "he will not go"),
        ("Uh, um, hello  there", "hello there"),
        ("Mr. Smith's colour", "mister smith is color"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    ("ref", "hyp"),
    [
        ("Twenty five people came.", "25 people came"),
        ("I'm sure it's fine", "I am sure it is fine"),
        ("Hello, World!", "hello world"),
        ("Um, I think so.", "I think so"),
    ],
)
def test_equivalent_texts_score_zero(ref: str, hyp: str) -> None:
    s = score_utterance(ref, hyp)
    assert s.wer == 0.0 and s.cer == 0.0 and s.word_errors == 0


def test_word_error_arithmetic() -> None:
    s = score_utterance("the cat sat on the mat", "the cat sat on mat")
    assert (s.hits, s.substitutions, s.deletions, s.insertions) == (5, 0, 1, 0)
    assert s.ref_words == 6 and s.wer == pytest.approx(1 / 6)
    s = score_utterance("a b c", "a x c d")
    assert (s.hits, s.substitutions, s.deletions, s.insertions) == (2, 1, 0, 1)
    assert s.wer == pytest.approx(2 / 3)
    # CER counts characters of the normalised texts: one substitution in "abcd".
    s = score_utterance("abcd", "abed")
    assert (s.ref_chars, s.char_errors, s.cer) == (4, 1, 0.25)


def test_empty_hypothesis_and_reference() -> None:
    s = score_utterance("hello world", "")
    assert s.empty_hyp and not s.empty_ref
    assert (s.deletions, s.wer, s.cer) == (2, 1.0, 1.0)
    s = score_utterance("", "")
    assert s.empty_ref and s.empty_hyp and s.word_errors == 0
    assert math.isnan(s.wer) and math.isnan(s.cer)
    # "uh" normalises to nothing: the reference is empty, so WER is undefined, but the
    # inserted words are still counted.
    s = score_utterance("uh", "hello there")
    assert s.empty_ref and not s.empty_hyp
    assert s.insertions == 2 and math.isnan(s.wer) and math.isnan(s.cer)


def test_corpus_and_mean_wer_differ() -> None:
    # One error on a 1-word reference, none on a 9-word one: corpus WER counts words
    # (1/10), the Seed-TTS-eval mean counts utterances ((1 + 0) / 2).
    nine = "the quick brown fox jumps over the lazy dog"
    scores = [score_utterance("hello", "yellow"), score_utterance(nine, nine)]
    q = summarize(scores, n_boot=200)
    assert q.corpus_wer == pytest.approx(0.1)
    assert q.mean_wer == pytest.approx(0.5)
    assert q.share_above_50 == pytest.approx(0.5)
    assert (q.n, q.n_mean_wer, q.ref_words, q.word_errors) == (2, 2, 10, 1)


def test_summary_with_empty_texts() -> None:
    scores = [
        score_utterance("a b c d", "a b c d"),
        score_utterance("a b c d", ""),
        score_utterance("uh", "extra words"),
    ]
    q = summarize(scores, n_boot=200)
    assert (q.n_empty_hyp, q.n_empty_ref, q.n_mean_wer) == (1, 1, 2)
    assert q.mean_wer == pytest.approx(0.5)  # the empty reference is left out
    assert q.corpus_wer == pytest.approx((4 + 2) / 8)  # its insertions are not
    assert q.corpus_wer_ci[0] <= q.corpus_wer <= q.corpus_wer_ci[1]
    nothing = summarize([], n_boot=10)
    assert nothing.n == 0 and math.isnan(nothing.corpus_wer) and math.isnan(nothing.mean_wer_ci[0])


def test_both_empty_is_left_out_of_the_mean_as_the_docstrings_say() -> None:
    # "Um." and "uh" both normalise to nothing: an undefined rate, excluded from the mean
    # WER and CER, adding nothing to the corpus figures, counted as an empty reference.
    pair = score_utterance("Um.", "uh")
    assert pair.empty_ref and pair.empty_hyp and math.isnan(pair.wer)
    half = score_utterance("a b", "a")
    q = summarize([half, pair], n_boot=50)
    assert (q.n, q.n_mean_wer, q.n_empty_ref) == (2, 1, 1)
    assert q.mean_wer == pytest.approx(0.5)  # 0.5 alone, not (0.5 + 0) / 2
    assert q.corpus_wer == pytest.approx(0.5) and q.cer == pytest.approx(half.cer)
    assert q.share_above_50 == 0.0
    # Paired comparisons use a pair's mean WER only when both sides define it.
    diff = paired_difference({("p", 0): half, ("q", 0): pair},
                             {("p", 0): half, ("q", 0): score_utterance("", "")}, n_boot=50)
    assert diff.delta_mean_wer == 0.0 and diff.delta_corpus_wer == 0.0


def _cell(errors_per_prompt: list[int], seeds: int = 2) -> dict[tuple[str, int], UtteranceScore]:
    ref = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10"
    out = {}
    for p, e in enumerate(errors_per_prompt):
        hyp = " ".join(["x"] * e + ref.split()[e:])
        for s in range(seeds):
            out[(f"p{p}", s)] = score_utterance(ref, hyp)
    return out


def test_summary_intervals_by_prompt_are_deterministic() -> None:
    cell = _cell([0, 1, 3, 0, 2, 5, 1, 0, 2, 1])
    scores = list(cell.values())
    prompts = [k[0] for k in cell]
    q = summarize(scores, n_boot=500, seed=1, cluster=prompts)
    assert q.n_clusters == 10 and q.n == 20
    for est, (low, high) in [
        (q.corpus_wer, q.corpus_wer_ci),
        (q.mean_wer, q.mean_wer_ci),
        (q.cer, q.cer_ci),
    ]:
        assert low <= est <= high and low < high
    assert summarize(scores, n_boot=500, seed=1, cluster=prompts) == q


def test_paired_difference_with_itself_is_exactly_zero() -> None:
    cell = _cell([0, 1, 3, 0, 2, 5, 1, 0, 2, 1])
    d = paired_difference(cell, cell, n_boot=300)
    assert d.n_pairs == 20 and d.n_clusters == 10
    assert (d.delta_corpus_wer, d.ci_low, d.ci_high) == (0.0, 0.0, 0.0)
    assert d.delta_mean_wer == 0.0 and d.delta_mean_wer_ci == (0.0, 0.0)
    assert d.delta_cer == 0.0 and d.delta_cer_ci == (0.0, 0.0)


def test_paired_difference_direction_and_unmatched_keys() -> None:
    a = _cell([0, 1, 0, 0, 2, 0, 1, 0, 0, 1])
    b = _cell([2, 3, 1, 2, 4, 1, 3, 2, 1, 3])  # every prompt worse by 1-2 words
    b[("extra", 0)] = score_utterance("x", "y")
    d = paired_difference(a, b, n_boot=500, seed=0)
    assert d.n_pairs == 20 and d.n_only_a == 0 and d.n_only_b == 1
    assert d.delta_corpus_wer == pytest.approx((22 - 5) / 100)
    assert 0.0 < d.ci_low <= d.delta_corpus_wer <= d.ci_high
    reverse = paired_difference(b, a, n_boot=500, seed=0)
    assert reverse.delta_corpus_wer == pytest.approx(-d.delta_corpus_wer)
    # Insertion order of the mappings does not matter.
    shuffled = dict(reversed(list(a.items())))
    assert paired_difference(shuffled, b, n_boot=500, seed=0) == d
