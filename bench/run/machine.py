"""The machine's state beside each timing: load and CPU clock; GPU clocks, heat, power.

A timing is only as good as the conditions it was taken in. Every generation record
carries a snapshot taken just before it ran (:func:`machine_state`), so a slow cell can be
told apart from a busy, hot or throttled machine:

* ``load_avg_1m``: the 1-minute load average (other processes competing for the CPU);
* ``cpu_mhz``: the mean current clock of the online CPUs (cpufreq, else /proc/cpuinfo);
* on a CUDA device, from NVML (read through ctypes, so no Python binding is needed):
  ``gpu_sm_clock_mhz``, ``gpu_mem_clock_mhz``, ``gpu_temp_c``, ``gpu_power_w`` and
  ``gpu_throttle`` (the active clock-event reasons, e.g. ``sw_power_cap``, or ``none``).

Every figure is None where the machine cannot say (no cpufreq, no NVML library).
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path
from typing import Any, Protocol

import torch

log = logging.getLogger(__name__)

_CPUFREQ = Path("/sys/devices/system/cpu")
_CPUINFO = Path("/proc/cpuinfo")

#: NVML's clock-event ("throttle") reason bits (nvml.h, nvmlClocksEventReason*).
THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
    0x100: "display_clocks",
}
_NVML_CLOCK_SM, _NVML_CLOCK_MEM, _NVML_TEMPERATURE_GPU = 1, 2, 0


def machine_state(device: torch.device | str, nvml: Nvml | None = None) -> dict[str, Any]:
    """A flat, JSON-ready snapshot of the machine around ``device`` (see the module doc)."""
    state: dict[str, Any] = {"load_avg_1m": _load_average(), "cpu_mhz": cpu_mhz()}
    device = torch.device(device)
    if device.type == "cuda":
        reader = nvml if nvml is not None else Nvml.shared()
        state.update(reader.gpu_state(_pci_bus_id(device)) if reader is not None
                     else gpu_state_unknown())
    return state


def gpu_state_unknown() -> dict[str, Any]:
    return {"gpu_sm_clock_mhz": None, "gpu_mem_clock_mhz": None, "gpu_temp_c": None,
            "gpu_power_w": None, "gpu_throttle": None}


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def cpu_mhz(cpufreq: Path = _CPUFREQ, cpuinfo: Path = _CPUINFO) -> float | None:
    """Mean current clock of the CPUs in MHz: cpufreq's scaling_cur_freq (kHz) where the
    kernel exposes it, else the "cpu MHz" lines of /proc/cpuinfo; None when neither."""
    values = []
    for path in sorted(cpufreq.glob("cpu[0-9]*/cpufreq/scaling_cur_freq")):
        try:
            values.append(int(path.read_text().strip()) / 1000)
        except (OSError, ValueError):
            continue
    if not values:
        try:
            lines = cpuinfo.read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            if line.startswith("cpu MHz"):
                try:
                    values.append(float(line.split(":", 1)[1]))
                except ValueError:
                    continue
    return round(sum(values) / len(values), 1) if values else None


def throttle_names(mask: int) -> str:
    """The reasons set in an NVML clock-event mask, comma-separated ("none" for 0)."""
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_REASONS)
    if unknown:
        names.append(f"0x{unknown:x}")
    return ",".join(names) or "none"


def _pci_bus_id(device: torch.device) -> str:
    # NVML numbers GPUs its own way (CUDA_VISIBLE_DEVICES does not apply to it); the PCI
    # bus id names the same card for both.
    props: Any = torch.cuda.get_device_properties(device)  # the stubs lack the pci fields
    return f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"


class NvmlLibrary(Protocol):
    """The NVML C functions used here (a ctypes CDLL, or a fake in tests)."""

    def nvmlInit_v2(self) -> int: ...
    def nvmlDeviceGetHandleByPciBusId_v2(self, bus_id: bytes, handle: Any) -> int: ...
    def nvmlDeviceGetClockInfo(self, handle: Any, clock: int, value: Any) -> int: ...
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int, value: Any) -> int: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any, value: Any) -> int: ...
    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any, value: Any) -> int: ...


class Nvml:
    """Reads one GPU's clocks, temperature, power and throttle reasons through NVML.

    Each NVML call returns 0 on success; a figure whose call fails is None rather than an
    error (a card may not report power, a container may hide temperature).
    """

    _shared: Nvml | None = None
    _tried = False

    def __init__(self, lib: NvmlLibrary) -> None:
        self.lib = lib
        self._handles: dict[str, ctypes.c_void_p] = {}

    @classmethod
    def shared(cls) -> Nvml | None:
        """The process's NVML reader (loaded and initialised once), or None without NVML."""
        if not cls._tried:
            cls._tried = True
            try:
                lib: Any = ctypes.CDLL("libnvidia-ml.so.1")
                if lib.nvmlInit_v2() == 0:
                    cls._shared = Nvml(lib)
            except (OSError, AttributeError) as err:
                log.debug("NVML is not available: %s", err)
        return cls._shared

    def _handle(self, bus_id: str) -> ctypes.c_void_p | None:
        if bus_id not in self._handles:
            handle = ctypes.c_void_p()
            if self.lib.nvmlDeviceGetHandleByPciBusId_v2(bus_id.encode(),
                                                         ctypes.pointer(handle)) != 0:
                return None
            self._handles[bus_id] = handle
        return self._handles[bus_id]

    def gpu_state(self, bus_id: str) -> dict[str, Any]:
        """The GPU at PCI ``bus_id``: clocks (MHz), temperature (C), power (W), throttle."""
        handle = self._handle(bus_id)
        if handle is None:
            return gpu_state_unknown()

        def read(call: Any, *args: int, kind: Any = ctypes.c_uint) -> int | None:
            value = kind()
            return int(value.value) if call(handle, *args, ctypes.pointer(value)) == 0 else None

        power_mw = read(self.lib.nvmlDeviceGetPowerUsage)
        reasons = read(self.lib.nvmlDeviceGetCurrentClocksThrottleReasons,
                       kind=ctypes.c_ulonglong)
        return {
            "gpu_sm_clock_mhz": read(self.lib.nvmlDeviceGetClockInfo, _NVML_CLOCK_SM),
            "gpu_mem_clock_mhz": read(self.lib.nvmlDeviceGetClockInfo, _NVML_CLOCK_MEM),
            "gpu_temp_c": read(self.lib.nvmlDeviceGetTemperature, _NVML_TEMPERATURE_GPU),
            "gpu_power_w": None if power_mw is None else power_mw / 1000,
            "gpu_throttle": None if reasons is None else throttle_names(reasons),
        }
