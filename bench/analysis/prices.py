"""GPU and CPU prices per second, read from one data file (bench/data/gpu_prices.toml).

Used by the reports (cost per hour of audio) and the Modal backend (cost estimate of a
sweep); ``--prices FILE`` points either at a file of the same shape.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from bench.core.errors import UserError


@dataclass(frozen=True)
class Prices:
    """Per-second prices: ``gpu`` maps a price key (Modal GPU string) to currency/second
    for one GPU; ``aliases`` maps other strings to keys; ``device_names`` are (regex, key)
    pairs for CUDA device names; ``cpu_per_core_second`` prices CPU runs."""

    gpu: dict[str, float]
    cpu_per_core_second: float | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    device_names: tuple[tuple[str, str], ...] = ()
    source: str = ""
    date: str = ""
    currency: str = "USD"
    note: str = ""
    origin: str = ""  # the file these prices were read from
    # Modal's surcharges (the price file's [surcharges]): a region pin multiplies what a
    # container uses ("broad" regions such as "us", "narrow" ones such as "us-west");
    # non-preemptible containers pay a multiple of the CPU and memory price.
    region_multipliers: dict[str, float] = field(default_factory=dict)
    nonpreemptible_multiplier: float = 1.0
    memory_per_gib_second: float = 0.0

    def region_multiplier(self, region: str | None) -> float:
        """The price multiplier of pinning containers to ``region`` (1 without a pin):
        Modal's broad regions are one word ("us", "eu"), narrow ones name a part
        ("us-west") or a cloud region ("us-east-1")."""
        if not region:
            return 1.0
        kind = "narrow" if "-" in region else "broad"
        return self.region_multipliers.get(kind, 1.0)

    def key_for(self, gpu: str | None, device_name: str | None = None) -> tuple[str | None, int]:
        """(price key, number of GPUs) for a Modal GPU string or, failing that, a device name."""
        if gpu:
            name, _, count = gpu.partition(":")
            name = self.aliases.get(name, name)
            if name in self.gpu:
                return name, int(count) if count.isdigit() else 1
        if device_name:
            for pattern, key in self.device_names:
                if re.search(pattern, device_name, re.IGNORECASE) and key in self.gpu:
                    return key, 1
        return None, 0

    def price(self, gpu: str) -> float:
        """Price of one second of a Modal GPU string (``NAME`` or ``NAME:N``); an unknown
        GPU is a UserError, since a cost estimate must not guess."""
        key, count = self.key_for(gpu)
        if key is None:
            raise UserError(f"no price for GPU {gpu!r} in {self.origin or self.source}; add it there")
        return self.gpu[key] * count

    def per_second(self, gpu: str | None, device_name: str | None,
                   cpu_cores: int | None = None) -> tuple[float | None, str]:
        """Price of one second of a cell's hardware and a few words on where it came from.

        A CPU run (device name "cpu") costs ``cpu_cores`` cores at the CPU rate; anything
        unmatched has no price (None) rather than a guessed one.
        """
        key, count = self.key_for(gpu, device_name)
        if key is not None:
            return self.gpu[key] * count, f"{count} x {key}" if count > 1 else key
        if (device_name or "").lower() == "cpu" and not gpu:
            if self.cpu_per_core_second is not None and cpu_cores:
                return self.cpu_per_core_second * cpu_cores, f"{cpu_cores} CPU cores"
            return None, "CPU core count unknown"
        return None, f"no price for {gpu or device_name or 'unknown hardware'}"


def load_prices(path: str | Path | None = None) -> Prices:
    """Read a price file (default: the shipped ``bench/data/gpu_prices.toml``)."""
    if path is None:
        text = (resources.files("bench") / "data" / "gpu_prices.toml").read_text("utf-8")
        origin = "bench/data/gpu_prices.toml"
    else:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as err:
            raise UserError(f"cannot read price file {path}: {err.strerror}") from None
        origin = str(path)
    try:
        raw = tomllib.loads(text)
        gpu = {str(k): float(v) for k, v in raw.get("gpu_per_second", {}).items()}
        cpu = raw.get("cpu_per_core_second")
        return Prices(
            gpu=gpu,
            cpu_per_core_second=None if cpu is None else float(cpu),
            aliases={str(k): str(v) for k, v in raw.get("aliases", {}).items()},
            device_names=tuple((str(p), str(k)) for p, k in raw.get("device_names", [])),
            source=str(raw.get("source", origin)),
            date=str(raw.get("date", "")),
            currency=str(raw.get("currency", "USD")),
            note=str(raw.get("note", "")),
            origin=origin,
            region_multipliers={str(k): float(v) for k, v in
                                raw.get("surcharges", {}).get("region", {}).items()},
            nonpreemptible_multiplier=float(
                raw.get("surcharges", {}).get("nonpreemptible_cpu_memory", 1.0)),
            memory_per_gib_second=float(raw.get("memory_per_gib_second", 0.0)),
        )
    except (tomllib.TOMLDecodeError, AttributeError, TypeError, ValueError) as err:
        raise UserError(f"price file {origin} is malformed: {err}; see "
                        "bench/data/gpu_prices.toml for the expected shape") from None
