"""Errors that mean "bad input": the CLI prints their one-line message and exits 2.

Each layer defines its own error type (``SpecError``, ``StoreError``, ...); ``bench.cli``
lists them all in ``USER_ERRORS``.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input detected by the harness; the message names the problem and the fix."""
