"""Sweep specs shipped inside the package (``bench/sweeps/*.toml``), found by name.

Its own module so the Modal app (which runs shipped specs) and the CLI both use it
without the app importing a CLI command module.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from bench.core.errors import UserError


def shipped_specs() -> list[str]:
    folder = resources.files("bench") / "sweeps"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def resolve_spec_path(name: str) -> Path:
    """A path as given, or a shipped sweep by name."""
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UserError(f"spec file {path} does not exist; pass a TOML file or one of "
                            f"{', '.join(shipped_specs())}")
        return path
    shipped = resources.files("bench") / "sweeps" / f"{name}.toml"
    if not shipped.is_file():
        raise UserError(f"no spec file {name!r} and no shipped sweep of that name; shipped: "
                        f"{', '.join(shipped_specs())}")
    return Path(str(shipped))
