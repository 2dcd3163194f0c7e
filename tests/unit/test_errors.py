from __future__ import annotations

from echo_tts.errors import first_line


def test_first_line_of_an_error_message() -> None:
    assert first_line(ValueError("bad value\ntraceback detail")) == "bad value"
    assert first_line(OSError("\n  disk full \n")) == "disk full"
    assert first_line(KeyError()) == "KeyError"  # blank: the type name
    assert first_line(RuntimeError(""), empty="") == ""
