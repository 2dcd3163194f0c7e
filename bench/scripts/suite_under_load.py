"""Run the whole test suite several times in a row beside CPU-burning processes (issue 22).

The suite must be green every time on a busy machine: no test may depend on wall-clock
speed. This script proves it: it starts ``--burners`` processes running
``python -c "while True: pass"``, runs the README's test command (``python -m pytest -q``)
``--runs`` times one after the other, then kills the burners by pid. It prints one line
per run (pass/fail, the test counts pytest reports, wall time) and a JSON summary, and
exits 1 if any run failed.

Usage (from the repository root)::

    .venv/bin/python -m bench.scripts.suite_under_load [--runs 3] [--burners 2]
        [-- extra pytest arguments]

A measurement, not a test: nothing here is part of the pass/fail gate of the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# pytest's last line, e.g. "650 passed, 6 skipped, 3 warnings in 281.20s (0:04:41)".
_COUNTS = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")


def start_burners(n: int) -> list[subprocess.Popen[bytes]]:
    """``n`` busy-looping interpreters, each in its own process group so that stopping
    them touches nothing else."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                             start_new_session=True) for _ in range(n)]


def stop_burners(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill exactly the burners this script started, by pid."""
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.wait()


def counts(summary: str) -> dict[str, int]:
    """Test counts from pytest's summary line (``error`` and ``errors`` both as errors)."""
    out: dict[str, int] = {}
    for number, kind in _COUNTS.findall(summary):
        key = "errors" if kind.startswith("error") else kind
        out[key] = out.get(key, 0) + int(number)
    return out


def run_suite(pytest_args: list[str]) -> dict[str, Any]:
    """One run of the README's test command; its exit status, counts and wall time."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", *pytest_args], cwd=REPO,
                          capture_output=True, text=True)
    wall = time.monotonic() - start
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else ""
    failed = [line.split(" ", 1)[1] for line in lines
              if line.startswith(("FAILED ", "ERROR "))]
    return {"returncode": proc.returncode, "passed": proc.returncode == 0,
            "wall_seconds": round(wall, 1), "counts": counts(summary), "summary": summary,
            "failed_tests": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="suite runs in a row (3)")
    parser.add_argument("--burners", type=int, default=2,
                        help="CPU-burning processes beside the suite (2)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    args = parser.parse_args()
    burners = start_burners(args.burners)
    print(f"burners: {args.burners} (pids {', '.join(str(p.pid) for p in burners)}); "
          f"cores: {len(os.sched_getaffinity(0))}; load before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results = []
    try:
        for index in range(1, args.runs + 1):
            result = run_suite(args.pytest_args)
            results.append(result)
            verdict = "PASS" if result["passed"] else "FAIL"
            print(f"run {index}: {verdict}  {result['summary']}  "
                  f"(wall {result['wall_seconds']:.0f} s, load "
                  f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})", flush=True)
            for test in result["failed_tests"]:
                print(f"    {test}", flush=True)
    finally:
        stop_burners(burners)
    print(json.dumps({"runs": args.runs, "burners": args.burners,
                      "all_green": all(r["passed"] for r in results), "results": results}))
    sys.exit(0 if results and all(r["passed"] for r in results) else 1)


if __name__ == "__main__":
    main()
