"""Text (+ optional speaker audio) -> waveform, with device-synchronised stage timings.

Stages (seconds): ``text_encode`` (tokenise + text encoder), ``speaker_encode`` (codec
encode of the reference + speaker encoder; 0 when served from the cache), ``sampling``
(noise + Euler loop), ``decode`` (codec decode + crop at the flattening point), and
``total`` around all of them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from echo_tts.acceleration import AttentionLayout, DiTForward
from echo_tts.audio import load_speaker_audio, speaker_latents
from echo_tts.autoencoder import DEFAULT_CODEC_REPO, Codec, find_flattening_point, load_codec
from echo_tts.blockwise import sample_blockwise
from echo_tts.model import EchoDiT
from echo_tts.sampling import (
    Conditioning,
    SamplerConfig,
    encode_speaker_condition,
    encode_text_condition,
    sample_conditioned,
)
from echo_tts.text import chunk_bytes_for, encode_text, split_text
from echo_tts.timing import StageTimer
from echo_tts.weights import DEFAULT_MODEL_REPO, RANDOM_PREFIX, load_model

STAGES = ("text_encode", "speaker_encode", "sampling", "decode", "total")

SpeakerInput = str | os.PathLike[str] | Tensor | None


@dataclass
class SynthesisResult:
    """One generated utterance.

    ``audio`` [1, T] float32 at ``sample_rate``, cut where the latents flatten to padding;
    ``latents`` [S, 80] are the full sampled sequence. ``audio_seconds`` is the cropped
    speech, ``full_seconds`` the whole sequence. ``timings`` maps stage -> seconds.
    """

    audio: Tensor
    sample_rate: int
    latents: Tensor
    normalized_text: str
    audio_seconds: float
    full_seconds: float
    timings: dict[str, float]
    nfe: int
    speaker_cached: bool = False
    chunks: list[SynthesisResult] = field(default_factory=list)
    first_block_seconds: float | None = None
    block_seconds: list[float] = field(default_factory=list)  # sampling of each block


@dataclass
class _Speaker:
    latent: Tensor
    mask: Tensor


def spoken_text(ids: Tensor, mask: Tensor) -> str:
    """The normalised text a row of token ids [L] (with mask [L]) carries, BOS dropped.

    A truncated prompt may end inside a multi-byte character; that partial character
    is dropped.
    """
    return bytes(ids[mask][1:].tolist()).decode("utf-8", "ignore")


class EchoPipeline:
    """Echo-TTS inference: model + codec, with a cache of encoded speaker references."""

    def __init__(self, model: EchoDiT, codec: Codec, *, compile: bool = False,
                 cuda_graphs: bool = False, attention: AttentionLayout = "sliced") -> None:
        """``compile``/``cuda_graphs``/``attention``: speed options of the sampling loop's
        model call (see :mod:`echo_tts.acceleration`)."""
        self.model = model
        self.codec = codec
        self.forward = DiTForward(model, compile=compile, cuda_graphs=cuda_graphs,
                                  attention=attention)
        self._speakers: dict[str, _Speaker] = {}

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] = DEFAULT_MODEL_REPO,
        codec: str | os.PathLike[str] = DEFAULT_CODEC_REPO,
        pca: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        codec_dtype: torch.dtype | None = None,
        keep_blockwise: bool = False,
        compile: bool = False,
        cuda_graphs: bool = False,
        attention: AttentionLayout = "sliced",
    ) -> EchoPipeline:
        """Load both halves. ``pca`` defaults to the model source (where the official PCA
        state lives); for ``random:`` models it follows the codec's random preset."""
        if pca is None:
            pca = codec if str(model).startswith(RANDOM_PREFIX) else model
        dit = load_model(model, device=device, dtype=dtype, keep_blockwise=keep_blockwise)
        return cls(dit, load_codec(codec, pca, device=device, dtype=codec_dtype), compile=compile,
                   cuda_graphs=cuda_graphs, attention=attention)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    def seconds_of(self, latents: int) -> float:
        return latents * self.codec.samples_per_latent / self.codec.sample_rate

    # ---- speaker reference

    def _speaker(self, speaker: SpeakerInput) -> tuple[_Speaker | None, bool]:
        """The encoded reference (latent [1, L, 80], mask [1, L]) and whether it was cached."""
        if speaker is None:
            return None, False
        if isinstance(speaker, Tensor):
            audio = speaker.reshape(1, -1).float()
            key = hashlib.sha256(audio.cpu().numpy().tobytes()).hexdigest()
        else:
            path = Path(speaker)
            stat = path.stat() if path.exists() else None
            key = f"{path.resolve()}:{stat.st_mtime_ns if stat else 0}:{stat.st_size if stat else 0}"
            audio = None
        if key in self._speakers:
            return self._speakers[key], True
        if audio is None:
            audio = load_speaker_audio(Path(str(speaker)))
        latent, mask = speaker_latents(self.codec, audio.to(self.codec.device))
        self._speakers[key] = _Speaker(latent, mask)
        return self._speakers[key], False

    def prepare_speaker(self, speaker: SpeakerInput) -> int:
        """Encode ``speaker`` into the cache now, so syntheses with it find it cached;
        returns its number of speaker latents (0 for no speaker), the length it adds
        to the speaker encoder's and the DiT's speaker sequence."""
        ref, _ = self._speaker(speaker)
        return 0 if ref is None else int(ref.latent.shape[1])

    def chunk_texts(self, text: str, sampler: SamplerConfig | None = None,
                    max_bytes: int | None = None) -> list[str]:
        """The chunks :meth:`synthesize_long` splits ``text`` into for ``sampler``."""
        sampler = sampler or SamplerConfig()
        limit = max_bytes or chunk_bytes_for(sampler.sequence_length, self.codec.samples_per_latent,
                                             self.codec.sample_rate)
        return split_text(text, limit)

    # ---- synthesis

    @torch.inference_mode()
    def synthesize(self, text: str, speaker_audio: SpeakerInput = None,
                   sampler: SamplerConfig | None = None, seed: int = 0, *,
                   truncate: bool = False) -> SynthesisResult:
        """Generate one utterance of at most ``sampler.sequence_length`` latents.

        Text over the 768-byte limit raises TextTooLongError unless ``truncate`` is set
        (then ``normalized_text`` is the part that was spoken).
        """
        return self._generate([text], speaker_audio, sampler or SamplerConfig(), [seed],
                              truncate)[0]

    @torch.inference_mode()
    def synthesize_long(self, text: str, speaker_audio: SpeakerInput = None,
                        sampler: SamplerConfig | None = None, seed: int = 0, *,
                        batch_size: int = 1, max_bytes: int | None = None,
                        gap_seconds: float = 0.1) -> SynthesisResult:
        """Split ``text`` into chunks that fit the sequence, generate them and join them.

        Chunk i uses seed + i, so batching chunks (``batch_size`` per sampler call) gives
        the same audio as generating them one by one. Chunks are joined with
        ``gap_seconds`` of silence. The result's timings are the sums over chunks and
        ``chunks`` holds each chunk's own result.
        """
        sampler = sampler or SamplerConfig()
        pieces = self.chunk_texts(text, sampler, max_bytes)
        if not pieces:
            raise ValueError("the text is empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        chunks: list[SynthesisResult] = []
        for start in range(0, len(pieces), batch_size):
            group = pieces[start : start + batch_size]
            seeds = [seed + start + i for i in range(len(group))]
            chunks.extend(self._generate(group, speaker_audio, sampler, seeds))
        return self._join(chunks, gap_seconds)

    def _generate(self, texts: Sequence[str], speaker: SpeakerInput, sampler: SamplerConfig,
                  seeds: list[int], truncate: bool = False) -> list[SynthesisResult]:
        """Generate a batch of prompts in one sampler call (timings are per call)."""
        timer = StageTimer(self.device)
        batch = len(texts)
        with timer.stage("total"):
            cond, ids, mask, cached = self._condition(texts, speaker, timer, truncate)
            with timer.stage("sampling"):
                latents = sample_conditioned(self.model, cond, sampler, seeds, self.forward)
            with timer.stage("decode"):
                audio = self.codec.decode(latents)
                ends = [find_flattening_point(latents[i]) for i in range(batch)]
        timings = _stage_seconds(timer)
        full = self.seconds_of(sampler.sequence_length)
        return [
            SynthesisResult(
                audio=audio[i, :, : ends[i] * self.codec.samples_per_latent].float().cpu(),
                sample_rate=self.sample_rate,
                latents=latents[i].cpu(),
                normalized_text=spoken_text(ids[i], mask[i]),
                audio_seconds=self.seconds_of(ends[i]),
                full_seconds=full,
                timings=timings,
                nfe=sampler.nfe() * batch,
                speaker_cached=cached,
            )
            for i in range(batch)
        ]

    def _condition(self, texts: Sequence[str], speaker: SpeakerInput, timer: StageTimer,
                   truncate: bool = False) -> tuple[Conditioning, Tensor, Tensor, bool]:
        """Encode a batch's texts and its (shared) speaker under the timer's text_encode and
        speaker_encode stages: (conditioning, text ids, text mask, speaker was cached)."""
        batch = len(texts)
        with timer.stage("text_encode"):
            ids, mask = encode_text(texts, truncate=truncate)
            text_state, text_mask = encode_text_condition(self.model, ids, mask)
        with timer.stage("speaker_encode"):
            ref, cached = self._speaker(speaker)
            spk_state, spk_tokens = encode_speaker_condition(
                self.model,
                None if ref is None else ref.latent.expand(batch, -1, -1),
                None if ref is None else ref.mask.expand(batch, -1),
                batch,
            )
        return Conditioning(text_state, text_mask, spk_state, spk_tokens), ids, mask, cached

    def _join(self, chunks: list[SynthesisResult], gap_seconds: float) -> SynthesisResult:
        gap = torch.zeros(1, round(gap_seconds * self.sample_rate))
        parts: list[Tensor] = []
        for i, chunk in enumerate(chunks):
            parts.extend([gap, chunk.audio] if i else [chunk.audio])
        # Chunks generated in one call share that call's timings: count each call once.
        calls = {id(c.timings): c.timings for c in chunks}.values()
        timings = {stage: sum(t[stage] for t in calls) for stage in STAGES}
        return SynthesisResult(
            audio=torch.cat(parts, dim=1),
            sample_rate=self.sample_rate,
            latents=torch.cat([c.latents for c in chunks]),
            normalized_text=" ".join(c.normalized_text for c in chunks),
            audio_seconds=sum(c.audio_seconds for c in chunks) + gap_seconds * (len(chunks) - 1),
            full_seconds=sum(c.full_seconds for c in chunks),
            timings=timings,
            nfe=sum({id(c.timings): c.nfe for c in chunks}.values()),
            speaker_cached=all(c.speaker_cached for c in chunks),
            chunks=chunks,
        )

    @torch.inference_mode()
    def synthesize_blockwise(self, text: str, block_sizes: Sequence[int],
                             speaker_audio: SpeakerInput = None,
                             sampler: SamplerConfig | None = None, seed: int = 0,
                             prefix_audio: Tensor | None = None,
                             block_samplers: Sequence[SamplerConfig] | None = None
                             ) -> SynthesisResult:
        """Generate in blocks, each conditioned on the latents before it (experimental).

        ``block_sizes`` (latents) sum to the generated length; ``prefix_audio`` [1, T]
        (44.1 kHz) is continued rather than regenerated; ``block_samplers`` (one per
        block) give each block its own steps and CFG scales. ``first_block_seconds`` is
        the time to the first decodable block (TTFB): its sampling and decode, measured
        from the start of the block loop; ``block_seconds`` each block's sampling.
        """
        sampler = sampler or SamplerConfig()
        timer = StageTimer(self.device)
        with timer.stage("total"):
            cond, ids, mask, cached = self._condition([text], speaker_audio, timer)
            prefix = None
            if prefix_audio is not None:
                with timer.stage("speaker_encode"):  # the prefix is reference audio too
                    prefix = self.codec.encode(prefix_audio.reshape(1, 1, -1).to(self.codec.device))
            first_block: list[float] = []

            def on_block(index: int, latents: Tensor) -> None:
                if index == 0:
                    with timer.stage("first_block_decode"):
                        self.codec.decode(latents)
                    first_block.append(timer.seconds["first_block_sampling"]
                                       + timer.seconds["first_block_decode"])

            with timer.stage("sampling"):
                latents = sample_blockwise(self.model, cond, sampler, block_sizes, seed,
                                           prefix=prefix, on_block=on_block,
                                           timer=timer, forward=self.forward,
                                           block_configs=block_samplers)[0]
            with timer.stage("decode"):
                audio = self.codec.decode(latents[None])
                end = find_flattening_point(latents)
        timings = _stage_seconds(timer)
        return SynthesisResult(
            audio=audio[0, :, : end * self.codec.samples_per_latent].float().cpu(),
            sample_rate=self.sample_rate,
            latents=latents.cpu(),
            normalized_text=spoken_text(ids[0], mask[0]),
            audio_seconds=self.seconds_of(end),
            full_seconds=self.seconds_of(latents.shape[0]),
            timings=timings,
            nfe=(sum(s.nfe() for s in block_samplers) if block_samplers is not None
                 else sampler.nfe() * len(block_sizes)),
            speaker_cached=cached,
            first_block_seconds=first_block[0] if first_block else None,
            block_seconds=[timer.seconds[f"block_sampling_{i}"] for i in range(len(block_sizes))],
        )


def _stage_seconds(timer: StageTimer) -> dict[str, float]:
    """Seconds of every pipeline stage (0 for a stage that did not run)."""
    return {stage: timer.seconds.get(stage, 0.0) for stage in STAGES}
