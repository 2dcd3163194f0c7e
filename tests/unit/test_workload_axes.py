"""The workload axes and [[predictions]] in specs: values, ids, bad input, research.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from bench.spec.parser import load_spec, parse_spec
from bench.spec.sweep import SpecError
from tests.tiny import TINY_MODEL_TOML

# Parsing a spec does not read the clip, so any path will do.
SPEAKER = Path("/references/voice.flac")
SWEEPS = Path(__file__).resolve().parents[2] / "bench" / "sweeps"


def _spec(grid: str, *, prompts: str = 'set = "builtin"\nids = ["en-002"]',
          model_extra: str = "keep_blockwise = true\n", extra: str = "") -> str:
    return (TINY_MODEL_TOML + model_extra + f"[prompts]\n{prompts}\n[grid]\n{grid}\n" + extra)


def _parse(text: str):  # type: ignore[no-untyped-def]
    return parse_spec(text, base_dir=".", name="t")


def test_default_axes_leave_the_ids_of_shipped_specs_unchanged() -> None:
    # Pinned ids of shipped sweeps (computed before the workload axes existed).
    assert load_spec(SWEEPS / "smoke.toml").cells[0].id == "a5a0231030"
    assert load_spec(SWEEPS / "gate.toml").cells[0].id == "44136fa355"
    assert [c.id for c in load_spec(SWEEPS / "speed.toml").cells][:2] == ["9b23dd2a0a",
                                                                           "0bd33a4b18"]


def test_workload_values_are_canonical_and_shown_only_when_not_default() -> None:
    spec = _parse(_spec("sequence_length = [96]\nblock_sizes = [[8, 24, 64]]\n"
                        "block_steps = [[2, 4, 5]]\nblock_cfg = [[[2, 5], [2, 5], [3, 8]]]\n"
                        "concurrency = [1]\nchunk_workers = [1]",
                        extra="[[include]]\nsequence_length = 96\nconcurrency = 2\n"
                              'block_sizes = "unset"\nblock_steps = "unset"\n'
                              'block_cfg = "unset"\n'))
    blockwise, concurrent = spec.cells
    assert blockwise.block_sizes == (8, 24, 64) and blockwise.block_cfg == ((2.0, 5.0),
                                                                           (2.0, 5.0),
                                                                           (3.0, 8.0))
    assert "block_sizes=8/24/64" in blockwise.label and "block_cfg=2:5/2:5/3:8" in blockwise.label
    assert "concurrency" not in blockwise.label and "concurrency=2" in concurrent.label
    assert hash(blockwise)  # a Cell is a dict key


@pytest.mark.parametrize(("grid", "key", "fix"), [
    ("sequence_length = [96]\nblock_sizes = [[8, 24]]", "block_sizes",
     "sum to 32 latents but the cell's sequence_length is 96"),
    ("sequence_length = [640]\nblock_sizes = [[600, 100]]", "block_sizes", "above the 640"),
    ("sequence_length = [96]\nblock_sizes = [[32, 64]]\nblock_steps = [[2, 4, 5]]",
     "block_steps", "give one step count per block"),
    ("sequence_length = [96]\nblock_sizes = [[32, 64]]\nblock_cfg = [[[2, 5]]]", "block_cfg",
     "one [text, speaker] pair per block"),
    ("concurrency = [0]", "concurrency", ">= 1"),
    ("block_steps = [[2]]", "block_steps", "needs block_sizes"),
    ("speaker_seconds = [10]", "speaker_seconds", "set [prompts].speaker"),
])
def test_bad_workload_values_are_one_line_naming_key_and_fix(grid: str, key: str,
                                                             fix: str) -> None:
    with pytest.raises(SpecError) as err:
        _parse(_spec(grid))
    message = str(err.value)
    assert "\n" not in message and key in message and fix in message
    assert err.value.key is not None and err.value.key.endswith(key)


def test_multi_block_schedules_need_the_blockwise_modules() -> None:
    with pytest.raises(SpecError, match="keep_blockwise = true"):
        _parse(_spec("sequence_length = [96]\nblock_sizes = [[32, 64]]", model_extra=""))


def test_speaker_seconds_with_a_speaker_clip_parses() -> None:
    spec = _parse(_spec("speaker_seconds = [2, 30]",
                        prompts=f'set = "builtin"\nids = ["en-002"]\nspeaker = "{SPEAKER}"'))
    assert [c.speaker_seconds for c in spec.cells] == [2.0, 30.0]


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(_spec("concurrency = [0]"))
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "grid.concurrency" in err[0]


def test_speaker_seconds_on_a_jsonl_set_without_speakers_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.jsonl").write_text('{"id": "a", "text": "Hello there."}\n')
    path = tmp_path / "s.toml"
    path.write_text(_spec("speaker_seconds = [5]", prompts='set = "p.jsonl"'))
    assert main(["sweep", str(path), "--dry-run"]) == 2
    assert "speaker_seconds needs speaker references" in capsys.readouterr().err


PREDICTIONS = """
[[predictions]]
name = "base"
reference_seconds = 12.0
[[predictions]]
name = "fewer steps"
change = { num_steps = 4 }
speedup = 1.3
"""


def test_predictions_name_the_baseline_and_proposal_cells_per_gpu() -> None:
    spec = _parse(_spec('gpu = ["A10G", "H100"]\nnum_steps = [8]',
                        extra='[[include]]\ngpu = "A10G"\nnum_steps = 4\n'
                              '[[include]]\ngpu = "H100"\nnum_steps = 4\n' + PREDICTIONS))
    ids = {(c.gpu, c.sampler.num_steps): c.id for c in spec.cells}
    rows = [(p.name, p.gpu, p.baseline_cell, p.candidate_cell) for p in spec.predictions]
    assert rows == [
        ("base", "A10G", ids["A10G", 8], None), ("base", "H100", ids["H100", 8], None),
        ("fewer steps", "A10G", ids["A10G", 8], ids["A10G", 4]),
        ("fewer steps", "H100", ids["H100", 8], ids["H100", 4]),
    ]


def test_a_prediction_without_its_cell_is_bad_input() -> None:
    with pytest.raises(SpecError, match=r"predictions\[2\].*no cell has the proposal"):
        _parse(_spec("num_steps = [8]", extra=PREDICTIONS))


def test_research_toml_dry_runs_on_modal_with_every_proposal_and_a_cost(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", str(SWEEPS / "research.toml"), "--backend", "modal",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    spec = load_spec(SWEEPS / "research.toml")
    assert {c.gpu for c in spec.cells} == {"A10G", "H100"}
    for prediction in spec.predictions:
        assert prediction.name in out
        for cell in (prediction.baseline_cell, prediction.candidate_cell):
            assert cell is None or cell in out
    assert {p.name for p in spec.predictions} >= {
        "baseline", "30 steps", "25 steps", "alternating CFG", "joint CFG", "480 latents",
        "blockwise 32/128/480", "2 containers", "2 concurrent inputs",
        "low VRAM: bf16 codec, 576 latents"}
    assert "USD" in out and "total" in out and "container start" in out
