"""The Modal backend's cost estimate of a sweep: GPU seconds from a FLOP model at a
guessed throughput per card, priced from the price file (bench/data/gpu_prices.toml).

Stated as a rough estimate wherever it is shown; the billed cost, when Modal's billing
report has it, is recorded beside it (:mod:`bench.backends.billing`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.analysis.prices import Prices
from bench.run.worker import Generation
from bench.spec.gpus import DEFAULT_GPU, validate_gpu
from bench.spec.prompts import Prompt
from bench.spec.sweep import Cell
from bench.spec.workload_axes import latent_rows_per_chunk
from echo_tts.text import chunk_bytes_for, split_text

#: Floor of one forward row at the official size, per latent (design map: 1.52B matmul
#: parameters on the per-token path plus attention), in FLOP.
FLOP_PER_LATENT_ROW = 3.2e9
#: Achieved bf16 throughput per GPU, FLOP/s. A rough guess: calibrated on the one
#: production figure we have (A10G, 40 steps, independent CFG, 640 latents: about 6 s a
#: chunk, i.e. ~27 TFLOP/s, ~22% of its bf16 peak) and scaled to the other cards by
#: their dense bf16 tensor peaks at the same 22%.
EFFECTIVE_FLOPS: dict[str, float] = {
    "T4": 14e12, "L4": 27e12, "A10": 27e12, "A10G": 27e12, "L40S": 80e12,
    "A100": 69e12, "A100-40GB": 69e12, "A100-80GB": 69e12, "H100": 218e12,
    "H100!": 218e12, "H200": 218e12, "B200": 495e12, "RTX-PRO-6000": 110e12,
}
#: Seconds a GPU type's container spends starting and loading the model (a guess).
COLD_START_SECONDS = 120.0
#: What the nightly's orchestrating container is billed for while the sweep runs (a
#: guess: Modal bills the larger of request and use; the orchestrator imports torch and
#: holds the run's records): CPU cores and memory.
ORCHESTRATOR_CORES = 0.125
ORCHESTRATOR_MEMORY_GIB = 2.0


@dataclass(frozen=True)
class CostLine:
    """The estimate for one GPU type."""

    gpu: str
    cells: int
    generations: int
    seconds: float
    usd: float


@dataclass(frozen=True)
class Surcharge:
    """Money on top of the GPU lines, with what it is for."""

    label: str
    usd: float


@dataclass(frozen=True)
class CostEstimate:
    lines: tuple[CostLine, ...]
    prices_source: str
    surcharges: tuple[Surcharge, ...] = ()

    @property
    def seconds(self) -> float:
        return sum(line.seconds for line in self.lines)

    @property
    def usd(self) -> float:
        return sum(line.usd for line in self.lines) + sum(s.usd for s in self.surcharges)

    def render(self) -> str:
        rows = [f"{'gpu':<12} {'cells':>5} {'gens':>6} {'GPU hours':>9} {'USD':>9}"]
        rows += [f"{ln.gpu:<12} {ln.cells:>5} {ln.generations:>6} {ln.seconds / 3600:>9.2f} "
                 f"{ln.usd:>9.2f}" for ln in self.lines]
        rows += [f"{'+ ' + s.label:<40} {s.usd:>9.2f}" for s in self.surcharges]
        rows.append(f"{'total':<12} {sum(ln.cells for ln in self.lines):>5} "
                    f"{sum(ln.generations for ln in self.lines):>6} {self.seconds / 3600:>9.2f} "
                    f"{self.usd:>9.2f}")
        rows.append(f"rough estimate: NFE x latents x {FLOP_PER_LATENT_ROW:.1e} FLOP at a guessed "
                    f"per-GPU throughput, +{COLD_START_SECONDS:.0f} s cold start per GPU type, "
                    f"+warm-up; prices: {self.prices_source}")
        return "\n".join(rows)


def generation_seconds(cell: Cell, prompt: Prompt, gpu: str, long_text: str = "chunk") -> float:
    """Guessed GPU seconds of one generation: chunks x NFE x latents x FLOP / throughput
    (one chunk unless ``long_text`` is "chunk", the mode that splits long text)."""
    sampler = cell.sampler
    chunks = 1
    if long_text == "chunk":
        chunks = max(1, len(split_text(prompt.text, chunk_bytes_for(sampler.sequence_length))))
    name = gpu.partition(":")[0]
    return chunks * latent_rows_per_chunk(cell) * FLOP_PER_LATENT_ROW / EFFECTIVE_FLOPS[name]


def estimate_cost(work: dict[Cell, list[Generation]], warmup: int, prices: Prices,
                  default_gpu: str = DEFAULT_GPU, long_text: str = "chunk", *,
                  region: str | None = None, orchestrator: bool = False) -> CostEstimate:
    """Expected GPU time and price of ``work``, per GPU type (sorted by name).

    Surcharges (Modal's price rules, from the price file): a ``region`` pin multiplies
    what the workers use (broad regions such as "us" 1.5x, narrow ones such as
    "us-west" 1.75x); ``orchestrator`` (the nightly, orchestrating inside Modal) adds a
    non-preemptible CPU container for as long as the slowest GPU type runs, at 3x the
    CPU and memory price."""
    per_gpu: dict[str, list[float]] = {}  # gpu -> [cells, generations, seconds]
    for cell, generations in work.items():
        if not generations:
            continue
        gpu = validate_gpu(cell.gpu or default_gpu)
        totals = per_gpu.setdefault(gpu, [0.0, 0.0, COLD_START_SECONDS])
        totals[0] += 1
        totals[1] += len(generations)
        totals[2] += sum(generation_seconds(cell, g.prompt, gpu, long_text) for g in generations)
        totals[2] += warmup * generation_seconds(cell, generations[0].prompt, gpu, long_text)
    lines = tuple(CostLine(gpu, int(c), int(n), s, s * prices.price(gpu))
                  for gpu, (c, n, s) in sorted(per_gpu.items()))
    surcharges = []
    multiplier = prices.region_multiplier(region)
    if multiplier != 1.0:
        gpu_usd = sum(line.usd for line in lines)
        surcharges.append(Surcharge(f"region {region} ({multiplier:g}x workers)",
                                    gpu_usd * (multiplier - 1.0)))
    if orchestrator and lines:
        wall = max(line.seconds for line in lines)  # GPU types run in parallel
        per_second = (ORCHESTRATOR_CORES * (prices.cpu_per_core_second or 0.0)
                      + ORCHESTRATOR_MEMORY_GIB * prices.memory_per_gib_second)
        surcharges.append(Surcharge(
            f"orchestrator, non-preemptible ({prices.nonpreemptible_multiplier:g}x CPU+mem)",
            wall * per_second * prices.nonpreemptible_multiplier))
    return CostEstimate(lines, prices.source, tuple(surcharges))
