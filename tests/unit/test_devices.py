"""A record that ran on another card than its cell's GPU is flagged (issue 35 item 8)."""

from __future__ import annotations

import pandas as pd

from bench.analysis.devices import device_mismatch_notes
from bench.analysis.prices import load_prices


def test_a_cell_run_on_another_card_is_noted_once_per_card() -> None:
    records = pd.DataFrame([
        {"cell_id": "h", "gpu": "H100", "device_name": "NVIDIA H200"},  # Modal upgraded it
        {"cell_id": "h", "gpu": "H100", "device_name": "NVIDIA H200"},
        {"cell_id": "h", "gpu": "H100", "device_name": "NVIDIA H100 80GB HBM3"},
        {"cell_id": "a", "gpu": "A10G", "device_name": "NVIDIA A10"},  # alias: same card
        {"cell_id": "l", "gpu": "L4", "device_name": "NVIDIA L4"},
        {"cell_id": "x", "gpu": "L4", "device_name": "Some Future Card"},  # unknown: not judged
        {"cell_id": "c", "gpu": None, "device_name": "cpu"},  # a local CPU run
    ])
    notes = device_mismatch_notes(records, load_prices())
    assert notes == ["cell h asked for H100 but 2 generation(s) ran on NVIDIA H200: its timings "
                     "and cost are that card's, not H100's (pin it with H100! on Modal)"]
    assert device_mismatch_notes(records.drop(columns=["gpu"]), load_prices()) == []
