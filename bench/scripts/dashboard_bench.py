"""Time ``echo-bench dashboard`` over a year of constructed nightly runs (issue 34).

Writes (once; kept in ``--root`` for later calls) ``--nights`` - 1 nights of the
nightly's shape (:mod:`bench.scripts.nightly_runs`: 20 cells, 960 generations a night,
a planted 15 % slowdown and +4 WER points), then measures, each ``--repeats`` times:

* ``scratch``: every run's summary deleted and the site removed, then a build;
* ``unchanged``: a build when nothing changed (every summary current);
* ``one_new_run``: a build after one more night (the last night's summary deleted
  before each repeat, so each build summarises it anew; writing the night is not timed);
* ``history``: ``echo-bench history``'s table and step changes over the same summaries.

Prints one JSON line with the medians and every wall time, the median CPU seconds
(process and summarising workers: what the build needs, whatever the neighbours do),
the number of runs, the step changes found, the CPU count and the load average. Usage::

    python -m bench.scripts.dashboard_bench [--root DIR] [--nights 365] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from bench.analysis.history import flag_step_changes, history_table
from bench.report.dashboard import build_dashboard
from bench.scripts.nightly_runs import NightlyTruth, default_plants, nightly_shape, write_night
from bench.store.history import list_runs
from bench.store.layout import SUMMARY


def _ensure_nights(root: Path, nights: int, threads: int) -> None:
    """Nights 0..nights-2 under root (the last one is the incremental night)."""
    truth = NightlyTruth(nightly_shape(), seed=0)
    plants = default_plants(nights)
    have = {e["run_id"] for e in list_runs(root)} if root.exists() else set()
    missing = [n for n in range(nights - 1) if not any(r.endswith(f"-n{n:03d}") for r in have)]
    if not missing:
        return
    from concurrent.futures import ThreadPoolExecutor

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda n: write_night(root, truth, n, plants), missing))
    print(f"wrote {len(missing)} nights in {time.perf_counter() - start:.0f} s", flush=True)


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the summarising workers)."""
    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                       resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


CPU: dict[str, list[float]] = {}


def _timed(fn: Any, name: str = "") -> tuple[float, Any]:
    """Wall seconds of ``fn()`` and its result; its CPU seconds go to CPU[name]: on a
    shared machine the wall time says how busy the neighbours were, CPU time what the
    build itself needs (over 2 cores, about half of it on an idle machine)."""
    start, cpu = time.perf_counter(), _cpu()
    out = fn()
    CPU.setdefault(name, []).append(_cpu() - cpu)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/echo-bench-dashboard-year"))
    parser.add_argument("--nights", type=int, default=365)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8, help="nights written at once")
    args = parser.parse_args()
    root, out = args.root / "runs", args.root / "site"
    _ensure_nights(root, args.nights, args.threads)
    last = args.nights - 1
    last_dirs = [root / e["path"] for e in list_runs(root) if e["run_id"].endswith(f"-n{last:03d}")]
    for d in last_dirs:  # the incremental night is added below, after the scratch builds
        shutil.rmtree(d)
    if last_dirs:
        index = root / "index.jsonl"
        kept = [line for line in index.read_text(encoding="utf-8").splitlines()
                if f"-n{last:03d}" not in line]
        index.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")

    times: dict[str, list[float]] = {"scratch": [], "unchanged": [], "one_new_run": [],
                                     "history": []}
    for _ in range(args.repeats):
        for summary in root.glob(f"*/{SUMMARY}"):
            summary.unlink()
        shutil.rmtree(out, ignore_errors=True)
        seconds, site = _timed(lambda: build_dashboard(root, out), "scratch")
        times["scratch"].append(seconds)
        times["unchanged"].append(_timed(lambda: build_dashboard(root, out), "unchanged")[0])
    scratch_runs, scratch_steps = sum(site.runs.values()), len(site.steps)

    truth = NightlyTruth(nightly_shape(), seed=0)
    new = write_night(root, truth, last, default_plants(args.nights))
    for _ in range(args.repeats):
        (new / SUMMARY).unlink(missing_ok=True)
        seconds, site = _timed(lambda: build_dashboard(root, out), "one_new_run")
        assert site.computed == 1, site.computed  # only the new night was summarised
        times["one_new_run"].append(seconds)
        times["history"].append(
            _timed(lambda: flag_step_changes(history_table(root)), "history")[0])
    print(json.dumps({
        "nights": args.nights, "runs_scratch": scratch_runs, "runs_after": sum(site.runs.values()),
        "records_per_run": 960, "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "median_s": {k: round(statistics.median(v), 2) for k, v in times.items()},
        "median_cpu_s": {k: round(statistics.median(v), 2) for k, v in CPU.items()},
        "all_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "steps_scratch": scratch_steps,
        "steps": [f"{s.date} {s.hardware} {s.cell_label} {s.figure} {s.change}"
                  for s in site.steps],
        "skipped": len(site.skipped),
    }))


if __name__ == "__main__":
    main()
