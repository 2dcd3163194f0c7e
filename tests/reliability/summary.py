"""Aggregate the reliability campaign's tallies into the README's table.

    python -m tests.reliability.summary DIR    # DIR: $ECHO_BENCH_RELIABILITY_OUT of a run
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

# (label, counter keys summed) in the order the README shows them.
ROWS: list[tuple[str, tuple[str, ...]]] = [
    ("SIGKILLs injected (between records, mid-line, scoring, parquet)", ("kills_attempted",)),
    ("kills survived (resume completed the run)", ("kills_survived",)),
    ("torn record lines detected and repaired", ("torn_lines_repaired",)),
    ("generations expected after resume", ("generations_expected",)),
    ("generations recorded exactly once", ("generations_recorded_once",)),
    ("records lost", ("records_lost",)),
    ("pipeline/scorer faults injected (exception, OOM, NaN, silent, ENOSPC, scorer)",
     ("faults_injected",)),
    ("failed generations recorded, sweep went on", ("failed_generations_recorded",)),
    ("bad inputs tried (specs, prompt files, audio, checkpoints)", ("bad_inputs_tried",)),
    ("  refused with exit 2 and one error line (or safely handled)",
     ("bad_inputs_refused_cleanly",)),
    ("  fuzzed inputs that were valid after all (dry-run exit 0)",
     ("bad_inputs_valid_after_all",)),
    ("concurrent writers on one run refused", ("concurrent_writers_refused",)),
    ("concurrent history-index appends (parallel processes)",
     ("index_appends_concurrent",)),
    ("index appends lost", ("index_appends_lost",)),
    ("secret env values planted (HF, Modal, AWS)", ("secrets_planted",)),
    ("secrets leaked", ("secrets_leaked",)),
    ("hostile prompt ids run through a sweep", ("hostile_prompt_ids",)),
    ("spec code-injection attempts (every string field)", ("spec_injection_attempts",)),
    ("spec code executions", ("spec_code_executions",)),
]


def collect(folder: Path) -> tuple[Counter[str], bool]:
    totals: Counter[str] = Counter()
    full = True
    for path in sorted(folder.glob("*.json")):
        payload = json.loads(path.read_text())
        totals.update(payload["counts"])
        full = full and bool(payload["full"])
    return totals, full


def table(totals: Counter[str]) -> str:
    lines = ["| what | count |", "|---|---:|"]
    for label, keys in ROWS:
        lines.append(f"| {label} | {sum(totals[k] for k in keys)} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m tests.reliability.summary DIR", file=sys.stderr)
        return 2
    totals, full = collect(Path(argv[0]))
    print(f"campaign size: {'full' if full else 'CI (reduced)'}\n")
    print(table(totals))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
