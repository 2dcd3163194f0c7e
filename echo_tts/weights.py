"""Find, verify and load checkpoints.

A *source* is one of:

* ``random:<preset>``: random weights at a preset's size (speed-only runs, tests);
* a local folder holding ``<filename>`` or a path to the file itself;
* a Hugging Face repo id (``owner/name``), resolved through huggingface_hub's cache first
  (with ``HF_HUB_OFFLINE=1`` nothing is downloaded and a missing file is an error).

Only safetensors files are read: no pickle is ever unpickled for model weights.
Checkpoints we write carry their config in the safetensors metadata, so a folder is
self-describing; official checkpoints carry none and use the official preset.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from echo_tts.config import ModelConfig
from echo_tts.errors import first_line
from echo_tts.model import EchoDiT, is_blockwise_key

DEFAULT_MODEL_REPO = "jordand/echo-tts-base"
MODEL_FILENAME = "pytorch_model.safetensors"
CONFIG_METADATA_KEY = "echo_tts_config"
C = TypeVar("C")
RANDOM_PREFIX = "random:"


class WeightsError(Exception):
    """A checkpoint could not be found, read or matched; the message says how to fix it."""


@dataclass(frozen=True)
class ResolvedSource:
    """Where weights come from: a file on disk, or random weights at a named preset."""

    path: Path | None
    random_preset: str | None

    @property
    def is_random(self) -> bool:
        return self.random_preset is not None


def resolve_source(source: str | os.PathLike[str], filename: str) -> ResolvedSource:
    """Turn a user-facing source string into a file path (or a random preset)."""
    text = str(source)
    if text.startswith(RANDOM_PREFIX):
        preset = text[len(RANDOM_PREFIX):]
        if not preset:
            raise WeightsError(f"{text!r} names no preset; write e.g. 'random:tiny'")
        return ResolvedSource(None, preset)
    path = Path(text).expanduser()
    if path.is_dir():
        candidate = path / filename
        if not candidate.is_file():
            raise WeightsError(f"{path} has no {filename}; point at a folder that holds it")
        return ResolvedSource(candidate, None)
    if path.is_file():
        return ResolvedSource(path, None)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        return ResolvedSource(_hub_file(text, filename), None)
    raise WeightsError(
        f"weights source {text!r} is neither a folder, a file, a Hugging Face repo id "
        "(owner/name) nor 'random:<preset>'"
    )


def _hub_file(repo_id: str, filename: str) -> Path:
    """The cached file when there is one (no network round trip: a benchmark wants the
    weights it measured before, not a check for newer ones); else a download."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    def not_cached(reason: str) -> WeightsError:
        cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
        return WeightsError(
            f"{repo_id}/{filename} is not in the Hugging Face cache ({cache}) and cannot be "
            f"downloaded ({reason}); run `huggingface-cli download {repo_id} {filename}` "
            "where there is a network, or pass a local folder")

    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        raise not_cached("HF_HUB_OFFLINE is set")
    if not _hub_resolvable():
        # Without this the hub client retries for ~25 s, printing a warning each time.
        raise not_cached("no network: the Hub's host name does not resolve")
    try:
        return Path(hf_hub_download(repo_id, filename))
    except LocalEntryNotFoundError as err:
        raise not_cached("no network") from err
    except Exception as err:  # the hub raises many types (auth, 404, connection)
        raise WeightsError(f"could not fetch {repo_id}/{filename}: {type(err).__name__}: "
                           f"{first_line(err, empty='')}") from err


def _hub_resolvable() -> bool:
    """False only when the Hub's host surely cannot be reached: its name does not resolve
    and no proxy (which would resolve it for us) is configured."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.getaddrinfo(host or "huggingface.co", 443)
    except OSError:
        return False
    return True


def read_safetensors(path: Path, device: str | torch.device = "cpu"
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; anything else is a WeightsError."""
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    except (SafetensorError, OSError, ValueError) as err:
        if _looks_like_pickle(path):
            raise WeightsError(
                f"{path} is not a readable safetensors file: it is a PyTorch pickle checkpoint "
                "(torch.save), which is never loaded since unpickling can run code; "
                "convert it to safetensors "
                "(safetensors.torch.save_file) and point at that"
            ) from err
        raise WeightsError(
            f"{path} is not a readable safetensors file ({first_line(err)}); only "
            "safetensors checkpoints are accepted (no pickle), re-download or convert it"
        ) from err
    return tensors, metadata


def _looks_like_pickle(path: Path) -> bool:
    """torch.save writes a zip archive (new format) or a raw pickle (protocol 2+: 0x80)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith((b"PK\x03\x04", b"\x80"))


def check_state_dict(expected: Mapping[str, torch.Size], found: Mapping[str, torch.Tensor],
                     path: Path | str, ignore: Iterable[str] = ()) -> None:
    """Raise a WeightsError listing the first missing, unexpected or mis-shaped keys."""
    ignored = set(ignore)
    missing = [k for k in expected if k not in found and k not in ignored]
    unexpected = [k for k in found if k not in expected and k not in ignored]
    mismatched = [f"{k} {tuple(found[k].shape)} != {tuple(shape)}"
                  for k, shape in expected.items() if k in found and found[k].shape != shape]
    problems = []
    for label, keys in (("shape mismatches", mismatched), ("missing keys", missing),
                        ("unexpected keys", unexpected)):
        if keys:
            shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
            problems.append(f"{len(keys)} {label}: {shown}")
    if problems:
        raise WeightsError(f"checkpoint {path} does not match the config: " + "; ".join(problems)
                           + "; pass the config the checkpoint was saved with")


def randomize_(module: nn.Module, seed: int = 0) -> None:
    """Fill every parameter with deterministic random values of a sensible scale.

    Weights get N(0, 1/fan_in); norm weights 1 + N(0, 0.1); biases N(0, 0.02). Nothing is
    left at a default init, so parity tests exercise every parameter.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                values = torch.randn(p.shape, generator=gen) / fan_in**0.5
            elif "norm" in name or name.endswith("alpha"):
                values = 1 + 0.1 * torch.randn(p.shape, generator=gen)
            else:
                values = 0.02 * torch.randn(p.shape, generator=gen)
            p.copy_(values.to(p.dtype))


def save_model(model: EchoDiT, path: str | os.PathLike[str]) -> Path:
    """Write a self-describing safetensors checkpoint (config in the metadata)."""
    target = Path(path)
    if target.suffix != ".safetensors":
        target = target / MODEL_FILENAME
    target.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(target), metadata={CONFIG_METADATA_KEY: json.dumps(model.config.to_dict())})
    return target


def load_model(
    source: str | os.PathLike[str] = DEFAULT_MODEL_REPO,
    *,
    config: ModelConfig | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    keep_blockwise: bool = True,
) -> EchoDiT:
    """Load an EchoDiT from ``source`` (see the module doc), in eval mode.

    ``config`` defaults to the checkpoint's own (metadata) or the official size.
    ``keep_blockwise=False`` drops the latent-prefix modules, which inference without a
    prefix does not need. ``dtype`` converts the weights (None keeps the file's dtype,
    float32 for random weights).
    """
    resolved = resolve_source(source, MODEL_FILENAME)
    if resolved.is_random:
        model = _random_model(config or _preset(str(resolved.random_preset)), device,
                              dtype or torch.float32)
        if not keep_blockwise:
            model.drop_blockwise()
        return model.eval()

    assert resolved.path is not None
    state, metadata = read_safetensors(resolved.path)
    if config is None:
        config = _model_config(metadata, resolved.path)
    with torch.device("meta"):
        model = EchoDiT(config)
    if not keep_blockwise:
        model.drop_blockwise()
        state = {k: v for k, v in state.items() if not is_blockwise_key(k)}
    expected = {k: v.shape for k, v in model.state_dict().items()}
    check_state_dict(expected, state, resolved.path)
    state = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def config_from_metadata(metadata: Mapping[str, str], key: str, path: Path,
                         build: Callable[[dict[str, Any]], C], default: Callable[[], C],
                         what: str) -> C:
    """The config a checkpoint we wrote keeps under metadata ``key`` (``build`` makes it
    from the JSON object), else ``default()`` (official checkpoints carry none). Anything
    that does not build is a WeightsError naming the file."""
    if key not in metadata:
        return default()
    try:
        values = json.loads(metadata[key])
        if not isinstance(values, dict):
            raise ValueError("not a JSON object")
        return build(values)
    except (TypeError, ValueError) as err:  # bad JSON, unknown or missing fields, bad values
        raise WeightsError(f"{path}: the config in its metadata ({key}) does "
                           f"not describe {what} ({first_line(err)}); re-save the checkpoint") from err


def _model_config(metadata: Mapping[str, str], path: Path) -> ModelConfig:
    """The config saved in a checkpoint's metadata, else the official size."""
    return config_from_metadata(metadata, CONFIG_METADATA_KEY, path,
                                lambda values: ModelConfig(**values),
                                lambda: ModelConfig.preset("echo-tts-base"), "an Echo-TTS model")


def _preset(name: str) -> ModelConfig:
    try:
        return ModelConfig.preset(name)
    except ValueError as err:
        raise WeightsError(str(err)) from err


def _random_model(config: ModelConfig, device: str | torch.device, dtype: torch.dtype) -> EchoDiT:
    # Build on CPU in float32 so the values do not depend on the device's RNG, then move:
    # the same preset gives the same weights everywhere. Full-size models are built on the
    # meta device and filled on the target device instead (too slow on CPU otherwise).
    if config.model_size >= 1024:
        with torch.device("meta"):
            model = EchoDiT(config)
        model.to_empty(device=device).to(dtype)
        gen = torch.Generator(device=device).manual_seed(0)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.ndim >= 2:
                    p.normal_(0, p[0].numel() ** -0.5, generator=gen)
                else:
                    p.fill_(1.0 if "norm" in name else 0.0)
        return model
    model = EchoDiT(config)
    randomize_(model)
    return model.to(device=device, dtype=dtype)
