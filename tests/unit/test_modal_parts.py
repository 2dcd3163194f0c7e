"""The small parts of the Modal backend: retention, billed cost, the remote ASR, the
unlocked store for Volumes, ``pull --env`` and the import graph (no circle)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from bench.backends.billing import billed_cost
from bench.run.retention import in_sample, keep_reasons
from bench.scoring.remote_asr import RemoteASR, decode_audio, encode_audio
from bench.store.layout import INDEX_LOCK, LOCK
from bench.store.run_store import RunStore
from tests.import_graph import import_graph


def _ok(prompt: str, seconds: float, text: str = "x" * 20, total: float = 1.0,
        **flags: Any) -> dict[str, Any]:
    return {"status": "ok", "prompt_id": prompt, "audio_seconds": seconds,
            "normalized_text": text, "t_total": total, **flags}


def test_retention_keeps_a_stable_sample_and_everything_suspicious() -> None:
    prompts = [f"p{i:03d}" for i in range(400)]
    sample = {p for p in prompts if in_sample(p, 0.1)}
    assert 20 < len(sample) < 60  # about 10 %, chosen by hash
    assert sample == {p for p in prompts if in_sample(p, 0.1)}  # the same every time
    records = [_ok("p000", 2.0), _ok("p001", 2.0), _ok("p002", 2.0), _ok("p003", 2.0),
               _ok("p004", 9.0),                    # babbling: speech rate 4.5x the median
               _ok("p005", 2.0, total=5.0),         # 5x slower than its neighbours
               _ok("p006", 2.0, audio_silent=True), _ok("p007", 0.0, audio_nan=True),
               {"status": "failed", "prompt_id": "p008"}]
    reasons = keep_reasons(records, 0.0)
    assert reasons == [None, None, None, None, "outlier-speech-rate", "outlier-time",
                       "silent", "nan", None]
    assert keep_reasons(records, None) == ["all"] * 8 + [None]
    assert keep_reasons(records, 1.0)[:4] == ["sample"] * 4


def test_billed_cost_sums_the_apps_intervals_only() -> None:
    start = datetime(2026, 12, 1, 3, tzinfo=UTC)
    seen: dict[str, Any] = {}

    def report(**kwargs: Any) -> list[Any]:
        seen.update(kwargs)
        return [SimpleNamespace(object_id="ap-1", cost="1.50",
                                cost_by_resource={"GPU (L4)": Decimal("1.25"), "CPU": "0.25"}),
                SimpleNamespace(object_id="ap-1", cost=Decimal("0.50"),
                                cost_by_resource={"GPU (L4)": Decimal("0.50")}),
                SimpleNamespace(object_id="ap-2", cost=Decimal("7"), cost_by_resource={})]

    end = datetime(2026, 12, 1, 5, 30, tzinfo=UTC)
    billed = billed_cost(report, "ap-1", start, end, end + timedelta(hours=1))
    assert billed["billed_usd"] == 2.0
    assert billed["billed_by_resource"] == {"CPU": 0.25, "GPU (L4)": 1.75}
    assert "2 of 3 hourly interval(s)" in billed["billed_basis"]
    # The hours asked for: from the run's start hour to the end of its last hour.
    assert seen["resolution"] == "h" and seen["start"] == start
    assert seen["end"] == datetime(2026, 12, 1, 6, tzinfo=UTC)
    assert billed["billed_status"] == "provisional" and "final after" in billed["billed_basis"]
    settled = billed_cost(report, "ap-1", start, end, datetime(2026, 12, 2, 6, tzinfo=UTC))
    assert settled["billed_status"] == "final" and "provisional" not in settled["billed_basis"]
    assert billed_cost(report, "ap-9", start, start, end)["billed_usd"] is None


class Transcriber:
    """Stand-in for the app's Transcriber: records what crosses the wire."""

    def __init__(self) -> None:
        self.described = 0
        self.received: list[np.ndarray] = []

    def describe(self) -> tuple[str, bool]:
        self.described += 1
        return "whisper:large-v3:abc", False

    def transcribe(self, audios: list[bytes]) -> list[str]:
        self.received += [decode_audio(a) for a in audios]
        return [f"clip of {len(decode_audio(a))} samples" for a in audios]


def test_remote_asr_sends_16k_float32_and_keeps_the_models_identity() -> None:
    remote = Transcriber()
    asr = RemoteASR(remote, call=lambda method, *args: method(*args))
    assert (asr.name, asr.is_random, remote.described) == ("whisper:large-v3:abc", False, 1)
    audio = np.linspace(-1, 1, 16_000, dtype=np.float64)
    assert asr.transcribe([audio, audio[:800]]) == ["clip of 16000 samples", "clip of 800 samples"]
    assert remote.received[0].dtype == np.float32
    np.testing.assert_allclose(remote.received[0], audio.astype(np.float32))
    assert len(encode_audio(audio)) == 4 * 16_000
    broken = RemoteASR(SimpleNamespace(describe=remote.describe, transcribe=lambda a: []),
                       call=lambda method, *args: method(*args))
    with pytest.raises(RuntimeError, match="0 transcripts for 1 clips"):
        broken.transcribe([audio])


def test_a_store_on_a_volume_takes_no_file_locks(tmp_path: Path) -> None:
    root = tmp_path / "volume" / "runs"
    store = RunStore.create(root, spec={}, spec_name="s", spec_hash="h", environment={},
                            lock=False)
    store.append({"key": "c/p/0/0", "cell_id": "c", "status": "ok"})
    store.finalize("complete")
    store.close()
    with RunStore.open(store.path, lock=False) as again:
        assert again.done_keys() == {"c/p/0/0"}
        # A second unlocked opener is not refused: one writer is the orchestrator's job.
        with RunStore.open(store.path, lock=False):
            pass
    assert not (store.path / LOCK).exists() and not (root / INDEX_LOCK).exists()
    store.close()  # idempotent
    with pytest.raises(Exception, match="closed"):
        store.append({"key": "c/p/1/0", "cell_id": "c", "status": "ok"})


def test_pull_takes_a_modal_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import modal

    from bench.commands import pull

    seen: list[tuple[str, str | None]] = []

    class Volume:
        @staticmethod
        def from_name(name: str, environment_name: str | None = None) -> Any:
            seen.append((name, environment_name))
            return SimpleNamespace(listdir=lambda path, recursive=False: [])

    monkeypatch.setattr(modal, "Volume", Volume)
    parser = argparse.ArgumentParser()
    pull.add(parser.add_subparsers())
    args = parser.parse_args(["pull", "--env", "staging", "--root", str(tmp_path)])
    assert args.handler(args) == 0
    assert seen == [("echo-bench-outputs", "staging")]


def test_only_the_cli_imports_the_modal_app() -> None:
    # Orchestration receives the app's objects; nothing but the CLI command imports the app,
    # so a plain `import bench...` never builds Modal objects. (Circles anywhere, the Modal
    # modules included, are test_import_order's.)
    importers = sorted(m for m, deps in import_graph().items() if "bench.backends.modal_app" in deps)
    assert importers == ["bench.commands.modal_backend"]


def test_the_report_line_shows_the_estimate_and_the_billed_cost_side_by_side() -> None:
    from bench.report.run_cost import run_cost_text

    assert run_cost_text({}) is None
    estimate = {"estimate_usd": 1.844, "estimate_gpu_hours": 1.23,
                "estimate_basis": "estimate: FLOP model and list prices"}
    alone = run_cost_text({"cost": estimate})
    assert alone is not None and "estimated 1.84 USD (1.23 GPU hours" in alone
    assert "an estimate only" in alone
    both = run_cost_text({"cost": {**estimate, "billed_usd": 2.1,
                                   "billed_basis": "Modal billing report for app ap-1"}})
    assert both is not None and "estimated 1.84 USD" in both
    assert "billed 2.10 USD (Modal billing report for app ap-1)" in both
    assert "estimate only" not in both
    early = run_cost_text({"cost": {**estimate, "billed_usd": 0.4, "billed_status": "provisional",
                                    "billed_basis": "1 of 2 hourly interval(s)"}})
    assert early is not None and "billed so far (provisional) 0.40 USD" in early


def test_call_journal_keeps_finished_records_and_cuts_a_torn_line(tmp_path: Path) -> None:
    from bench.backends.modal_journal import CallJournal, journal_path
    from bench.core.errors import UserError

    commits: list[int] = []
    journal = CallJournal(tmp_path, "call-1", lambda: commits.append(1), every=2,
                          seconds=3600)
    assert journal.records() == []
    journal.begin_attempt("ta-1")
    assert len(commits) == 1  # a start is committed at once (the crash-loop count)
    journal.add({"key": "a", "status": "ok"}, b"RIFF....")
    assert len(commits) == 1  # generations are committed in batches
    journal.add({"key": "b", "status": "failed"}, None)
    assert len(commits) == 2
    journal.flush()
    assert len(commits) == 2  # nothing new to commit
    assert journal.wav("a").read_bytes() == b"RIFF...." and not journal.wav("b").exists()
    assert journal.relative_wav("a").startswith("journals/call-1/wav/")
    with journal.lines.open("ab") as f:  # the container stopped mid-write
        f.write(b'{"key": "c", "sta')
    again = CallJournal(tmp_path, "call-1", every=8, seconds=0)  # the restarted attempt
    assert [r["key"] for r in again.records()] == ["a", "b"]
    again.commit = lambda: commits.append(1)
    again.add({"key": "d", "status": "ok"}, None)  # a batch is also closed by time
    assert len(commits) == 3
    again.lines.write_text("\n".join(again.lines.read_text().splitlines()[:2]) + "\n")
    again.add({"key": "c", "status": "ok"}, None)
    assert [r["key"] for r in again.records()] == ["a", "b", "c"]
    for bad in ("../runs", "", "a/b"):
        with pytest.raises(UserError, match="bad call key"):
            journal_path(bad)


def test_modal_call_errors_are_told_apart_as_the_locked_client_raises_them() -> None:
    # modal 1.6.4: OutputExpiredError and FunctionTimeoutError subclass modal's
    # TimeoutError, which a poll with no result raises; InputCancellation is a
    # BaseException.
    from modal.exception import (
        FunctionTimeoutError,
        InputCancellation,
        NotFoundError,
        OutputExpiredError,
        RemoteError,
    )
    from modal.exception import TimeoutError as ModalTimeoutError

    from bench.backends.modal_watch import CallGone, CallPending, translate

    assert isinstance(translate(ModalTimeoutError()), CallPending)
    for gone in (OutputExpiredError(), NotFoundError("no such call"), InputCancellation(),
                 RemoteError("Function call was cancelled (terminated)")):
        assert isinstance(translate(gone), CallGone), gone
    for kept in (FunctionTimeoutError("24 h"), RemoteError("CUDA out of memory"),
                 ValueError("bad payload"), TimeoutError("a builtin one")):
        assert translate(kept) is kept
