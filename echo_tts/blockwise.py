"""Blockwise generation (experimental upstream): sample a sequence in consecutive blocks.

Each block is a full Euler integration over its own positions. Everything before it
(a given latent prefix, then earlier blocks) goes through the blockwise latent encoder
and is attended to as a third context segment, with RoPE at the prefix tokens' positions.
The reference masks prefix tokens by ``token_index * patch < start_pos``; the prefix is
zero-padded to whole patches.

Options: ``block_sizes`` (latents per block, summing to the generated length) and the
sampler's ``num_steps``, which every block runs in full, so a sequence of k blocks costs
k times the NFE of one block of the same steps (on shorter rows). ``block_configs`` gives
each block its own sampler settings instead (steps and CFG scales: a public streaming
server runs blocks [32, 128, 480] with steps [8, 15, 20], so the first block is cheap).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from echo_tts.acceleration import DiTForward
from echo_tts.model import EchoDiT
from echo_tts.sampling import (
    MAX_SEQUENCE_LENGTH,
    Conditioning,
    SamplerConfig,
    euler_loop,
    sampler_noise,
)
from echo_tts.timing import StageTimer


def validate_blocks(block_sizes: Sequence[int], prefix_len: int) -> None:
    if not block_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1
                              for b in block_sizes):
        raise ValueError(f"block_sizes must be positive integers (got {list(block_sizes)})")
    total = prefix_len + sum(block_sizes)
    if total > MAX_SEQUENCE_LENGTH:
        raise ValueError(f"prefix ({prefix_len}) + blocks ({sum(block_sizes)}) = {total} latents "
                         f"exceeds {MAX_SEQUENCE_LENGTH}; use fewer or smaller blocks")


@torch.inference_mode()
def sample_blockwise(
    model: EchoDiT,
    cond: Conditioning,
    config: SamplerConfig,
    block_sizes: Sequence[int],
    seed: int,
    *,
    prefix: Tensor | None = None,
    on_block: Callable[[int, Tensor], None] | None = None,
    timer: StageTimer | None = None,
    forward: DiTForward | None = None,
    block_configs: Sequence[SamplerConfig] | None = None,
) -> Tensor:
    """Latents [B, P + sum(block_sizes), 80]: the prefix [B, P, 80] (kept as given) followed
    by the generated blocks. ``on_block(i, latents_so_far)`` runs after each block; with a
    ``timer`` the first block's sampling is recorded as stage ``first_block_sampling`` and
    block i's as ``block_sampling_<i>``; ``forward`` is each block's model call (eager by
    default); ``block_configs`` (one per block) replace ``config`` block by block (the
    initial noise still follows ``config``)."""
    batch = cond.batch
    prefix_len = 0 if prefix is None else prefix.shape[1]
    validate_blocks(block_sizes, prefix_len)
    if block_configs is not None and len(block_configs) != len(block_sizes):
        raise ValueError(f"block_configs has {len(block_configs)} entries for "
                         f"{len(block_sizes)} blocks; give one sampler config per block")
    # Checked before any block runs: every block after the first attends to a prefix.
    if (prefix_len or len(block_sizes) > 1) and not model.has_blockwise:
        raise RuntimeError("continuing a prefix, or any block after the first, needs the "
                           "blockwise modules; load the model with keep_blockwise=True")
    latent_size, patch = model.config.latent_size, model.config.speaker_patch_size
    noise = sampler_noise(config, batch, sum(block_sizes), latent_size, seed, model.device)
    out = (torch.zeros(batch, 0, latent_size, device=model.device) if prefix is None
           else prefix.to(model.device).float())
    offset = 0
    for index, size in enumerate(block_sizes):
        start_pos = out.shape[1]
        prefix_state = prefix_mask = None
        if start_pos:
            tokens = -(-start_pos // patch)
            padded = F.pad(out, (0, 0, 0, tokens * patch - start_pos))
            prefix_state = model.encode_prefix(padded)
            prefix_mask = (torch.arange(tokens, device=model.device) * patch < start_pos)
            prefix_mask = prefix_mask.expand(batch, tokens)
        x = noise[:, offset : offset + size]  # the loop takes its length from x
        block_config = config if block_configs is None else block_configs[index]
        with contextlib.ExitStack() as stages:
            if timer is not None:
                stages.enter_context(timer.stage(f"block_sampling_{index}"))
                if index == 0:
                    stages.enter_context(timer.stage("first_block_sampling"))
            block = euler_loop(model, x, block_config, cond, prefix_state, prefix_mask,
                               start_pos, forward=forward)
        out = torch.cat([out, block], dim=1)
        offset += size
        if on_block is not None:
            on_block(index, out)
    return out
