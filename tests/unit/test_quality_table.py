"""Quality beyond WER from constructed records: per-cell means with intervals, skipped
counts, frontiers, labels for random weights, the Markdown block and the UTMOS gate."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest

from bench.analysis.cells import NOT_MEANINGFUL
from bench.analysis.quality import QualitySection, metric_columns, quality_figures, quality_markdown
from bench.gate.quality import check_naturalness, paired_mean_loss
from bench.gate.verdict import GateThresholds, decide
from bench.scoring.protocols import PROTOCOLS, protocol_fields


def _record(cell: str, prompt: str, seed: int, *, rtf: float, sim: float | None,
            utmos: float | None, random_weights: bool = False,
            protocol: str = "whisper-normalizer", transcript: str = "hello world",
            **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "key": f"{cell}/{prompt}/{seed}/0", "cell_id": cell, "cell_label": f"label {cell}",
        "prompt_id": prompt, "seed": seed, "status": "ok", "rtf": rtf, "rtf_full": rtf,
        "text": "hello world", "transcript": transcript, "random_weights": random_weights,
        "quality_meaningful": not random_weights, "score_status": "ok",
        "sim": sim, "utmos": utmos, "dnsmos_ovrl": None if utmos is None else utmos - 0.5,
        **protocol_fields("hello world", transcript, PROTOCOLS[protocol]),
    }
    row.update(extra)
    return row


def _records(random_weights: bool = False) -> pd.DataFrame:
    rows = []
    sims = {"fast": [0.60, 0.62, 0.58, 0.64], "slow": [0.70, 0.72, 0.68, 0.74]}
    for cell, rtf in (("fast", 0.1), ("slow", 0.3)):
        for i, (prompt, seed) in enumerate([("p1", 0), ("p1", 1), ("p2", 0), ("p2", 1)]):
            rows.append(_record(cell, prompt, seed, rtf=rtf, sim=sims[cell][i],
                                utmos=3.0 + 0.1 * i, random_weights=random_weights))
    # One generation the UTMOS model refused: recorded as skipped, not as a number.
    rows.append(_record("slow", "p3", 0, rtf=0.3, sim=0.71, utmos=None,
                        random_weights=random_weights, utmos_skipped="too short"))
    return pd.DataFrame(rows)


def test_means_intervals_and_skips() -> None:
    figures = quality_figures(_records(), n_boot=200)
    fast, slow = figures.loc["fast"], figures.loc["slow"]
    assert fast["sim"] == pytest.approx(0.61)
    assert fast["sim_lo"] <= fast["sim"] <= fast["sim_hi"]
    assert slow["sim"] == pytest.approx((0.70 + 0.72 + 0.68 + 0.74 + 0.71) / 5)
    assert slow["utmos"] == pytest.approx(3.15) and slow["utmos_n"] == 4
    assert slow["utmos_n_skipped"] == 1 and slow["utmos_skip_reasons"] == "1 too short"
    assert slow["dnsmos_ovrl"] == pytest.approx(2.65)
    assert fast["wer_protocol"] == "whisper-normalizer" and fast["wer"] == 0.0
    assert "sim_gt" not in figures.columns  # no record carries it
    assert [m.name for m in metric_columns(_records())] == ["sim", "utmos", "dnsmos_ovrl"]


def test_speed_frontiers_against_sim_and_mos() -> None:
    figures = quality_figures(_records(), n_boot=50)
    # fast is faster, slow has the better SIM: both on the SIM front.
    assert figures["front_sim"].tolist() == [True, True]
    # Same UTMOS means: the slower cell is dominated.
    assert figures.loc["fast", "utmos"] == pytest.approx(3.15)
    assert figures["front_utmos"].tolist() == [True, False]


def test_headline_wer_follows_the_protocol() -> None:
    rows = [_record("c", "p1", 0, rtf=0.1, sim=None, utmos=None, protocol="seed-tts-eval",
                    transcript="hello"),
            _record("c", "p2", 0, rtf=0.1, sim=None, utmos=None, protocol="seed-tts-eval",
                    transcript="hello world")]
    row = quality_figures(pd.DataFrame(rows), n_boot=50).loc["c"]
    assert row["wer_protocol"] == "seed-tts-eval"
    assert row["wer"] == pytest.approx(0.25)  # mean of 0.5 and 0


def _section(records: pd.DataFrame, controls: pd.DataFrame | None = None) -> QualitySection:
    figures = quality_figures(records, n_boot=50)
    return QualitySection(figures, controls if controls is not None else pd.DataFrame(),
                          metric_columns(records), "whisper-normalizer")


def test_markdown_names_the_protocol_and_shows_controls() -> None:
    control = pd.DataFrame([_record("control-ground-truth", "p1", 0, rtf=math.nan, sim=0.73,
                                    utmos=4.1, control=True)])
    lines = quality_markdown(_section(_records(), quality_figures(control, n_boot=50)))
    text = "\n".join(lines)
    assert "corpus WER (whisper-normalizer)" in text
    assert "| label slow | 0.00 % [0.00, 0.00] | 0.710 [" in text and "(1 not scored)" in text
    assert "| control: label control-ground-truth |" in text and "0.730" in text
    assert "Frontier of speed against SIM: label fast, label slow" in text
    assert NOT_MEANINGFUL not in text


def test_random_weights_say_so_once_with_no_table_or_figure() -> None:
    from bench.analysis.quality import quality_html
    from bench.report.quality_plots import frontier_beyond_wer

    section = _section(_records(random_weights=True))
    lines = quality_markdown(section)
    text = "\n".join(lines)
    # One line in place of the table: no row, no number from noise, no frontier.
    assert text.count(NOT_MEANINGFUL) == 1
    assert not any(line.startswith("|") for line in lines)
    assert "0.6" not in text and "Frontier" not in text
    assert "no figure of WER, SIM, UTMOS, DNSMOS OVRL is shown for all 2 rows (2 cells)" in text
    html = quality_html(section)
    assert html.count(NOT_MEANINGFUL) == 1 and "<table" not in html
    assert frontier_beyond_wer(section.figures, section.controls, section.metrics) is None


def test_meaningful_rows_keep_their_table_and_figure_beside_random_ones() -> None:
    from bench.analysis.quality import quality_html
    from bench.report.quality_plots import frontier_beyond_wer

    real = _records()
    noise = _records(random_weights=True).replace({"cell_id": {"fast": "rfast", "slow": "rslow"},
                                                   "cell_label": {"label fast": "label rfast",
                                                                  "label slow": "label rslow"}})
    section = _section(pd.concat([real, noise], ignore_index=True))
    html = quality_html(section)
    assert 'id="quality-table"' in html and "label slow" in html and "0.710 [" in html
    # The random cells are named once, in the one line, not given rows of their own.
    assert html.count(NOT_MEANINGFUL) == 1 and "2 rows (label rfast, label rslow)" in html
    assert "<td>label rfast</td>" not in html
    assert frontier_beyond_wer(section.figures, section.controls, section.metrics) is not None


def test_utmos_gate_passes_a_match_and_fails_a_clear_loss() -> None:
    t = GateThresholds(min_prompts=2, utmos_margin=0.1)
    base = pd.DataFrame([_record("b", f"p{i}", 0, rtf=1.0, sim=0.7, utmos=3.5 + 0.01 * i)
                         for i in range(12)])
    same = base.assign(cell_id="c")
    worse = base.assign(cell_id="c", utmos=base["utmos"] - 0.5)
    assert [c.status for c in check_naturalness(base, same, t)] == ["PASS"]
    (check,) = check_naturalness(base, worse, t)
    assert check.status == "FAIL" and check.name == "quality.utmos"
    keys, loss = paired_mean_loss(base, worse, "utmos", 0.1, 0.05) or ([], None)
    assert len(keys) == 12 and loss is not None and loss.call == "FAIL"
    assert loss.estimate == pytest.approx(0.5) and loss.low <= 0.5 <= loss.high
    verdict = decide(base, worse, t)
    assert verdict.status == "FAIL" and "quality.utmos" in verdict.headline


def test_utmos_gate_absent_without_scores_or_with_random_weights() -> None:
    t = GateThresholds()
    base = pd.DataFrame([_record("b", "p1", 0, rtf=1.0, sim=0.7, utmos=None)])
    assert check_naturalness(base, base, t) == []
    random = pd.DataFrame([_record("b", "p1", 0, rtf=1.0, sim=0.7, utmos=3.0,
                                   random_weights=True)])
    assert check_naturalness(random, random, t) == []


def test_gate_threshold_rejects_a_negative_utmos_margin() -> None:
    from bench.core.errors import UserError

    with pytest.raises(UserError, match="utmos_margin must be a number >= 0"):
        GateThresholds.from_table({"utmos_margin": -1})


def test_html_block_and_frontier_plot() -> None:
    from bench.analysis.quality import quality_html
    from bench.report.quality_plots import frontier_beyond_wer

    section = _section(_records())
    html = quality_html(section)
    assert 'id="quality-table"' in html and "0.710 [" in html and "UTMOS" in html
    png = frontier_beyond_wer(section.figures, section.controls, section.metrics)
    assert png is not None and png.startswith(b"\x89PNG")
    unscored = quality_figures(pd.DataFrame([_record("c", "p1", 0, rtf=0.1, sim=None,
                                                     utmos=None)]), n_boot=50)
    assert frontier_beyond_wer(unscored, pd.DataFrame(), []) is None


def test_history_carries_sim_and_utmos(tmp_path: Any) -> None:
    from bench.analysis.history import history_table
    from bench.store.run_store import RunStore

    for random_weights in (False, True):
        store = RunStore.create(tmp_path, run_id=f"random-{random_weights}", spec={},
                                spec_name="nightly", spec_hash="h", environment={})
        with store:
            for row in _records(random_weights).to_dict("records"):
                store.append({k: v for k, v in row.items() if k in ("key", "status", "cell_id",
                              "cell_label", "prompt_id", "seed", "rtf", "text",
                              "random_weights")})
                store.append_score(row["key"], {k: v for k, v in row.items()
                                                if k in ("sim", "utmos", "wer", "ref_words",
                                                         "wer_protocol", "quality_meaningful",
                                                         "utmos_skipped")})
            store.finalize("complete")
    history = history_table(tmp_path, "nightly")
    assert len(history) == 4
    real = history[history["run_id"] == "random-False"]
    random = history[history["run_id"] == "random-True"]
    assert real["sim"].tolist() == pytest.approx([0.61, 0.71])
    assert random["sim"].isna().all() and random["utmos"].isna().all()


def test_a_metric_only_the_control_has_still_renders(tmp_path: Any) -> None:
    # Cells whose SIM was skipped (no speaker reference) beside a control row that has it:
    # the report read figures["sim"] of the cells and raised KeyError (the smoke sweep).
    from bench.analysis.quality import quality_html, quality_section
    from bench.report.quality_plots import frontier_beyond_wer
    from bench.store.run_store import RunStore

    run = RunStore.create(tmp_path / "runs", spec={}, spec_name="s", spec_hash="h",
                          environment={})
    run.close()
    control = run.path / "controls" / "ground-truth"
    truth = RunStore.create(control.parent, spec={}, spec_name="gt", spec_hash="g",
                            environment={}, run_id="ground-truth")
    truth.close()
    cells = pd.DataFrame([_record("c", "p1", 0, rtf=0.1, sim=None, utmos=None,
                                  sim_skipped="no speaker reference")])
    truth_rows = pd.DataFrame([_record("gt", "p1", 0, rtf=math.nan, sim=0.8, utmos=None,
                                       control=True)])
    import bench.store.records

    original = bench.store.records.load_records
    bench.store.records.load_records = lambda path: truth_rows if path == control else original(path)
    try:
        section = quality_section(run.path, cells, n_boot=50)
    finally:
        bench.store.records.load_records = original
    assert [m.name for m in section.metrics] == ["sim"]
    assert "sim" in section.figures.columns and math.isnan(section.figures["sim"].iloc[0])
    assert "SIM" in quality_html(section)
    frontier_beyond_wer(section.figures, section.controls, section.metrics)
