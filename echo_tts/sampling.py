"""The Euler sampler and its classifier-free-guidance modes, as small pure functions.

The schedule is t = linspace(1, 0, steps + 1) * 0.999 in float32. Guidance is active on
steps whose t lies in [cfg_min_t, cfg_max_t]; there the model is called on several rows
per prompt (see :data:`GUIDANCE_ROWS`) and :func:`combine_guidance` merges them; other
steps run the conditional row alone.

Row kinds: ``cond`` (text + speaker), ``no_text`` (text masked out), ``no_speaker``
(speaker masked out), ``no_both``. A dropped signal keeps its cached keys/values; its
rows attend to a key span that leaves it out, or (``attention="masked"``) see it masked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
from torch import Tensor

from echo_tts.acceleration import DiTForward
from echo_tts.model import AttentionPlan, EchoDiT

CfgMode = Literal["independent", "alternating", "joint", "none"]
CFG_MODES: tuple[str, ...] = ("independent", "alternating", "joint", "none")
MAX_SEQUENCE_LENGTH = 640
SCHEDULE_SCALE = 0.999  # keeps t < 1 so the score rescale never divides by zero

RowKind = Literal["cond", "no_text", "no_speaker", "no_both"]


@dataclass(frozen=True)
class SamplerConfig:
    """Sampler settings; defaults are production's (40 steps, independent CFG, 640 latents).

    ``sequence_length`` is in latents (one latent = 2048 samples at 44.1 kHz, 640 ~ 29.7 s).
    ``truncation_factor`` scales the initial noise; ``rescale_k``/``rescale_sigma`` turn on
    temporal score rescaling; ``speaker_kv_scale`` multiplies the speaker keys/values of the
    first ``speaker_kv_max_layers`` layers (all when None) until t drops below
    ``speaker_kv_min_t`` (never, when None).
    """

    num_steps: int = 40
    cfg_mode: CfgMode = "independent"
    cfg_scale_text: float = 3.0
    cfg_scale_speaker: float = 8.0
    cfg_min_t: float = 0.5
    cfg_max_t: float = 1.0
    sequence_length: int = MAX_SEQUENCE_LENGTH
    truncation_factor: float | None = None
    rescale_k: float | None = None
    rescale_sigma: float | None = None
    speaker_kv_scale: float | None = None
    speaker_kv_max_layers: int | None = None
    speaker_kv_min_t: float | None = None

    def __post_init__(self) -> None:
        problems = list(_config_problems(self))
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def schedule(self) -> Tensor:
        """Timesteps t_0 = 0.999 > ... > t_N = 0 (float32, CPU), length num_steps + 1."""
        return torch.linspace(1.0, 0.0, self.num_steps + 1) * SCHEDULE_SCALE

    def guided_steps(self) -> list[bool]:
        """For each step, whether classifier-free guidance runs on it."""
        t = self.schedule()[:-1]
        return ((t >= self.cfg_min_t) & (t <= self.cfg_max_t)).tolist()

    def speaker_kv_restore_step(self) -> int | None:
        """The step after which scaled speaker keys/values return to their trained scale
        (the one that crosses speaker_kv_min_t), or None when they stay scaled."""
        if self.speaker_kv_scale is None or self.speaker_kv_min_t is None:
            return None
        t = self.schedule()
        crossing = ((t[:-1] >= self.speaker_kv_min_t) & (self.speaker_kv_min_t > t[1:])).nonzero()
        return int(crossing[0]) if len(crossing) else None

    def rows_per_step(self) -> list[int]:
        """Forward rows per prompt on each step."""
        guided_rows = len(GUIDANCE_ROWS[self.cfg_mode])
        return [guided_rows if g else 1 for g in self.guided_steps()]

    def nfe(self) -> int:
        """Forward rows (function evaluations) one prompt costs over the whole schedule."""
        return sum(self.rows_per_step())


def _config_problems(c: SamplerConfig) -> list[str]:
    out = []
    if isinstance(c.num_steps, bool) or not isinstance(c.num_steps, int) or c.num_steps < 1:
        out.append(f"num_steps must be an integer >= 1 (got {c.num_steps!r})")
    if c.cfg_mode not in CFG_MODES:
        out.append(f"cfg_mode must be one of {', '.join(CFG_MODES)} (got {c.cfg_mode!r})")
    if (isinstance(c.sequence_length, bool) or not isinstance(c.sequence_length, int)
            or not 1 <= c.sequence_length <= MAX_SEQUENCE_LENGTH):
        out.append(f"sequence_length must be an integer in [1, {MAX_SEQUENCE_LENGTH}] "
                   f"(got {c.sequence_length!r})")
    for name in ("cfg_scale_text", "cfg_scale_speaker"):
        value = getattr(c, name)
        if not _is_finite(value):
            out.append(f"{name} must be a finite number (got {value!r})")
    for name in ("cfg_min_t", "cfg_max_t", "speaker_kv_min_t"):
        value = getattr(c, name)
        if value is None and name == "speaker_kv_min_t":
            continue
        if not _is_finite(value) or not 0.0 <= value <= 1.0:
            out.append(f"{name} must be in [0, 1] (got {value!r})")
    if _is_finite(c.cfg_min_t) and _is_finite(c.cfg_max_t) and c.cfg_min_t > c.cfg_max_t:
        out.append(f"cfg_min_t {c.cfg_min_t} is above cfg_max_t {c.cfg_max_t}")
    for name in ("truncation_factor", "rescale_k", "rescale_sigma", "speaker_kv_scale"):
        value = getattr(c, name)
        if value is not None and (not _is_finite(value) or value <= 0):
            out.append(f"{name} must be a positive finite number or unset (got {value!r})")
    if (c.rescale_k is None) != (c.rescale_sigma is None):
        out.append("rescale_k and rescale_sigma must be set together")
    layers = c.speaker_kv_max_layers
    if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int) or layers < 1):
        out.append(f"speaker_kv_max_layers must be an integer >= 1 or unset (got {layers!r})")
    return out


def _is_finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------- guidance

# Rows per guided step. "alternating" drops text on even guided steps and the speaker on
# odd ones; its second row is chosen by :func:`guidance_rows`.
GUIDANCE_ROWS: dict[str, tuple[RowKind, ...]] = {
    "independent": ("cond", "no_text", "no_speaker"),
    "joint": ("cond", "no_both"),
    "alternating": ("cond", "no_text"),
    "none": ("cond",),
}


def guidance_rows(mode: str, guided_index: int | None) -> tuple[RowKind, ...]:
    """Row kinds for one step; ``guided_index`` counts guided steps (None: unguided step)."""
    if guided_index is None:
        return ("cond",)
    if mode == "alternating":
        return ("cond", "no_text") if guided_index % 2 == 0 else ("cond", "no_speaker")
    return GUIDANCE_ROWS[mode]


def combine_guidance(velocities: dict[RowKind, Tensor], config: SamplerConfig) -> Tensor:
    """Merge the rows' velocity predictions into one guided velocity."""
    v_c = velocities["cond"]
    s_text, s_spk = config.cfg_scale_text, config.cfg_scale_speaker
    if len(velocities) == 1:
        return v_c
    if config.cfg_mode == "independent":
        return v_c + s_text * (v_c - velocities["no_text"]) + s_spk * (v_c - velocities["no_speaker"])
    if config.cfg_mode == "joint":
        return v_c + (s_text + s_spk) * (v_c - velocities["no_both"])
    if "no_text" in velocities:  # alternating, even guided step
        return v_c + s_text * (v_c - velocities["no_text"])
    return v_c + s_spk * (v_c - velocities["no_speaker"])


def temporal_score_rescale(v: Tensor, x: Tensor, t: Tensor, k: float, sigma: float) -> Tensor:
    """Rescale the predicted velocity by the SNR-dependent ratio (sigma: data scale)."""
    snr = (1 - t) ** 2 / t**2
    ratio = (snr * sigma**2 + 1) / (snr * sigma**2 / k + 1)
    return (ratio * ((1 - t) * v + x) - x) / (1 - t)


def key_mask(kinds: Sequence[RowKind], segments: dict[str, slice], text_mask: Tensor,
             speaker_mask: Tensor, prefix_mask: Tensor | None) -> Tensor:
    """Boolean key mask [rows, 1, 1, K] for rows stacked as kinds x batch, on the key axis
    of :class:`echo_tts.model.ContextKV` (text keys stored in reverse)."""
    batch = text_mask.shape[0]
    total = max(s.stop for s in segments.values())
    mask = torch.zeros(len(kinds) * batch, total, dtype=torch.bool, device=text_mask.device)
    for i, kind in enumerate(kinds):
        rows = slice(i * batch, (i + 1) * batch)
        mask[rows, segments["self"]] = True
        if prefix_mask is not None:
            mask[rows, segments["latent"]] = prefix_mask
        if kind in ("cond", "no_speaker"):
            mask[rows, segments["text"]] = text_mask.flip(-1)
        if kind in ("cond", "no_text"):
            mask[rows, segments["speaker"]] = speaker_mask
    return mask[:, None, None, :]


def key_spans(kinds: Sequence[RowKind], segments: dict[str, slice], text_mask: Tensor,
              speaker_mask: Tensor, prefix_mask: Tensor | None
              ) -> tuple[tuple[int, int, int, int], ...] | None:
    """The same visibility as :func:`key_mask` as (row_start, row_stop, key_start, key_stop)
    groups, or None when a mask is not "valid keys, then padding" (only a mask can say
    that). Adjacent rows with the same span share a group."""
    text_counts, speaker_counts = _valid_lengths(text_mask), _valid_lengths(speaker_mask)
    if text_counts is None or speaker_counts is None:
        return None
    if prefix_mask is not None and not bool(prefix_mask.all()):
        return None
    # Text is stored reversed, so its valid keys end where the self keys begin.
    core = (segments["self"].start, segments["speaker"].start)
    batch = len(text_counts)
    spans: list[tuple[int, int, int, int]] = []
    for i, kind in enumerate(kinds):
        for item in range(batch):
            lo = core[0] - text_counts[item] if kind in ("cond", "no_speaker") else core[0]
            hi = core[1] + speaker_counts[item] if kind in ("cond", "no_text") else core[1]
            row = i * batch + item
            if spans and spans[-1][1] == row and spans[-1][2:] == (lo, hi):
                spans[-1] = (spans[-1][0], row + 1, lo, hi)
            else:
                spans.append((row, row + 1, lo, hi))
    return tuple(spans)


def _valid_lengths(mask: Tensor) -> list[int] | None:
    """Per-row count of True entries when each row of mask [B, L] is True-then-False."""
    counts = mask.sum(dim=1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    if not torch.equal(mask.bool(), positions[None] < counts[:, None]):
        return None
    return [int(n) for n in counts.tolist()]


def attention_plan(kinds: Sequence[RowKind], segments: dict[str, slice], cond: Conditioning,
                   prefix_mask: Tensor | None, sliced: bool) -> AttentionPlan:
    """Spans when ``sliced`` and the masks allow them, else a key mask."""
    masks = (cond.text_mask, cond.speaker_token_mask, prefix_mask)
    spans = key_spans(kinds, segments, *masks) if sliced else None
    if spans is not None:
        return AttentionPlan(spans=spans)
    return AttentionPlan(mask=key_mask(kinds, segments, *masks))


# --------------------------------------------------------------------------- the loop


def initial_noise(batch: int, seq_len: int, latent_size: int, seed: int | Sequence[int],
                  device: torch.device) -> Tensor:
    """Float32 Gaussian noise [B, S, latent_size].

    One int seed draws the whole batch from one generator (the reference's behaviour);
    a sequence of B seeds draws each row from its own generator, so item i of a batched
    call equals an unbatched call with seed[i].
    """
    if isinstance(seed, int):
        gen = torch.Generator(device=device).manual_seed(seed)
        return torch.randn((batch, seq_len, latent_size), generator=gen, device=device)
    if len(seed) != batch:
        raise ValueError(f"got {len(seed)} seeds for a batch of {batch}")
    return torch.cat([initial_noise(1, seq_len, latent_size, s, device) for s in seed])


@dataclass
class Conditioning:
    """Encoded text and speaker for a batch of B prompts (computed once per sampler call).

    text_state [B, T, Wt] with text_mask [B, T]; speaker_state [B, L/patch, Ws] with
    speaker_token_mask [B, L/patch] (one entry per speaker patch).
    """

    text_state: Tensor
    text_mask: Tensor
    speaker_state: Tensor
    speaker_token_mask: Tensor

    @property
    def batch(self) -> int:
        return self.text_state.shape[0]


def encode_text_condition(model: EchoDiT, text_ids: Tensor, text_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Text state and mask on the model's device."""
    text_mask = text_mask.to(model.device)
    return model.encode_text(text_ids.to(model.device), text_mask), text_mask


def encode_speaker_condition(model: EchoDiT, speaker_latent: Tensor | None,
                             speaker_mask: Tensor | None, batch: int) -> tuple[Tensor, Tensor]:
    """Speaker state and per-patch mask; no speaker = zero latents with an all-False mask."""
    device, patch = model.device, model.config.speaker_patch_size
    if speaker_latent is None:
        speaker_latent = torch.zeros(batch, patch, model.config.latent_size, device=device)
        speaker_mask = torch.zeros(batch, patch, dtype=torch.bool, device=device)
    elif speaker_mask is None:
        raise ValueError("speaker_mask is required with speaker_latent")
    if speaker_latent.shape[1] % patch:
        raise ValueError(f"speaker latents ({speaker_latent.shape[1]}) must be a multiple of the "
                         f"patch size {patch}")
    assert speaker_mask is not None
    state = model.encode_speaker(speaker_latent.to(device))
    return state, speaker_mask.to(device)[:, ::patch]


@torch.inference_mode()
def sample_latents(
    model: EchoDiT,
    *,
    text_ids: Tensor,
    text_mask: Tensor,
    speaker_latent: Tensor | None = None,
    speaker_mask: Tensor | None = None,
    config: SamplerConfig | None = None,
    seed: int | Sequence[int] = 0,
    forward: DiTForward | None = None,
) -> Tensor:
    """Sample latents [B, sequence_length, 80] (float32) by Euler integration from t=0.999 to 0.

    text_ids/text_mask [B, T] come from :func:`echo_tts.encode_text`. speaker_latent
    [B, L, 80] with speaker_mask [B, L] (L a multiple of the patch size); without a
    speaker, zero latents with an all-False mask are used, as the reference does.
    See :func:`initial_noise` for how ``seed`` draws the noise of a batch; ``forward``
    is the loop's model call (eager by default; see :mod:`echo_tts.acceleration`).
    """
    text_state, text_mask = encode_text_condition(model, text_ids, text_mask)
    speaker_state, speaker_tokens = encode_speaker_condition(
        model, speaker_latent, speaker_mask, text_ids.shape[0])
    cond = Conditioning(text_state, text_mask, speaker_state, speaker_tokens)
    return sample_conditioned(model, cond, config or SamplerConfig(), seed, forward)


@torch.inference_mode()
def sample_conditioned(model: EchoDiT, cond: Conditioning, config: SamplerConfig,
                       seed: int | Sequence[int], forward: DiTForward | None = None) -> Tensor:
    """The sampler after conditioning: noise, then the Euler loop (``forward``: the
    eager model call by default, or a compiled/graphed one)."""
    x = sampler_noise(config, cond.batch, config.sequence_length, model.config.latent_size,
                      seed, model.device)
    return euler_loop(model, x, config, cond, forward=forward)


def sampler_noise(config: SamplerConfig, batch: int, length: int, latent_size: int,
                  seed: int | Sequence[int], device: torch.device) -> Tensor:
    """The starting noise of a sampler call: :func:`initial_noise` scaled by the config's
    truncation factor (when set)."""
    x = initial_noise(batch, length, latent_size, seed, device)
    return x if config.truncation_factor is None else x * config.truncation_factor


def euler_loop(model: EchoDiT, x: Tensor, config: SamplerConfig, cond: Conditioning,
               prefix_state: Tensor | None = None, prefix_mask: Tensor | None = None,
               start_pos: int = 0, forward: DiTForward | None = None) -> Tensor:
    """Integrate x [B, S, 80] from t=0.999 to 0 under the given conditioning.

    ``prefix_state``/``prefix_mask``/``start_pos`` feed a latent prefix for blockwise
    generation (the block's positions start at ``start_pos``).
    """
    batch, seq_len = x.shape[:2]
    schedule = config.schedule().to(x.device)
    guided = config.guided_steps()
    max_rows = max(config.rows_per_step()) * batch
    forward = forward or DiTForward(model)
    context = model.context_kv(max_rows, seq_len, cond.text_state, cond.speaker_state,
                               prefix_state, self_slots=forward.self_slots)
    modulation = model.modulation(schedule[:-1])
    plans: dict[tuple[RowKind, ...], AttentionPlan] = {}

    # Decided on the CPU schedule up front: comparing device tensors in the loop would
    # synchronise with the device on every step.
    restore_step = config.speaker_kv_restore_step()
    if config.speaker_kv_scale is not None:
        context.scale_segment("speaker", config.speaker_kv_scale, config.speaker_kv_max_layers)

    guided_index = 0
    for i in range(config.num_steps):
        t, t_next = schedule[i], schedule[i + 1]
        kinds = guidance_rows(config.cfg_mode, guided_index if guided[i] else None)
        guided_index += guided[i]
        if kinds not in plans:
            plans[kinds] = attention_plan(kinds, context.segments, cond, prefix_mask,
                                          forward.sliced_attention)
        rows = len(kinds) * batch
        out = forward(x.repeat(len(kinds), 1, 1), modulation.at(i), context.head(rows),
                      plans[kinds], start_pos)
        v = combine_guidance(dict(zip(kinds, out.chunk(len(kinds)), strict=True)), config)
        if config.rescale_k is not None and config.rescale_sigma is not None:
            v = temporal_score_rescale(v, x, t, config.rescale_k, config.rescale_sigma)
        if i == restore_step:
            assert config.speaker_kv_scale is not None
            context.scale_segment("speaker", 1.0 / config.speaker_kv_scale,
                                  config.speaker_kv_max_layers)
        x = x + v * (t_next - t)
    return x
