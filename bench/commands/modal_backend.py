"""The modal backend as the CLI builds it: the app's objects (from
:mod:`bench.backends.modal_app`) handed to the orchestration code, and Whisper scoring
sent to the app's GPU ``Transcriber``. The CLI imports the app; the app and the
orchestrator never import the CLI (no import circle)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from bench.backends.modal_orchestrator import ModalBackend, ModalWorkers
from bench.scoring.asr import ASR
from bench.spec.sweep import SweepSpec


def modal_backend(spec: SweepSpec, *, confirm: bool, stack: contextlib.ExitStack
                  ) -> tuple[ModalBackend, Callable[[], ASR]]:
    """The backend, and a factory of the remote ASR for the spec's ``measure.asr``.

    The ephemeral app starts when first needed (after the cost is confirmed) and stays
    up until ``stack`` closes, so scoring after the last cell still reaches it.
    """
    from bench.backends.modal_app import BenchWorker, Transcriber, app, outputs
    from bench.scoring.remote_asr import RemoteASR

    # The outputs Volume: kept WAVs wait there in each call's journal until read.
    workers = ModalWorkers(BenchWorker, app=app, region=spec.modal.region, volume=outputs,
                           keep_open=stack)

    def remote_asr() -> ASR:
        workers.ensure_running()
        # @app.cls made Transcriber a modal.Cls: calling it with the parameter gives a
        # handle whose methods run in the GPU container.
        transcriber: object = Transcriber(asr=spec.measure.asr)  # type: ignore[call-arg]
        return RemoteASR(transcriber)  # type: ignore[arg-type]

    return ModalBackend(confirm=confirm, workers=workers), remote_asr
