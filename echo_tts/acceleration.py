"""Speed options for the DiT forward used inside the sampling loop.

* ``compile``: ``torch.compile`` of the forward (static shapes: one graph per row count,
  i.e. one for guided and one for unguided steps).
* ``cuda_graphs``: compile in "reduce-overhead" mode, which captures CUDA graphs of the
  fixed-shape step and replays them, removing per-kernel launch cost (CUDA only).

Both need a forward that does not mutate its inputs, so they run with context buffers
without self slots (see :class:`echo_tts.model.ContextKV`); the eager forward writes the
self keys in place instead. Outputs agree with the eager path to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from echo_tts.model import ContextKV, EchoDiT, Modulation


class DiTForward:
    """The model call of the Euler loop, eager or compiled."""

    def __init__(self, model: EchoDiT, *, compile: bool = False, cuda_graphs: bool = False) -> None:
        if cuda_graphs and model.device.type != "cuda":
            raise ValueError("cuda_graphs needs the model on a CUDA device; turn it off on CPU")
        self.model = model
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        self.self_slots = not (compile or cuda_graphs)
        self._fn: Callable[..., Any] = model
        if not self.self_slots:
            mode = "reduce-overhead" if cuda_graphs else "default"
            self._fn = torch.compile(model, mode=mode, dynamic=False)

    def __call__(self, x: Tensor, modulation: Modulation, context: ContextKV, key_mask: Tensor,
                 start_pos: int = 0) -> Tensor:
        out: Tensor = self._fn(x, modulation, context, key_mask, start_pos)
        if self.cuda_graphs:
            # Graph outputs live in memory the next replay overwrites: keep a copy.
            out = out.clone()
        return out

    @property
    def label(self) -> str:
        return "cuda_graphs" if self.cuda_graphs else "compile" if self.compile else "eager"
