"""The machine's state beside each timing: CPU figures here, NVML through a fake library."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.run import machine
from bench.run.machine import Nvml, cpu_mhz, machine_state, throttle_names


def test_cpu_state_is_read_from_this_machine() -> None:
    state = machine_state("cpu")
    assert set(state) == {"load_avg_1m", "cpu_mhz"}
    assert state["load_avg_1m"] is None or state["load_avg_1m"] >= 0
    assert state["cpu_mhz"] is None or state["cpu_mhz"] > 0


def test_cpu_clock_prefers_cpufreq_and_falls_back_to_cpuinfo(tmp_path: Path) -> None:
    sys_cpu = tmp_path / "cpu"
    for n, khz in ((0, 2_000_000), (1, 3_000_000)):
        folder = sys_cpu / f"cpu{n}" / "cpufreq"
        folder.mkdir(parents=True)
        (folder / "scaling_cur_freq").write_text(f"{khz}\n")
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\ncpu MHz\t\t: 1000.000\nprocessor : 1\ncpu MHz : 1500.5\n")
    assert cpu_mhz(sys_cpu, info) == 2500.0
    assert cpu_mhz(tmp_path / "none", info) == 1250.2
    assert cpu_mhz(tmp_path / "none", tmp_path / "missing") is None


def test_throttle_reasons_are_named() -> None:
    assert throttle_names(0) == "none"
    assert throttle_names(0x4 | 0x40) == "sw_power_cap,hw_thermal"
    assert throttle_names(0x1 | 0x10000) == "gpu_idle,0x10000"


class FakeNvml:
    """NVML's C calls as a fake: fills the output pointer and returns 0 (success), or a
    non-zero code for calls this "card" does not support."""

    def __init__(self, unsupported: tuple[str, ...] = ()) -> None:
        self.unsupported = unsupported
        self.bus_ids: list[bytes] = []

    def _fill(self, name: str, out: Any, value: int) -> int:
        if name in self.unsupported:
            return 3  # NVML_ERROR_NOT_SUPPORTED
        out.contents.value = value
        return 0

    def nvmlInit_v2(self) -> int:
        return 0

    def nvmlDeviceGetHandleByPciBusId_v2(self, bus_id: bytes, handle: Any) -> int:
        self.bus_ids.append(bus_id)
        handle.contents.value = 1234
        return 0 if bus_id.startswith(b"00000000:") else 13

    def nvmlDeviceGetClockInfo(self, handle: Any, clock: int, value: Any) -> int:
        return self._fill("clock", value, {1: 1755, 2: 6251}[clock])

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int, value: Any) -> int:
        assert sensor == 0
        return self._fill("temperature", value, 71)

    def nvmlDeviceGetPowerUsage(self, handle: Any, value: Any) -> int:
        return self._fill("power", value, 287_500)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any, value: Any) -> int:
        assert isinstance(value.contents, ctypes.c_ulonglong)
        return self._fill("throttle", value, 0x4)


def test_gpu_state_from_nvml() -> None:
    lib = FakeNvml()
    reader = Nvml(lib)
    state = reader.gpu_state("00000000:17:00.0")
    assert state == {"gpu_sm_clock_mhz": 1755, "gpu_mem_clock_mhz": 6251, "gpu_temp_c": 71,
                     "gpu_power_w": 287.5, "gpu_throttle": "sw_power_cap"}
    reader.gpu_state("00000000:17:00.0")
    assert lib.bus_ids == [b"00000000:17:00.0"]  # the handle is looked up once


def test_figures_a_card_cannot_give_are_none() -> None:
    state = Nvml(FakeNvml(unsupported=("power", "temperature"))).gpu_state("00000000:17:00.0")
    assert state["gpu_power_w"] is None and state["gpu_temp_c"] is None
    assert state["gpu_sm_clock_mhz"] == 1755
    unknown = Nvml(FakeNvml()).gpu_state("00000001:01:00.0")
    assert set(unknown.values()) == {None}


def test_a_cuda_device_is_named_by_its_pci_bus_id(monkeypatch: pytest.MonkeyPatch) -> None:
    class Props:
        pci_domain_id, pci_bus_id, pci_device_id = 0, 0x17, 0

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props())
    lib = FakeNvml()
    state = machine_state("cuda:0", nvml=Nvml(lib))
    assert lib.bus_ids == [b"00000000:17:00.0"]
    assert state["gpu_throttle"] == "sw_power_cap" and "load_avg_1m" in state
    # Without NVML (no library on this machine) the GPU figures are None, not an error.
    monkeypatch.setattr(machine.Nvml, "shared", classmethod(lambda cls: None))
    assert machine_state("cuda:0")["gpu_sm_clock_mhz"] is None
