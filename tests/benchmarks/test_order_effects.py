"""Wall-clock order effects on the tiny random model on this machine's CPU (issue 15),
printed, never asserted.

The default test run checks the same properties on a cost clock
(tests/integration/test_interleaving.py): there a timing is exactly what a generation
paid, so the checks hold on a busy machine (issue 22). Here the real clock shows what is
left on this machine: the first/second ratio of two identical cells' median totals
(1.0 when run order does not matter) and the gate's verdict on 4x the NFE with CPU
burners beside the first half of its generations.

    python -m pytest tests/benchmarks/test_order_effects.py -o norecursedirs= -s
"""

from __future__ import annotations

import argparse
import json

import pytest

from bench.scripts.order_effects import busy_gate, first_cell


def test_identical_cells_first_over_second_ratio() -> None:
    result = first_cell(argparse.Namespace(prompts=4, repeats=1))
    print(json.dumps(result, default=str))


@pytest.mark.parametrize("grouped", [False, True], ids=["interleaved", "cell-after-cell"])
def test_busy_gate_on_4x_the_nfe(grouped: bool) -> None:
    result = busy_gate(argparse.Namespace(pairs=10, burners=4, grouped=grouped))
    print(json.dumps(result, default=str))
