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
