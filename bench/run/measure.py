"""Timers, memory trackers and environment capture.

Trackers are context managers that yield a typed measurement, filled in when the block
exits::

    with DeviceTimer(device) as timing, MemoryTracker(device) as memory:
        run_generation()
    timing.seconds, memory.peak_allocated_bytes

Times are seconds, memory is bytes. Raw values are kept (``Samples.values``) so reports can
show spread and re-aggregate; summaries are derived, never stored instead of the values.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import torch

from echo_tts.timing import synchronize

log = logging.getLogger(__name__)

# Distributions whose versions change results or speed; recorded with every run.
RECORDED_PACKAGES = (
    "torch",
    "torchaudio",
    "numpy",
    "openai-whisper",
    "jiwer",
    "modal",
    "pandas",
    "pyarrow",
    "soundfile",
    "safetensors",
    "huggingface_hub",
    "nvidia-ml-py",
)

# The repository this package was imported from (when it is a checkout, not an install).
_REPO_ROOT = Path(__file__).resolve().parents[2]  # bench/run/measure.py -> the repository
# The lock every environment installs from (uv.lock). A checkout has it at the root; the
# Modal image copies it next to the packages, which puts it at the same relative place.
LOCK_FILE = _REPO_ROOT / "uv.lock"
_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


# --------------------------------------------------------------------------------------
# Time


class Timing:
    """Elapsed time of one timed block, in seconds; readable once the block has exited."""

    __slots__ = ("_seconds",)

    def __init__(self) -> None:
        self._seconds: float | None = None

    @property
    def seconds(self) -> float:
        if self._seconds is None:
            raise RuntimeError("the timed block has not finished; read .seconds after it")
        return self._seconds

    def _finish(self, seconds: float) -> None:
        self._seconds = seconds


class DeviceTimer:
    """Times a block on ``device``.

    On CUDA, events are recorded on the current stream around the block and the end event
    is waited for at exit, so the time is the device's timeline (including any idle gaps
    while the host was launching work). Elsewhere the host clock (perf_counter) is read
    after synchronising the device. A block that raises leaves ``seconds`` unset.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._timing = Timing()
        self._start_event: torch.cuda.Event | None = None
        self._start_clock = 0.0

    def __enter__(self) -> Timing:
        self._timing = Timing()
        if self.device.type == "cuda":
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._start_event.record(torch.cuda.current_stream(self.device))
        else:
            synchronize(self.device)
            self._start_clock = time.perf_counter()
        return self._timing

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            return
        if self._start_event is not None:
            end = torch.cuda.Event(enable_timing=True)
            end.record(torch.cuda.current_stream(self.device))
            end.synchronize()
            # elapsed_time is in milliseconds.
            self._timing._finish(self._start_event.elapsed_time(end) / 1000.0)
            self._start_event = None
        else:
            synchronize(self.device)
            self._timing._finish(time.perf_counter() - self._start_clock)


@dataclass
class Samples:
    """Repeated measurements of one quantity (seconds, for timings), raw values in order.

    Percentiles interpolate linearly between order statistics (numpy's default); ``stdev``
    is the sample standard deviation (n - 1), 0.0 for a single value.
    """

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(float(value))

    def __len__(self) -> int:
        return len(self.values)

    def _checked(self) -> list[float]:
        if not self.values:
            raise ValueError("no samples recorded; add at least one value first")
        return self.values

    @property
    def median(self) -> float:
        return float(statistics.median(self._checked()))

    @property
    def p10(self) -> float:
        return float(np.percentile(self._checked(), 10))

    @property
    def p90(self) -> float:
        return float(np.percentile(self._checked(), 90))

    @property
    def mean(self) -> float:
        return float(statistics.fmean(self._checked()))

    @property
    def stdev(self) -> float:
        values = self._checked()
        return float(statistics.stdev(values)) if len(values) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Raw values plus the summary, ready for JSON."""
        return {
            "values": list(self.values),
            "n": len(self.values),
            "median": self.median,
            "p10": self.p10,
            "p90": self.p90,
            "mean": self.mean,
            "stdev": self.stdev,
        }


# --------------------------------------------------------------------------------------
# Memory


@dataclass
class MemoryMeasurement:
    """Peak memory of one tracked block, in bytes; ``None`` where it is not available.

    ``peak_allocated_bytes`` / ``peak_reserved_bytes``: PyTorch's CUDA caching allocator
    (tensors alive / memory held from the driver), peak since the block started.
    ``device_used_bytes``: the whole device's used memory from NVML at exit, all processes
    and the CUDA context included (needs nvidia-ml-py).
    ``peak_rss_bytes``: host resident set size peak; ``peak_rss_scope`` says whether it is
    the peak during the block ("block") or since the process started ("process", when the
    kernel's high-water mark cannot be reset).
    ``weights_resident_bytes``: what was held when the block started (CUDA tensors
    allocated on a GPU device, the host RSS on CPU): the loaded model and codec, which a
    generation does not bring; ``working_peak_bytes``: the block's own peak above that.
    Their sum is what the block needed; unlike the reserved peak, neither counts blocks
    the caching allocator kept from earlier work.
    """

    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    device_used_bytes: int | None = None
    peak_rss_bytes: int | None = None
    peak_rss_scope: Literal["block", "process"] | None = None
    weights_resident_bytes: int | None = None
    working_peak_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MemoryTracker:
    """Tracks peak memory of a block on ``device`` (and host RSS, on any device).

    Entering resets the CUDA allocator's peak statistics and the kernel's RSS high-water
    mark, so trackers must not be nested: an inner one would reset the outer one's peak.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._measurement = MemoryMeasurement()
        self._rss_reset = False

    def __enter__(self) -> MemoryMeasurement:
        self._measurement = MemoryMeasurement()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._measurement.weights_resident_bytes = int(torch.cuda.memory_allocated(self.device))
        self._rss_reset = _reset_peak_rss()
        if self.device.type != "cuda" and self._rss_reset:
            # Right after the reset the high-water mark is the current RSS.
            self._measurement.weights_resident_bytes = _read_vmhwm()
        return self._measurement

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        m = self._measurement
        if self.device.type == "cuda":
            # The allocator's statistics are kept on the host when memory is requested, so
            # no synchronisation is needed to read them.
            m.peak_allocated_bytes = int(torch.cuda.max_memory_allocated(self.device))
            m.peak_reserved_bytes = int(torch.cuda.max_memory_reserved(self.device))
            m.device_used_bytes = _nvml_used_bytes(self.device)
        hwm = _read_vmhwm() if self._rss_reset else None
        if hwm is not None:
            m.peak_rss_bytes, m.peak_rss_scope = hwm, "block"
        else:
            m.peak_rss_bytes = _rusage_peak_rss()
            m.peak_rss_scope = "process" if m.peak_rss_bytes is not None else None
        peak = m.peak_allocated_bytes if self.device.type == "cuda" else hwm
        if peak is not None and m.weights_resident_bytes is not None:
            m.working_peak_bytes = max(0, peak - m.weights_resident_bytes)


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux: "5" to clear_refs); False if not allowed."""
    try:
        _PROC_CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _read_vmhwm() -> int | None:
    """Peak RSS since the last reset, in bytes, from /proc/self/status (VmHWM, in kB)."""
    try:
        text = _PROC_STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def _rusage_peak_rss() -> int | None:
    """Peak RSS since the process started, in bytes (getrusage; kB on Linux, bytes on macOS)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _nvml_used_bytes(device: torch.device) -> int | None:
    """Used memory of the physical GPU behind ``device`` from NVML, or None if unavailable.

    torch maps the CUDA index to NVML's (they differ under CUDA_VISIBLE_DEVICES).
    """
    try:
        import pynvml
    except ImportError:
        return None
    try:
        return int(torch.cuda.device_memory_used(device))
    except (pynvml.NVMLError, RuntimeError) as err:
        log.debug("NVML could not read the memory of %s: %s", device, err)
        return None


# --------------------------------------------------------------------------------------
# Environment


def capture_environment(spec_hash: str | None = None) -> dict[str, Any]:
    """Describe the machine and software a run executes on (a flat, JSON-ready dict).

    Environment variables are never read into the result: they hold tokens (Hugging Face,
    Modal, cloud keys), and a run directory is meant to be shared. For the same reason no
    git remote URL is recorded (it can embed credentials). Querying GPU properties
    initialises CUDA in this process when a GPU is present.
    """
    commit, dirty = _git_state(_REPO_ROOT)
    cuda = torch.cuda.is_available()
    gpus = (
        [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
        if cuda
        else []
    )
    return {
        "captured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "echo_bench_version": _package_version("echo-bench"),
        "spec_hash": spec_hash,
        "git_commit": commit,
        "git_dirty": dirty,
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "ram_total_bytes": _ram_total_bytes(),
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "gpu_count": len(gpus),
        "gpu_names": [p.name for p in gpus],
        "gpu_memory_bytes": [int(p.total_memory) for p in gpus],
        "gpu_compute_capability": [f"{p.major}.{p.minor}" for p in gpus],
        "driver_version": _driver_version() if cuda else None,
        "packages": {name: _package_version(name) for name in RECORDED_PACKAGES},
        "lock_sha256": lock_sha256(),
    }


def lock_sha256(path: Path = LOCK_FILE) -> str | None:
    """SHA-256 of the dependency lock the environment was installed from (None if absent).

    With the package versions beside it, this names the whole environment: two runs with
    the same hash installed the same versions of every package, not only the recorded ones.
    """
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _ram_total_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # sysconf names are platform-dependent
        return None


def _driver_version() -> str | None:
    """NVIDIA driver version from NVML, else from the kernel module's /proc entry."""
    version = _nvml_driver_version()
    if version is not None:
        return version
    try:
        # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 ..."
        first = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    words = first.split()
    return words[words.index("Module") + 1] if "Module" in words[:-1] else None


def _nvml_driver_version() -> str | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError as err:
        log.debug("NVML could not report the driver version: %s", err)
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


def _git_state(root: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout at ``root``; (None, None) when it is not one.

    The checkout must be rooted at ``root`` itself: an installed package inside some other
    repository (a virtualenv in a project folder) must not report that repository's commit.
    """

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top.strip()).resolve() != root.resolve():
        return None, None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    return (
        commit.strip() if commit else None,
        bool(status.strip()) if status is not None else None,
    )


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def pin_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Stop glibc from handing large blocks back to the kernel between uses.

    By default glibc's mmap and trim thresholds move with the history of allocations, so
    the same tensor sizes are sometimes served from resident heap and sometimes from
    fresh pages that fault in again (seen on CPU as millions of minor faults and seconds
    of system time, different for two codes doing the same work). Pinning both makes CPU
    timings reproducible and comparable. Returns False where this is not glibc.
    Memory freed stays resident, so do not use it where peak RSS is being measured.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
                    and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):
        return False
