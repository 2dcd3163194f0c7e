"""A run's records as a table: each generation's latest record merged with its scores.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
from bench.store.files import read_jsonl
from bench.store.layout import MANIFEST, PARQUET, RECORDS, SCORES, StoreError


def latest_entries(entries: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last entry per key, in order of each key's first entry (a retried generation
    stays where it first ran)."""
    return {entry["key"]: entry for entry in entries}


def _merged(run_dir: Path, *, with_scores: bool) -> list[dict[str, Any]]:
    records = list(latest_entries(read_jsonl(run_dir / RECORDS)).values())
    if not with_scores:
        return records
    scores = latest_entries(read_jsonl(run_dir / SCORES))
    return [{**r, **scores.get(r["key"], {})} for r in records]


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records as a table; nested dicts become dotted columns ("timings.sampling")."""
    import pandas as pd  # deferred: runners and workers that never read tables skip it

    if not records:
        return pd.DataFrame({"key": pd.Series([], dtype=str)})
    return pd.json_normalize(records, sep=".")


def load_records(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Records of a run merged with their latest scores, as a DataFrame (for readers).

    Reads records.parquet when it is newer than both JSONL files, else merges the JSONL
    files (a run still in progress, or scored after it finished). Takes no lock.
    """
    import pandas as pd

    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST).is_file():
        raise StoreError(f"{run_dir} is not a run directory (no {MANIFEST}); pass a run folder")
    parquet = run_dir / PARQUET
    if parquet.exists():
        newest_jsonl = max(
            (
                (run_dir / name).stat().st_mtime_ns
                for name in (RECORDS, SCORES)
                if (run_dir / name).exists()
            ),
            default=0,
        )
        if parquet.stat().st_mtime_ns > newest_jsonl:
            return pd.read_parquet(parquet)
    return records_frame(_merged(run_dir, with_scores=True))
