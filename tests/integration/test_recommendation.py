"""The property of issue 15 on a stored run: fast cells that speak the wrong words, are
silent, or failed every generation are never recommended, in the HTML and the Markdown
report alike (both read the run through the store, as `echo-bench report` does)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bench.report import render_run_report
from bench.store.run_store import RunStore
from tests.unit.test_analysis import rec, scored

TEXT = "the quick brown fox jumps over the lazy dog again"
SCORE_FIELDS = ("asr_model", "asr_random", "score_status", "transcript", "transcript_norm",
                "reference_norm", "ref_words", "hits", "substitutions", "deletions",
                "insertions", "wer", "cer", "empty_hyp", "quality_meaningful")
LABELS = {"base": "steps=40 baseline", "good": "steps=30 good", "wrong": "steps=4 wrong-words",
          "silent": "steps=6 silent", "failed": "steps=5 all-failed"}


def _cell(name: str, i: int, steps: int, t: float, errors: int | None) -> dict[str, Any]:
    r = rec(name, f"p{i}", steps=steps, t_sampling=t + i, nfe=steps * 2, reserved=8e9,
            text=TEXT, cell_label=LABELS[name])
    if errors is None:
        return r
    return {**scored(r, errors), "asr_model": "fake-asr", "asr_random": False,
            "score_status": "ok", "transcript": "x"}


def _generations() -> list[dict[str, Any]]:
    """Six prompts; the baseline and a good cell, and three faster cells: wrong words
    (90 % WER), silent (scored as the scorer scores silence), out of memory every time."""
    out = []
    for i in range(6):
        out += [_cell("base", i, 40, 10.0, 1), _cell("good", i, 30, 7.0, 1),
                _cell("wrong", i, 4, 0.5, 9)]
        silent = _cell("silent", i, 6, 0.8, None)
        silent.update(audio_silent=True, rtf=None, audio_seconds=0.0, asr_model="fake-asr",
                      score_status="skipped_silent_audio", transcript="", ref_words=10,
                      hits=0, substitutions=0, deletions=10, insertions=0, wer=1.0, cer=1.0,
                      empty_hyp=True, quality_meaningful=True, asr_random=False)
        out.append(silent)
        failed = _cell("failed", i, 5, 0.6, None)
        out.append({k: failed[k] for k in ("key", "cell_id", "cell_label", "prompt_id", "seed",
                                           "repeat", "gpu", "device_name", "num_steps",
                                           "cfg_mode", "sequence_length", "text")}
                   | {"status": "failed", "error": "OutOfMemoryError: CUDA out of memory",
                      "error_type": "OutOfMemoryError"})
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("recommend")
    store = RunStore.create(root, spec={"name": "bad-fast-cells"}, spec_name="bad-fast-cells",
                            spec_hash="h", environment={"git_commit": "c0ffee"})
    with store:
        for g in _generations():
            store.append({k: v for k, v in g.items() if k not in SCORE_FIELDS})
            if "asr_model" in g:
                store.append_score(g["key"], {k: g[k] for k in SCORE_FIELDS if k in g})
        store.finalize("complete")
    return store.path


def _headline_html(text: str) -> str:
    return text.split('<table class="headline"', 1)[1].split("</table>", 1)[0]


def _headline_md(text: str) -> str:
    return text.split("**Best settings per hardware**", 1)[1].split("\n\n", 2)[1]


@pytest.mark.parametrize("fmt", ["html", "md"])
def test_bad_fast_cells_are_never_recommended(run_dir: Path, fmt: str, tmp_path: Path) -> None:
    text = render_run_report(run_dir, out=tmp_path / f"report.{fmt}", fmt=fmt,
                             audio=False).read_text(encoding="utf-8")
    table = _headline_html(text) if fmt == "html" else _headline_md(text)
    assert LABELS["good"] in table
    for bad in ("wrong", "silent", "failed"):
        assert LABELS[bad] not in table, (fmt, bad)
    # The WER budget stayed on (no "speed-only" choice) and the left-out cells are said.
    assert "speed-only" not in table
    assert re.search(r"2 cells with failed, NaN or\s+silent generations left out", text)


def test_markdown_lists_the_cells_never_recommended(run_dir: Path, tmp_path: Path) -> None:
    text = render_run_report(run_dir, out=tmp_path / "r.md", fmt="md").read_text("utf-8")
    never = text.split("**Never recommended**", 1)[1]
    assert "0 failed, 0 NaN, 6 silent of 6 (100 % no speech)" in never
    assert "6 failed, 0 NaN, 0 silent of 6 (100 % no speech)" in never


def test_html_shows_the_no_speech_share_and_the_oom_cell_fits_nothing(
        run_dir: Path, tmp_path: Path) -> None:
    text = render_run_report(run_dir, out=tmp_path / "r.html", audio=False).read_text("utf-8")
    cells = text.split('id="cells-table"', 1)[1].split("</table>", 1)[0]
    rows = {name: next(r for r in cells.split("<tr") if f"<code>{name}</code>" in r)
            for name in ("silent", "good")}
    assert ">100 %</td>" in rows["silent"] and ">0 %</td>" in rows["good"]
    vram = text.split('id="vram-table"', 1)[1].split("</table>", 1)[0]
    failed_row = next(r for r in vram.split("<tr") if LABELS["failed"] in r)
    # A10G: the 16 and 24 GB budgets are where it ran out; the larger ones unknown.
    assert failed_row.count(">OOM<") == 2
