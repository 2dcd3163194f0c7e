"""The folder scoring models are cached in, what each model needs there, and how to fill it.

Weights that do not ship inside a PyPI package live in one folder: ``--models-dir``, else
``$ECHO_BENCH_MODELS`` (a Modal Volume mount in production), else
``~/.cache/echo-bench/models``. Nothing is downloaded implicitly: benchmark machines are
often offline, so a missing file is a `ModelMissingError` whose one line names the file,
the folder and the command that fills it (``echo-bench models fetch NAME``), which needs
the network once.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from bench.store.files import atomic_target

__all__ = ["MODELS_ENV", "MODEL_FILES", "ModelFile", "ModelMissingError", "fetch_model",
           "load_state", "models_dir", "require"]

MODELS_ENV = "ECHO_BENCH_MODELS"


class ModelMissingError(RuntimeError):
    """A scoring model's weights are not in the cache folder; the message says how to fill it."""


@dataclass(frozen=True)
class ModelFile:
    """One cached weight file: where it comes from and under which licence."""

    name: str
    filename: str
    url: str
    description: str
    licence: str


MODEL_FILES: dict[str, ModelFile] = {m.name: m for m in (
    ModelFile(
        "wavlm-ecapa", "wavlm_large_finetune.pth",
        # The Google Drive file UniSpeech's speaker-verification README and Seed-TTS-eval
        # link to ("WavLM large, fix pre-train: No"); confirm=t skips the large-file page.
        "https://drive.usercontent.google.com/download?id=1-aE1NfzpRCLxA4GUxX9ITI3F9LlbtEGP"
        "&export=download&confirm=t",
        "Seed-TTS-eval speaker model (WavLM-large + ECAPA-TDNN)",
        "UniSpeech (microsoft/UniSpeech), CC BY-SA 3.0 per its repository"),
    ModelFile(
        "utmos22-strong", "utmos22_strong_step7459_v1.pt",
        "https://github.com/tarepan/SpeechMOS/releases/download/v1.0.0/utmos22_strong_step7459_v1.pt",
        "UTMOS22 strong learner (SpeechMOS's state dict of the sarulab-speech checkpoint)",
        "MIT (sarulab-speech/UTMOS22; tarepan/SpeechMOS)"),
)}


def models_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``explicit``, else $ECHO_BENCH_MODELS, else ~/.cache/echo-bench/models."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "echo-bench" / "models"


def fetch_command(name: str, root: Path) -> str:
    return f"echo-bench models fetch {name} --models-dir {root}"


def require(name: str, root: Path) -> Path:
    """The path of model ``name``'s file in ``root``, or ModelMissingError saying how to get it."""
    model = MODEL_FILES[name]
    path = root / model.filename
    if not path.is_file():
        raise ModelMissingError(
            f"{model.description}: {model.filename} is not in {root}; fill the cache with "
            f"`{fetch_command(name, root)}` (needs the network once)")
    return path


def fetch_model(name: str, root: Path, source: str | None = None) -> Path:
    """Put model ``name`` into ``root``: from ``source`` (a local file or URL) or its
    published URL. Written to a temporary name and renamed, so an interrupted download
    never leaves a file that looks complete. Returns the path."""
    model = MODEL_FILES[name]
    root.mkdir(parents=True, exist_ok=True)
    target = root / model.filename
    origin = source or model.url
    with atomic_target(target) as tmp, open(tmp, "wb") as out:
        if Path(origin).expanduser().is_file():
            with open(Path(origin).expanduser(), "rb") as src:
                shutil.copyfileobj(src, out)
        else:
            with urllib.request.urlopen(origin, timeout=60) as response:
                shutil.copyfileobj(response, out)
    return target


def load_state(model: nn.Module, state: dict[str, Any], *, ignore: frozenset[str] = frozenset(),
               source: str = "checkpoint") -> None:
    """Load ``state`` into ``model`` after checking keys and shapes exactly.

    Keys in ``ignore`` may be present in the file and are dropped (a training-only
    classifier). Anything else missing, unexpected or of another shape raises ValueError
    naming the first few offenders, so a wrong or truncated file never loads partly.
    """
    expected = model.state_dict()
    given = {k: v for k, v in state.items() if k not in ignore}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(k for k in set(expected) & set(given)
                    if not isinstance(given[k], Tensor) or given[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        parts = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("wrong shape", shapes)) if keys]
        raise ValueError(f"{source} does not match the model: {'; '.join(parts)}")
    model.load_state_dict(given, strict=True)
