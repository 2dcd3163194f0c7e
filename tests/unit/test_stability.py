"""The headline's stability under prompt resamples (bench.analysis.stability)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis.evidence import Evidence, cell_summary, evidence
from bench.analysis.stability import _PerCell, _weighted_median, resampled_stability
from bench.store.records import load_records
from tests.adaptive_runs import TrueCell, constructed_records, write_run


def test_weighted_median_is_the_median_of_the_repeated_values() -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        values = np.sort(np.concatenate([rng.normal(size=rng.integers(1, 9)),
                                         [np.inf] * int(rng.integers(0, 3))]))
        weights = rng.integers(0, 4, values.size).astype(np.float64)
        if not weights.sum():
            continue
        repeated = np.repeat(values, weights.astype(int))
        lo, hi = np.sort(repeated)[[(repeated.size - 1) // 2, repeated.size // 2]]
        expected = hi if np.isinf(hi) else (lo + hi) / 2
        assert _weighted_median(values, weights) == expected


def test_unit_weights_give_the_full_runs_figures() -> None:
    ev = evidence(pd.DataFrame(constructed_records(_clear(), n_prompts=10, seeds=(0, 1))))
    cells = cell_summary(ev)
    per_cell = _PerCell(ev.units, list(cells.index), {c: "base" for c in cells.index})
    medians, wers, base = per_cell.figures(np.ones(10))
    assert np.allclose(medians, cells["rtf_median"]) and np.allclose(wers, cells["corpus_wer"])
    assert np.allclose(base, cells.loc["base", "corpus_wer"])


def _clear() -> list[TrueCell]:
    return [TrueCell("base", 40, "independent", 0.48, 0.02),
            TrueCell("fast-good", 30, "alternating", 0.24, 0.02),
            TrueCell("fast-bad", 16, "joint", 0.13, 0.40)]


def test_a_clear_choice_is_named_by_every_resample() -> None:
    ev = evidence(pd.DataFrame(constructed_records(_clear(), n_prompts=20)))
    stability = resampled_stability(ev, 0.5).headline["A10G"]
    assert stability.choice == "fast-good"
    assert stability.same == 1.0 and not stability.others
    assert stability.text() == "same choice in 100% of 200 prompt resamples"


def test_a_choice_at_the_budgets_edge_is_shown_to_rest_on_the_prompts() -> None:
    # "edge" makes its errors on 3 of 20 prompts only, so its corpus WER is just under the
    # baseline's + 0.5 points on the full run and over it whenever a resample draws those
    # three prompts four times or more in all: the slower, error-free "safe" is then chosen.
    records = constructed_records([TrueCell("base", 40, "independent", 0.48, 0.0),
                                   TrueCell("safe", 30, "independent", 0.36, 0.0),
                                   TrueCell("edge", 30, "alternating", 0.24, 0.0)],
                                  n_prompts=20, words=100)
    edge = [r for r in records if r["cell_id"] == "edge"]
    for r in edge[:3]:  # 9 errors in 2000 words: 0.45 points over the baseline
        r["substitutions"], r["hits"] = 3, 97
    stability = resampled_stability(evidence(pd.DataFrame(records)), 0.5).headline["A10G"]
    assert stability.choice == "edge"
    assert 0.2 < stability.same < 0.8
    assert set(stability.others) == {"safe"}
    assert abs(stability.same + stability.others["safe"] - 1.0) < 1e-12
    assert "(else safe " in stability.text()
    assert "(else steps=30 cfg=independent " in stability.text({"safe": "steps=30 cfg=independent"})


def test_the_report_says_how_firmly_the_prompts_support_the_choice(tmp_path: Path) -> None:
    from bench.analysis.run_analysis import analyze_run
    from bench.report.markdown import render_markdown

    run = write_run(tmp_path, "few", constructed_records(_clear(), n_prompts=4))
    assert len(load_records(run)) == 12
    report = render_markdown(analyze_run(run, n_boot=50))
    line = next(x for x in report.splitlines() if "how firmly" in x)
    assert re.fullmatch(r"- A10G: how firmly the prompts support the choice: same choice in "
                        r"\d+% of 200 prompt resamples( \(else .*\))?; only 4 prompts: "
                        r"resamples of so few say little", line), line


def test_the_headline_reads_only_the_columns_the_resamples_keep() -> None:
    from bench.analysis.headline import headline, pick_headline
    from bench.analysis.stability import _HEADLINE_READS

    records = constructed_records(_clear(), n_prompts=8)
    records[8]["status"] = "failed"  # fast-good: no longer usable, so "base" is chosen
    ev = evidence(pd.DataFrame(records))
    baselines, cells, _ = pick_headline(cell_summary(ev), ev, 0.5)
    trimmed = cells[[c for c in _HEADLINE_READS if c in cells.columns]]
    whole, kept = headline(cells, baselines, 0.5), headline(trimmed, baselines, 0.5)
    assert [(c.cell_id, c.note, c.wer_limit) for c in kept] == \
        [(c.cell_id, c.note, c.wer_limit) for c in whole]
    assert [c.cell_id for c in whole] == ["base"] and "1 cell with failed" in whole[0].note


def test_frontier_stability_tells_a_settled_set_from_one_resting_on_a_near_tie() -> None:
    def run(base_errors: dict[int, int]) -> Evidence:
        # "good" says one word wrong on each of prompts 4-8; the slower "base" makes the
        # errors given here; "bad" is fast and far worse.
        records = constructed_records([TrueCell("base", 40, "independent", 0.48, 0.0),
                                       TrueCell("good", 30, "alternating", 0.24, 0.0),
                                       TrueCell("bad", 16, "joint", 0.13, 0.40)],
                                      n_prompts=20)
        for r in records:
            k = int(r["prompt_id"][1:])
            errors = {"base": base_errors.get(k, 0), "good": int(4 <= k <= 8)}.get(
                r["cell_id"], r["substitutions"])
            r.update(substitutions=errors, hits=r["ref_words"] - errors)
        return evidence(pd.DataFrame(records))

    # Base with two errors on every prompt (10 %) is behind "good" (at most 5 %) in every
    # draw: off the frontier, always.
    # Base with one error on each of prompts 0-3 (4 errors) is on it in the full run, and
    # off it in any draw that takes prompts 0-3 more often than prompts 4-8.
    settled = resampled_stability(run({k: 2 for k in range(20)}), 0.5).frontier
    assert settled.same_set == 1.0
    assert settled.membership == {"base": 0.0, "good": 1.0, "bad": 1.0}
    tied = resampled_stability(run({k: 1 for k in range(4)}), 0.5).frontier
    assert 0.2 < tied.same_set < 0.95
    assert tied.membership["base"] == tied.same_set  # the one place in doubt
    assert tied.membership["good"] == tied.membership["bad"] == 1.0
