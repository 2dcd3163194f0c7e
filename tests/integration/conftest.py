from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny import TINY_MODEL_TOML

TINY_SPEC = """
name = "tiny"
""" + TINY_MODEL_TOML + """[prompts]
set = "builtin"
ids = ["en-002", "en-010"]
[grid]
num_steps = [2]
cfg_mode = ["none", "independent"]
sequence_length = [16, 24]
[measure]
warmup = 1
repeats = {repeats}
seeds = [0, 1]
score = {score}
asr = "random:tiny"
asr_device = "cpu"
"""


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Path:
    """A 4-cell sweep of the tiny random model: 2 prompts x 2 seeds per cell, no scoring."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SPEC.format(repeats=1, score="false"))
    return path
