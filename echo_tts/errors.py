"""What one-line error messages quote of the exception that caused them."""

from __future__ import annotations


def first_line(err: BaseException, empty: str | None = None) -> str:
    """The first line of ``err``'s message (blank lines around it ignored); for a blank
    message, ``empty``, or the exception's type name when that is None."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else (type(err).__name__ if empty is None else empty)
