"""The nightly publishes the dashboard beside its runs on the outputs Volume.

After a night is scored and reported, :func:`publish_dashboard` rebuilds the site of
every run on the Volume into ``<outputs>/dashboard/`` (``runs/`` beside it, so the points'
relative links reach each run's report there) and commits it. Each run's summary is kept
in its folder on the Volume, so a night re-reads only that night. The manual GitHub
workflow downloads this folder (``modal volume get``) and keeps it as an artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from bench.report.dashboard import Dashboard, build_dashboard

#: The site's folder beside ``runs/`` on the outputs Volume (``dashboard/`` on the Volume).
DASHBOARD_DIR = "dashboard"


class Volume(Protocol):
    """What publishing needs of a ``modal.Volume`` mounted in its container."""

    def commit(self) -> None: ...

    def reload(self) -> None: ...


def publish_dashboard(runs_root: Path, volume: Volume) -> Dashboard:
    """Rebuild the site over ``runs_root`` into its sibling ``dashboard/`` and commit.

    Reloads first: the scoring function wrote the night's scores and report from
    another container. One writer: the scheduled function, after its run is done.
    """
    volume.reload()
    site = build_dashboard(runs_root, runs_root.parent / DASHBOARD_DIR)
    volume.commit()
    print(f"dashboard: {site.index} ({sum(site.runs.values())} runs, {len(site.steps)} step "
          f"changes, {len(site.skipped)} skipped)")
    return site
