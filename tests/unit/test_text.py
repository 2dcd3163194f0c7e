from __future__ import annotations

import pytest

from echo_tts import TextTooLongError, encode_text, normalize_prompt


def test_normalisation() -> None:
    assert normalize_prompt("Hi: there; you\u2014me\u2026") == "[S1] Hi, there, you, me..."
    assert normalize_prompt("[S2] tagged") == "[S2] tagged"
    assert normalize_prompt("(sighs) ok") == "(sighs) ok"


def test_bos_padding_and_mask() -> None:
    ids, mask = encode_text(["a", "abc"])
    assert ids.shape == mask.shape == (2, 9)  # BOS + "[S1] abc"
    assert ids[0, 0] == 0 and mask[0].sum() == 7 and mask[1].all()


def test_too_long_is_an_error_unless_truncated() -> None:
    long = "word " * 200
    with pytest.raises(TextTooLongError, match="split_text"):
        encode_text([long])
    ids, mask = encode_text([long], truncate=True)
    assert ids.shape[1] == 768 and mask.all()


def test_explicit_max_length_pads() -> None:
    ids, mask = encode_text(["hi"], max_length=32)
    assert ids.shape == (1, 32) and mask.sum() == 8


PASSAGE = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk. He wound the "
    "clockwork, trimmed the wick, and polished the great lens until it shone. Ships far out "
    "on the grey water would see the beam sweep past, once every ten seconds, and know "
    "exactly where the rocks lay. In forty years he never missed a night, not during the "
    "storm of nineteen fifty-three, not when his daughter was born, and not when the "
    "harbour froze solid for a week. When the light was finally automated, the engineers "
    "found his logbooks stacked neatly in the watch room: every night recorded, every "
    "ship counted, every change in the weather noted in small, careful handwriting that "
    "never wavered. They kept the books in the museum in town, where children still ask "
    "whether the old keeper ever slept at all, and the guides always smile and say that "
    "he slept in the daytime, like an owl, with one ear open for the foghorn."
)


def test_a_150_word_passage_takes_two_chunks_at_640() -> None:
    from echo_tts.text import chunk_bytes_for, split_text

    assert 140 <= len(PASSAGE.split()) <= 170
    chunks = split_text(PASSAGE, chunk_bytes_for(640))
    assert len(chunks) == 2
    assert " ".join(chunks) == PASSAGE
    assert all(c.endswith(".") for c in chunks)  # split at a sentence end


def test_split_falls_back_to_clauses_words_and_characters() -> None:
    from echo_tts.text import split_text

    assert split_text("one, two, three", 9) == ["one, two,", "three"]
    assert split_text("alpha beta gamma", 11) == ["alpha beta", "gamma"]
    assert split_text("abcdefgh", 3) == ["abc", "def", "gh"]
    assert split_text("   ", 10) == []
    for chunk in split_text(PASSAGE + " caf\u00e9" * 30, 50):
        assert len(chunk.encode()) <= 50
