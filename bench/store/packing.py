"""Packing a finished run's audio folder into one file, and unpacking it.

A Modal Volume works best under 50,000 files (500,000 inodes at most) and its commits
get slower as files accumulate; a weekly grid keeps hundreds of WAVs a run, so old runs
on the Volume keep their records, scores, manifest and report as they are and their
WAVs in ``audio.zip`` (stored, not compressed: WAVs barely compress and the members stay
readable one by one). ``echo-bench pull`` unpacks it, so a local run looks as it did.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

from bench.store.layout import AUDIO_DIR, StoreError

PACKED_AUDIO = "audio.zip"


def pack_audio(run_dir: Path) -> int:
    """Move ``run_dir/audio/*`` into ``run_dir/audio.zip``; the number of files packed.

    The archive is complete on disk (written aside, fsynced, renamed) before any WAV is
    removed, so a stop at any point loses nothing; packing again adds what is left.
    """
    folder = run_dir / AUDIO_DIR
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    if not files:
        return 0
    target = run_dir / PACKED_AUDIO
    tmp = run_dir / (PACKED_AUDIO + ".tmp")
    if target.exists():
        shutil.copyfile(target, tmp)
    with zipfile.ZipFile(tmp, "a", compression=zipfile.ZIP_STORED) as archive:
        present = set(archive.namelist())
        for path in files:
            if path.name not in present:
                archive.write(path, path.name)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)
    shutil.rmtree(folder)
    return len(files)


def unpack_audio(run_dir: Path) -> int:
    """Restore ``run_dir/audio/`` from ``audio.zip`` and remove it; files restored."""
    archive_path = run_dir / PACKED_AUDIO
    if not archive_path.is_file():
        return 0
    folder = run_dir / AUDIO_DIR
    folder.mkdir(exist_ok=True)
    try:
        with zipfile.ZipFile(archive_path) as archive:
            names = archive.namelist()
            for name in names:
                if Path(name).name != name:  # a member name is a file name we wrote
                    raise StoreError(f"{archive_path}: unexpected member {name!r}")
                with archive.open(name) as src, (folder / name).open("wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as err:
        raise StoreError(f"{archive_path} is damaged ({err}); pull the run again") from None
    archive_path.unlink()
    return len(names)
