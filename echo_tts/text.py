"""Byte tokenizer and prompt normalisation (the checkpoint's training conventions)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor

MAX_TEXT_BYTES = 768  # including the BOS byte
BOS = 0

# Applied in this order. Only the right curly quotes are mapped: that is what the model
# was trained with (the left ones pass through unchanged).
_REPLACEMENTS = (
    ("\u2026", "..."),  # ellipsis
    ("\u2019", "'"),  # right single quote
    ("\u201d", '"'),  # right double quote
    ("\n", " "),
    (":", ","),
    (";", ","),
    ("\u2014", ", "),  # em dash
)


class TextTooLongError(ValueError):
    """A prompt does not fit the text encoder; split it or ask for truncation."""


def normalize_prompt(text: str) -> str:
    """Map punctuation the model was not trained on and add a "[S1] " speaker tag when
    the text has none (no leading bracket/parenthesis and no S1/S2 anywhere)."""
    for old, new in _REPLACEMENTS:
        text = text.replace(old, new)
    if not text.startswith(("[", "(")) and "S1" not in text and "S2" not in text:
        text = "[S1] " + text
    return text


def text_bytes(text: str, normalize: bool = True) -> list[int]:
    """BOS followed by the UTF-8 bytes of the (normalised) prompt."""
    return [BOS, *(normalize_prompt(text) if normalize else text).encode("utf-8")]


def encode_text(
    texts: Sequence[str],
    max_length: int | None = None,
    *,
    truncate: bool = False,
    normalize: bool = True,
) -> tuple[Tensor, Tensor]:
    """Token ids [B, L] (int32) and mask [B, L] (bool) for a batch of prompts.

    L is ``max_length`` when given (shorter prompts are padded), else the longest
    prompt. A prompt longer than L (or than 768 bytes with BOS) raises TextTooLongError
    unless ``truncate`` is set.
    """
    if isinstance(texts, str):
        raise TypeError("encode_text takes a sequence of prompts, not a single string")
    if not texts:
        raise ValueError("encode_text needs at least one prompt")
    encoded = [text_bytes(t, normalize) for t in texts]
    limit = min(max_length or MAX_TEXT_BYTES, MAX_TEXT_BYTES)
    for text, ids in zip(texts, encoded, strict=True):
        if len(ids) > limit and not truncate:
            raise TextTooLongError(
                f"prompt of {len(ids)} bytes (with BOS) exceeds the {limit}-byte limit: "
                f"{text[:40]!r}...; split it with echo_tts.split_text or pass truncate=True"
            )
    length = max_length or min(max(len(ids) for ids in encoded), limit)
    ids_out = torch.zeros(len(encoded), length, dtype=torch.int32)
    mask = torch.zeros(len(encoded), length, dtype=torch.bool)
    for row, ids in enumerate(encoded):
        n = min(len(ids), length)
        ids_out[row, :n] = torch.tensor(ids[:n], dtype=torch.int32)
        mask[row, :n] = True
    return ids_out, mask


# Read English speech runs at about 2.5 words (14-16 bytes) per second; a chunk of this
# many bytes per second of audio fills a sequence without running past its end.
BYTES_PER_AUDIO_SECOND = 16.0
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:\u2014])\s+")


def chunk_bytes_for(sequence_length: int, samples_per_latent: int = 2048,
                    sample_rate: int = 44_100) -> int:
    """Bytes of text that fit in ``sequence_length`` latents of speech (at most 768 - 6)."""
    seconds = sequence_length * samples_per_latent / sample_rate
    return min(int(seconds * BYTES_PER_AUDIO_SECOND), MAX_TEXT_BYTES - len("[S1] ") - 1)


def split_text(text: str, max_bytes: int = chunk_bytes_for(640)) -> list[str]:
    """Split text into chunks of at most ``max_bytes`` UTF-8 bytes each.

    Splits at sentence ends first, then at clause punctuation, then between words (a
    single word longer than the limit is cut between characters). Neighbouring pieces
    are packed greedily, so chunks are as long as the limit allows. Whitespace is
    collapsed; an empty text gives no chunks.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1 (got {max_bytes})")
    text = " ".join(text.split())
    pieces = _split_pieces(text, max_bytes, [_SENTENCE_END, _CLAUSE_END, re.compile(r"\s+")])
    chunks: list[str] = []
    for piece in pieces:
        if chunks and _nbytes(chunks[-1] + " " + piece) <= max_bytes:
            chunks[-1] += " " + piece
        else:
            chunks.append(piece)
    return chunks


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _split_pieces(text: str, max_bytes: int, separators: list[re.Pattern[str]]) -> list[str]:
    if not text:
        return []
    if _nbytes(text) <= max_bytes:
        return [text]
    if not separators:
        out, current = [], ""
        for char in text:  # no boundary left: cut between characters
            if current and _nbytes(current + char) > max_bytes:
                out.append(current)
                current = ""
            current += char
        return [*out, current] if current else out
    pieces: list[str] = []
    for part in separators[0].split(text):
        pieces.extend(_split_pieces(part.strip(), max_bytes, separators[1:]))
    return pieces
