"""Modal's GPU types in one table: names, aliases and the most GPUs per container.

Source: Modal's GPU guide (modal.com/docs/guide/gpu, read 2026-12): the accepted values
are T4, L4, A10, L40S, A100, A100-40GB, A100-80GB, RTX-PRO-6000, H100/H100!, H200 and
B200/B200+; "B200, H200, H100, A100, L4, T4 and L40S instances support up to 8 GPUs, and
A10 instances support up to 4". "A10G" is the older name of the A10 and still appears in
specs, so it is accepted as an alias. The spec, the CLI, the cost estimate and the Modal
app all validate through :func:`validate_gpu`, so they cannot disagree.

Leaf module: imports nothing from bench, so ``bench.spec.sweep`` may use it. Its errors are
:class:`GpuError`, which the CLI's error registry (``bench.core.errors``) treats as bad input.
"""

from __future__ import annotations

from dataclasses import dataclass


class GpuError(ValueError):
    """A GPU string Modal would refuse; the message names the accepted values."""


#: Cells that name no GPU run here: the cheapest card that holds the bf16 model, codec
#: and activations with room to spare.
DEFAULT_GPU = "L4"


@dataclass(frozen=True)
class GpuType:
    """One Modal GPU type: the name Modal documents today and its per-container limit."""

    name: str
    max_count: int


GPU_TYPES: dict[str, GpuType] = {g.name: g for g in (
    GpuType("T4", 8), GpuType("L4", 8), GpuType("A10", 4), GpuType("L40S", 8),
    GpuType("A100", 8), GpuType("A100-40GB", 8), GpuType("A100-80GB", 8),
    GpuType("RTX-PRO-6000", 8), GpuType("H100", 8), GpuType("H100!", 8),
    GpuType("H200", 8), GpuType("B200", 8), GpuType("B200+", 8),
)}
#: Older or alternative spellings -> the documented name Modal is sent.
GPU_ALIASES: dict[str, str] = {"A10G": "A10"}
#: Every string a spec may use for the type part (documented names, then aliases).
GPU_NAMES: tuple[str, ...] = (*GPU_TYPES, *GPU_ALIASES)


def parse_gpu(gpu: str) -> tuple[str, int] | None:
    """(documented name, count) for a GPU string such as ``l4``, ``A10G:2``, ``H100:8``;
    None when the type is unknown or the count is out of that type's range."""
    name, sep, count_text = gpu.upper().partition(":")
    gpu_type = GPU_TYPES.get(GPU_ALIASES.get(name, name))
    if gpu_type is None:
        return None
    if not sep:
        return gpu_type.name, 1
    if not count_text.isdigit() or not 1 <= int(count_text) <= gpu_type.max_count:
        return None
    return gpu_type.name, int(count_text)


def describe_gpus() -> str:
    """The accepted values, for error messages."""
    return f"a Modal GPU ({', '.join(GPU_NAMES)}), optionally ':n' with n 1-8 (1-4 for A10/A10G)"


def validate_gpu(gpu: str) -> str:
    """The spec's canonical form of a GPU string (upper-cased, as written: "A10G" stays
    "A10G" so cell ids do not change); GpuError naming the fix when Modal would refuse it."""
    canonical = gpu.upper()
    if parse_gpu(canonical) is None:
        name = canonical.partition(":")[0]
        if name not in GPU_NAMES:
            raise GpuError(f"unknown Modal GPU type {gpu!r}; use {describe_gpus()}")
        limit = GPU_TYPES[GPU_ALIASES.get(name, name)].max_count
        raise GpuError(f"bad GPU count in {gpu!r}; Modal allows {name}:1 to {name}:{limit}")
    return canonical


def modal_gpu(gpu: str) -> str:
    """What to pass to Modal's ``gpu=``: the documented name (aliases translated)."""
    parsed = parse_gpu(gpu)
    if parsed is None:
        validate_gpu(gpu)  # raises the explanatory error
        raise AssertionError("unreachable")  # pragma: no cover
    name, count = parsed
    return f"{name}:{count}" if count > 1 else name
