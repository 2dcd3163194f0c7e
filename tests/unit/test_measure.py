from __future__ import annotations

import json
import mmap
import re
import secrets
import sys
from pathlib import Path

import numpy as np
import pytest

import bench.run.measure
import echo_tts.timing
from bench.run.measure import (
    DeviceTimer,
    MemoryMeasurement,
    MemoryTracker,
    Samples,
    capture_environment,
    lock_sha256,
)
from echo_tts.timing import StageTimer, synchronize
from tests.cost_clock import CostClock


def test_device_timer_measures_its_block_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # The clock is the test's, so the figure is exact on a busy machine too (issue 22).
    clock = CostClock(now=100.0).read_by(monkeypatch, bench.run.measure)
    with DeviceTimer("cpu") as timing:
        clock.now += 0.25
    clock.now += 5.0  # after the block: not counted
    assert timing.seconds == 0.25


def test_device_timer_has_no_time_before_exit_or_after_a_failure() -> None:
    timer = DeviceTimer("cpu")
    with timer as timing, pytest.raises(RuntimeError, match="has not finished"):
        _ = timing.seconds
    assert timing.seconds >= 0.0

    with pytest.raises(ValueError), timer as failed:
        raise ValueError("boom")
    with pytest.raises(RuntimeError):
        _ = failed.seconds


def test_stage_timer_sums_repeated_stages_and_allows_nesting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = CostClock().read_by(monkeypatch, echo_tts.timing)
    timer = StageTimer("cpu")
    with timer.stage("total"):
        for _ in range(2):
            with timer.stage("sampling"):
                clock.now += 0.5
            clock.now += 0.125  # between stages: in the total only
        with timer.stage("decode"):
            clock.now += 2.0
    seconds = timer.seconds
    assert list(seconds) == ["sampling", "decode", "total"]
    assert seconds == {"sampling": 1.0, "decode": 2.0, "total": 3.25}
    seconds["sampling"] = -1.0  # a copy: the timer is unaffected
    assert timer.seconds["sampling"] > 0


def test_stage_timer_drops_a_stage_that_raised() -> None:
    timer = StageTimer("cpu")
    with pytest.raises(KeyError), timer.stage("decode"):
        raise KeyError("x")
    assert timer.seconds == {}


def test_synchronize_is_a_no_op_on_cpu() -> None:
    synchronize("cpu")


def test_samples_statistics_keep_raw_values() -> None:
    samples = Samples()
    for value in [5.0, 1.0, 4.0, 2.0, 3.0]:
        samples.add(value)
    assert samples.values == [5.0, 1.0, 4.0, 2.0, 3.0]
    assert len(samples) == 5
    assert samples.median == 3.0
    assert samples.mean == 3.0
    assert samples.p10 == pytest.approx(1.4)  # linear between order statistics
    assert samples.p90 == pytest.approx(4.6)
    assert samples.stdev == pytest.approx(np.std([1, 2, 3, 4, 5], ddof=1))
    summary = samples.to_dict()
    assert summary["n"] == 5 and summary["values"] == samples.values
    json.dumps(summary)


def test_samples_single_and_empty() -> None:
    one = Samples([0.5])
    assert (one.median, one.p10, one.p90, one.stdev) == (0.5, 0.5, 0.5, 0.0)
    with pytest.raises(ValueError, match="no samples"):
        _ = Samples().median


def _current_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_memory_tracker_sees_a_100_mb_allocation_in_peak_rss() -> None:
    size = 100 * 1024 * 1024
    before = _current_rss_bytes()
    with MemoryTracker("cpu") as memory:
        # A fresh anonymous mapping, touched page by page: malloc could instead hand back
        # heap memory freed earlier in the test session, which is already resident.
        block = mmap.mmap(-1, size)
        for offset in range(0, size, mmap.PAGESIZE):
            block[offset] = 1
        block.close()
    assert memory.peak_rss_bytes is not None
    assert memory.peak_rss_bytes >= before + int(0.9 * size)
    assert memory.peak_allocated_bytes is None and memory.peak_reserved_bytes is None
    assert memory.device_used_bytes is None

    if memory.peak_rss_scope == "block":
        # The high-water mark was reset: a quiet block does not inherit the earlier peak.
        with MemoryTracker("cpu") as quiet:
            pass
        assert quiet.peak_rss_bytes is not None
        assert quiet.peak_rss_bytes < memory.peak_rss_bytes - size // 2
        # What was resident before is counted apart from the block's own working peak.
        assert memory.weights_resident_bytes is not None and memory.working_peak_bytes is not None
        assert abs(memory.weights_resident_bytes - before) < size // 4
        assert memory.working_peak_bytes >= int(0.9 * size)
        assert quiet.working_peak_bytes is not None and quiet.working_peak_bytes < size // 4
    else:
        assert memory.peak_rss_scope == "process"


def test_memory_measurement_is_json_ready() -> None:
    assert (
        json.loads(json.dumps(MemoryMeasurement(peak_rss_bytes=3).to_dict()))["peak_rss_bytes"] == 3
    )


def test_capture_environment_records_the_machine() -> None:
    env = capture_environment(spec_hash="abc123")
    for key in [
        "captured_at",
        "echo_bench_version",
        "spec_hash",
        "git_commit",
        "git_dirty",
        "hostname",
        "platform",
        "python_version",
        "cpu_model",
        "cpu_count",
        "ram_total_bytes",
        "cuda_available",
        "cuda_version",
        "gpu_count",
        "gpu_names",
        "driver_version",
        "packages",
    ]:
        assert key in env, key
    assert env["spec_hash"] == "abc123"
    assert env["packages"]["torch"] and env["packages"]["numpy"]
    assert "openai-whisper" in env["packages"] and "jiwer" in env["packages"]
    assert env["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert env["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", env["git_commit"])
    assert env["captured_at"].endswith("+00:00")
    json.dumps(env)


def test_environment_names_the_lock_it_was_installed_from(tmp_path: Path) -> None:
    import hashlib

    lock = Path(__file__).resolve().parents[2] / "uv.lock"
    assert capture_environment()["lock_sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()
    assert lock_sha256(tmp_path / "missing.lock") is None


def test_capture_environment_never_records_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    planted = {
        name: f"secret-{secrets.token_hex(16)}"
        for name in ("HF_TOKEN", "MODAL_TOKEN_SECRET", "AWS_SECRET_ACCESS_KEY")
    }
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    text = json.dumps(capture_environment(spec_hash="x"))
    for value in planted.values():
        assert value not in text
