"""Speech recognition for scoring: openai-whisper, loaded safely and decoded in batches.

Models come from three places, all loaded by one function (`load_checkpoint`):

* an official name ("tiny" ... "large-v3", "turbo"): the file Whisper would download,
  looked up in the download root and checked against its published sha256. Nothing is
  downloaded: benchmark machines are often offline, and a missing file is an `ASRError`
  that says how to fill the cache;
* a path to a checkpoint in Whisper's format ``{"dims": ..., "model_state_dict": ...}``;
* "random:tiny" / "random:large-v3": random weights with the official dimensions,
  written once as a checkpoint under the download root, for speed-only runs and tests.
  Transcripts from them are meaningless, and ``is_random`` says so.

Checkpoints are read with ``torch.load(..., weights_only=True)``, which refuses to run
pickled code. ``whisper.load_model`` does the same today, but only behind a string
comparison of torch versions, so the guarantee is made explicit here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torchaudio.functional as AF
import whisper
from tqdm import tqdm
from whisper.model import ModelDimensions, Whisper
from whisper.tokenizer import get_tokenizer

from bench.scoring.cache import TranscriptCache, sha256_file
from bench.store.files import atomic_target
from echo_tts.audio import read_wav

__all__ = [
    "ASR",
    "RANDOM_DIMS",
    "SAMPLE_RATE",
    "ASRError",
    "WhisperASR",
    "default_download_root",
    "load_checkpoint",
    "read_audio_16k",
    "to_16k",
    "transcribe_files",
    "write_random_checkpoint",
]

SAMPLE_RATE = whisper.audio.SAMPLE_RATE  # 16 kHz, what every Whisper model expects
_WINDOW = whisper.audio.N_SAMPLES  # 30 s at 16 kHz: one decoder window

# Published dimensions of the official checkpoints (their "dims" entries), so a random
# model has the real compute cost without the weights being available.
RANDOM_DIMS: dict[str, ModelDimensions] = {
    "tiny": ModelDimensions(
        n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
        n_vocab=51865, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4,
    ),
    "large-v3": ModelDimensions(
        n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20, n_audio_layer=32,
        n_vocab=51866, n_text_ctx=448, n_text_state=1280, n_text_head=20, n_text_layer=32,
    ),
}  # fmt: skip

# Key in a checkpoint written by `write_random_checkpoint`; Whisper ignores extra keys,
# so such a file still loads with whisper.load_model.
_RANDOM_KEY = "echo_bench_random"
_RANDOM_SEED = 0

# Official file name (e.g. "large-v3.pt") and sha256 per model name, from the URLs
# Whisper downloads from: .../<sha256>/<name>.pt
_OFFICIAL_FILES: dict[str, tuple[str, str]] = {
    name: (url.rsplit("/", 1)[-1], url.rsplit("/", 2)[-2]) for name, url in whisper._MODELS.items()
}
_OFFICIAL_BY_SHA: dict[str, str] = {
    sha: fn.removesuffix(".pt") for fn, sha in _OFFICIAL_FILES.values()
}


class ASRError(RuntimeError):
    """An ASR model cannot be loaded; the message is one line saying what to do."""


@runtime_checkable
class ASR(Protocol):
    """A speech recogniser as the scorer sees it.

    Attributes:
        name: stable identity of the model weights, used in cache keys and records.
        is_random: True when the weights are random, so transcripts are meaningless.
    """

    name: str
    is_random: bool

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        """Transcripts of mono float32 waveforms at 16 kHz (shape [samples] each)."""
        ...


RANDOM_SAMPLE_LEN = 24


def default_download_root() -> Path:
    """Whisper's own cache folder: $XDG_CACHE_HOME/whisper or ~/.cache/whisper."""
    base = os.getenv("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "whisper"


def to_16k(audio: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
    """Resample a mono waveform to 16 kHz (torchaudio's band-limited sinc resampler).

    Args:
        audio: shape [samples], any float dtype, in [-1, 1].
        sample_rate: its rate in Hz.

    Returns:
        float32 numpy array of shape [round(samples * 16000 / sample_rate)].
    """
    wav = torch.as_tensor(audio).detach().to("cpu", torch.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape [samples], got {tuple(wav.shape)}")
    if sample_rate != SAMPLE_RATE:
        wav = AF.resample(wav, sample_rate, SAMPLE_RATE)
    return np.ascontiguousarray(wav.numpy(), dtype=np.float32)


def read_audio_16k(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an audio file (echo_tts.audio.read_wav), average its channels, resample to 16 kHz.

    Returns:
        float32 array of shape [samples] at 16 kHz.
    """
    audio, rate = read_wav(path)  # [channels, samples]
    return to_16k(audio.mean(dim=0), rate)


def write_random_checkpoint(
    path: str | os.PathLike[str],
    dims: ModelDimensions,
    *,
    seed: int = _RANDOM_SEED,
    label: str = "",
) -> Path:
    """Write a random-weight Whisper in Whisper's checkpoint format.

    The weights are drawn from a seeded generator (the global torch RNG is left as it
    was) and stored in float16 like the official files. The file is written to a
    temporary name and renamed, so a concurrent reader never sees half a checkpoint.

    Args:
        path: destination file.
        dims: model dimensions, e.g. ``RANDOM_DIMS["tiny"]``.
        seed: torch seed for the initialisation.
        label: short description stored in the file and used in the ASR name.

    Returns:
        The path written.
    """
    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Whisper(dims)
        # Whisper allocates the decoder's positional embedding with torch.empty (the
        # real values come from the checkpoint); give it defined, seeded values.
        torch.nn.init.normal_(model.decoder.positional_embedding, std=0.01)
        # The output layer is tied to the token embedding. At nn.Embedding's default
        # scale (std 1) the input token dominates the residual stream, so a random model
        # repeats the last prompt token (<|notimestamps|>) forever and never emits text.
        # A GPT-style small scale lets the audio-dependent layers pick the tokens.
        torch.nn.init.normal_(model.decoder.token_embedding.weight, std=0.02)
    state = {k: v.half() for k, v in model.state_dict().items()}
    checkpoint = {
        "dims": asdict(dims),
        "model_state_dict": state,
        _RANDOM_KEY: {"seed": seed, "label": label},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:
        torch.save(checkpoint, tmp)
    return path


def load_checkpoint(
    path: str | os.PathLike[str], device: torch.device, *, sha256: str | None = None
) -> tuple[Whisper, str, bool]:
    """Load a Whisper checkpoint without executing pickled code.

    Args:
        path: checkpoint file in Whisper's format.
        device: where the model goes.
        sha256: the file's digest when the caller has just computed it (saves reading a
            multi-GB file twice).

    Returns:
        (model in eval mode, stable name, is_random). The name is "whisper:<official
        name>" when the file's sha256 is an official one, "whisper:random:<label>:seed<n>"
        for files from `write_random_checkpoint`, else "whisper:file:<sha256 prefix>",
        so two different weight files never share transcripts in the cache.
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        dims = ModelDimensions(**checkpoint["dims"])
        model = Whisper(dims)
        model.load_state_dict(checkpoint["model_state_dict"])
    except Exception as exc:  # any failure here means "not a usable Whisper checkpoint"
        raise ASRError(f"{path} is not a loadable Whisper checkpoint: {exc}") from exc
    random_info = checkpoint.get(_RANDOM_KEY)
    if random_info is not None:
        # Named by recipe, not by file hash: torch.save stamps each file with a random
        # serialization id, so two writes of the same weights differ in their bytes. (Nor
        # can one be an official file, which has no such key: no need to hash gigabytes.)
        name = f"whisper:random:{random_info.get('label') or 'custom'}:seed{random_info['seed']}"
    else:
        sha = sha256 or sha256_file(path)
        official = _OFFICIAL_BY_SHA.get(sha)
        if official is not None:
            name = f"whisper:{official}"
            model.set_alignment_heads(whisper._ALIGNMENT_HEADS[official])
        else:
            name = f"whisper:file:{sha[:16]}"
    return model.to(device).eval(), name, random_info is not None


def _resolve(model: str, root: Path) -> tuple[Path, str | None]:
    """The checkpoint file behind a model spec (official name, random:<size>, or path),
    with its sha256 when it was verified here."""
    if model.startswith("random:"):
        size = model.removeprefix("random:")
        if size not in RANDOM_DIMS:
            raise ASRError(
                f"unknown random Whisper size {size!r}; choose one of {sorted(RANDOM_DIMS)}"
            )
        path = root / f"echo-bench-random-{size}-seed{_RANDOM_SEED}.pt"
        if not path.is_file():
            write_random_checkpoint(path, RANDOM_DIMS[size], label=size)
        return path, None
    if model in _OFFICIAL_FILES:
        file_name, expected = _OFFICIAL_FILES[model]
        path = root / file_name
        # Checked here, before anything could try to download: offline, Whisper's own
        # loader would block on the network instead of failing.
        if not path.is_file():
            raise ASRError(
                f"Whisper model {model!r} is not in {root} (no {file_name}); on a machine with "
                f"network run: python -c \"import whisper; whisper.load_model('{model}', "
                f"download_root='{root}')\" and copy {file_name} into {root}"
            )
        if sha256_file(path) != expected:
            raise ASRError(
                f"{path} does not match the published sha256 of Whisper {model!r}; "
                f"delete it and fetch it again"
            )
        return path, expected
    path = Path(model).expanduser()
    if path.is_file():
        return path, None
    raise ASRError(
        f"Whisper model {model!r} is neither an official name "
        f"({', '.join(_OFFICIAL_FILES)}), random:<{'|'.join(RANDOM_DIMS)}>, nor a checkpoint file"
    )


class WhisperASR:
    """openai-whisper for scoring: English, greedy (temperature 0), no timestamps, no
    conditioning on earlier text, so the same audio always gives the same transcript.

    Audio up to 30 s is padded to one window and decoded in batches of ``batch_size``
    (one padded log-mel per item, shape [batch, n_mels, 3000]). Longer audio is not cut:
    it goes through ``whisper.transcribe``, window by window, with the same options.

    Args:
        model: official name ("tiny" ... "large-v3", "turbo"), "random:tiny" /
            "random:large-v3", or a checkpoint path.
        device: torch device; CUDA when available, else CPU. fp16 only on CUDA.
        download_root: folder holding official checkpoints (and random ones written
            here); defaults to Whisper's cache folder.
        batch_size: utterances per batched decode.
        batched: False decodes one utterance at a time (for comparison and debugging).
    """

    def __init__(
        self,
        model: str = "large-v3",
        *,
        device: str | torch.device | None = None,
        download_root: str | os.PathLike[str] | None = None,
        batch_size: int = 16,
        batched: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        root = Path(download_root) if download_root is not None else default_download_root()
        self.checkpoint, sha = _resolve(model, root)
        self.model, self.name, self.is_random = load_checkpoint(
            self.checkpoint, self.device, sha256=sha
        )
        self.batch_size = batch_size
        self.batched = batched
        self.fp16 = self.device.type == "cuda"
        self.options = whisper.DecodingOptions(
            task="transcribe",
            language="en",
            temperature=0.0,
            without_timestamps=True,
            fp16=self.fp16,
            # A random model never emits end-of-text; its transcript is noise anyway, so
            # cap it rather than decode the full 224-token budget per clip.
            sample_len=RANDOM_SAMPLE_LEN if self.is_random else None,
        )
        self._tokenizer = get_tokenizer(
            self.model.is_multilingual,
            num_languages=self.model.num_languages,
            language="en",
            task="transcribe",
        )

    def __repr__(self) -> str:
        return f"WhisperASR(name={self.name!r}, device={self.device}, batch_size={self.batch_size})"

    def _mel(self, audio: np.ndarray) -> torch.Tensor:
        """Log-mel of one waveform padded to 30 s, shape [n_mels, 3000].

        Computed per item: Whisper's log_mel_spectrogram clamps against the maximum of
        the whole tensor it is given, so a stacked batch would couple the items.
        """
        wav = whisper.pad_or_trim(torch.from_numpy(audio)).to(self.device)
        return whisper.log_mel_spectrogram(wav, self.model.dims.n_mels)

    def _decode(self, audios: Sequence[np.ndarray]) -> list[str]:
        mels = torch.stack([self._mel(a) for a in audios])
        results = whisper.decode(self.model, mels, self.options)
        assert isinstance(results, list)  # a 3-D mel always gives a list
        return [self._text(r.tokens) for r in results]

    def _text(self, tokens: Sequence[int]) -> str:
        """Text of decoded tokens, special tokens dropped.

        Whisper's own text keeps special tokens other than timestamps; trained models
        never emit them, but random ones do (e.g. <|notimestamps|> over and over), and a
        transcript must be words only.
        """
        return self._tokenizer.decode([t for t in tokens if t < self._tokenizer.eot]).strip()

    def _transcribe_long(self, audio: np.ndarray) -> str:
        result = whisper.transcribe(
            self.model,
            audio,
            verbose=None,
            temperature=0.0,
            condition_on_previous_text=False,
            language="en",
            task="transcribe",
            fp16=self.fp16,
        )
        return self._text([t for seg in result["segments"] for t in seg["tokens"]])

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        """Transcribe mono 16 kHz waveforms.

        Args:
            audios: float arrays of shape [samples] at 16 kHz (see `to_16k`).

        Returns:
            One stripped transcript per input, in input order.
        """
        wavs = [np.ascontiguousarray(a, dtype=np.float32) for a in audios]
        for i, w in enumerate(wavs):
            if w.ndim != 1:
                raise ValueError(f"audio {i}: expected shape [samples], got {w.shape}")
        return batched_transcripts(wavs, self.batch_size if self.batched else 1,
                                   self._decode, self._transcribe_long)


def batched_transcripts(wavs: Sequence[np.ndarray], batch_size: int,
                        decode: Callable[[list[np.ndarray]], list[str]],
                        transcribe_long: Callable[[np.ndarray], str]) -> list[str]:
    """Transcripts in input order: clips of one 30 s window decoded ``batch_size`` at a
    time by ``decode``, longer ones window by window by ``transcribe_long``.

    Similar durations usually mean similar transcript lengths, so clips are batched in
    order of length: fewer decoder steps are spent on rows that have already finished.
    """
    texts = [""] * len(wavs)
    short = sorted((i for i, w in enumerate(wavs) if w.shape[0] <= _WINDOW),
                   key=lambda i: wavs[i].shape[0])
    for start in range(0, len(short), batch_size):
        idx = short[start : start + batch_size]
        for i, text in zip(idx, decode([wavs[i] for i in idx]), strict=True):
            texts[i] = text
    for i, w in enumerate(wavs):
        if w.shape[0] > _WINDOW:
            texts[i] = transcribe_long(w)
    return texts


def transcribe_files(
    asr: ASR,
    paths: Sequence[str | os.PathLike[str]],
    cache: TranscriptCache,
    progress: bool = False,
    *,
    chunk_size: int = 64,
) -> list[str]:
    """Transcripts of audio files, from the cache where possible.

    Files are keyed by the sha256 of their bytes and ``asr.name``; files with identical
    bytes are transcribed once. Misses are read (any format soundfile reads, channels
    averaged, resampled to 16 kHz) and transcribed ``chunk_size`` at a time, and each
    chunk is written to the cache as soon as it is done, so an interrupted run keeps
    its progress.

    Returns:
        One transcript per path, in order.
    """
    hashes = [sha256_file(p) for p in paths]
    found = {h: cache.get(h, asr.name) for h in dict.fromkeys(hashes)}
    first_path = {h: p for h, p in zip(reversed(hashes), reversed(paths), strict=True)}
    misses = [h for h, text in found.items() if text is None]
    with tqdm(total=len(misses), disable=not progress, unit="file", desc=f"ASR {asr.name}") as bar:
        for start in range(0, len(misses), chunk_size):
            chunk = misses[start : start + chunk_size]
            texts = asr.transcribe([read_audio_16k(first_path[h]) for h in chunk])
            for h, text in zip(chunk, texts, strict=True):
                cache.put(h, asr.name, text)
                found[h] = text
            bar.update(len(chunk))
    return [found[h] or "" for h in hashes]
