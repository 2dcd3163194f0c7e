"""Speed options for the DiT forward used inside the sampling loop.

* ``attention``: ``"sliced"`` (default) gives each CFG row kind its contiguous span of
  the key axis with no mask, so attention can use the fused flash / cuDNN kernels and
  skips dropped keys; ``"masked"`` attends over every key with a boolean mask, as the
  reference does. Batches whose masks are not "valid keys, then padding" use the mask
  either way (see :func:`echo_tts.sampling.attention_plan`).
* ``compile``: ``torch.compile`` of the forward. Shapes start static and turn dynamic at
  the second prompt length seen (dynamo's automatic dynamic shapes), so a sweep's prompts
  of many lengths cost two compilations per row count (guided and unguided steps), not
  one per length.
* ``cuda_graphs``: compile in "reduce-overhead" mode, which captures CUDA graphs of the
  fixed-shape step and replays them, removing per-kernel launch cost (CUDA only).

Compiled forwards must not mutate their inputs, so they run with context buffers
without self slots (see :class:`echo_tts.model.ContextKV`); the eager forward writes the
self keys in place instead. Outputs agree with the eager, masked path to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from echo_tts.model import AttentionPlan, ContextKV, EchoDiT, Modulation

AttentionLayout = Literal["sliced", "masked"]
ATTENTION_LAYOUTS: tuple[str, ...] = ("sliced", "masked")


class DiTForward:
    """The model call of the Euler loop, eager or compiled."""

    def __init__(self, model: EchoDiT, *, compile: bool = False, cuda_graphs: bool = False,
                 attention: AttentionLayout = "sliced") -> None:
        if cuda_graphs and model.device.type != "cuda":
            raise ValueError("cuda_graphs needs the model on a CUDA device; turn it off on CPU")
        if attention not in ATTENTION_LAYOUTS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_LAYOUTS)} "
                             f"(got {attention!r})")
        self.model = model
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        self.attention = attention
        self.self_slots = not (compile or cuda_graphs)
        self._fn: Callable[..., Any] = model
        if not self.self_slots:
            mode = "reduce-overhead" if cuda_graphs else "default"
            # dynamic=None: automatic dynamic shapes (see the module docstring).
            self._fn = torch.compile(model, mode=mode, dynamic=None)

    @property
    def sliced_attention(self) -> bool:
        return self.attention == "sliced"

    def __call__(self, x: Tensor, modulation: Modulation, context: ContextKV,
                 plan: AttentionPlan, start_pos: int = 0) -> Tensor:
        out: Tensor = self._fn(x, modulation, context, plan, start_pos)
        if self.cuda_graphs:
            # Graph outputs live in memory the next replay overwrites: keep a copy.
            out = out.clone()
        return out

    @property
    def label(self) -> str:
        """e.g. ``eager``, ``compile``, ``cuda_graphs-masked`` (file names, JSON)."""
        mode = "cuda_graphs" if self.cuda_graphs else "compile" if self.compile else "eager"
        return mode if self.sliced_attention else f"{mode}-masked"
