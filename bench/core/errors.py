"""Errors that mean "bad input": the CLI prints their one-line message and exits 2."""

from __future__ import annotations

from echo_tts.production import ProductionConfigError
from echo_tts.text import TextTooLongError
from echo_tts.weights import WeightsError


class UserError(Exception):
    """Bad input detected by the harness; the message names the problem and the fix."""


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [UserError, WeightsError, TextTooLongError,
                                         ProductionConfigError]
    # Each module defines its own error type; import them here so the CLI knows them all.
    from bench.scoring.asr import ASRError
    from bench.scoring.models import ModelMissingError
    from bench.spec.gpus import GpuError
    from bench.spec.prompts import PromptError
    from bench.spec.sweep import SpecError
    from bench.store.run_store import StoreError
    from echo_tts.audio import AudioError

    errors += [SpecError, PromptError, StoreError, ASRError, ModelMissingError, AudioError,
               GpuError]
    return tuple(errors)


USER_ERRORS = _user_errors()
