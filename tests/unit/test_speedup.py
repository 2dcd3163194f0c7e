"""The headline's speed-up is an RTF ratio that agrees with the median RTFs beside it,
also when the two cells produce different amounts of audio (different sequence lengths);
the time ratios of the predicted-speed-up table stay time ratios."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.analysis.cells import summarize_cells
from bench.analysis.headline import choose_baselines, headline
from bench.analysis.speedup import add_speedups
from tests.unit.test_analysis import rec

# (prompt, baseline seconds, baseline audio s, short cell seconds, short cell audio s):
# the 64-latent cell takes far less time per prompt (it generates ~3 s of audio, not
# ~30 s), yet more compute per second of speech: faster in time, slower in RTF.
PROMPTS = (("a", 12.0, 30.0, 2.0, 3.0), ("b", 10.0, 28.0, 1.5, 2.9),
           ("c", 14.0, 29.0, 2.6, 2.5))


def _table(prompts: tuple[tuple[str, float, float, float, float], ...] = PROMPTS
           ) -> pd.DataFrame:
    rows = []
    for prompt, b_t, b_audio, s_t, s_audio in prompts:
        rows.append(rec("base", prompt, steps=40, length=640, t_sampling=b_t - 1.0, nfe=100,
                        audio=b_audio, quality_meaningful=False))
        rows.append(rec("short", prompt, steps=2, length=64, t_sampling=s_t - 1.0, nfe=5,
                        audio=s_audio, quality_meaningful=False))
    return pd.DataFrame(rows)


def _analysed(table: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    cells = summarize_cells(table, n_boot=20)
    baselines = choose_baselines(cells)
    cells = add_speedups(cells, table, baselines)
    return cells, headline(cells, baselines)


def test_rtf_speedup_agrees_with_the_medians_for_different_lengths() -> None:
    cells, (choice,) = _analysed(_table())
    base, short = cells.loc["base"], cells.loc["short"]
    # The column is the ratio of the two medians the report shows beside it.
    assert short["speedup_rtf"] == pytest.approx(base["rtf_median"] / short["rtf_median"])
    # The short cell is slower per second of speech, so its speed-up is below 1 ...
    assert short["rtf_median"] > base["rtf_median"]
    assert short["speedup_rtf"] < 1.0
    # ... while the time ratio (per prompt, ignoring the audio) says 5-7x "faster".
    assert short["speedup_total"] == pytest.approx(12.0 / 2.0)
    assert cells.loc["base", "speedup_rtf"] == pytest.approx(1.0)
    # Speed-only choice (random weights): the faster RTF, the baseline, with its speed-up.
    assert choice.cell_id == "base"
    assert choice.speedup_rtf == pytest.approx(1.0)


def test_headline_speedup_is_the_rtf_ratio_of_its_pick() -> None:
    # Give the short cell more audio so it wins on RTF: the headline's speed-up must then
    # be above 1 and equal the ratio of the medians.
    longer = tuple((p, b_t, b_a, s_t, s_a * 10) for p, b_t, b_a, s_t, s_a in PROMPTS)
    cells, (choice,) = _analysed(_table(longer))
    assert choice.cell_id == "short"
    assert choice.rtf == pytest.approx(cells.loc["short", "rtf_median"])
    assert choice.speedup_rtf == pytest.approx(
        cells.loc["base", "rtf_median"] / cells.loc["short", "rtf_median"])
    assert choice.speedup_rtf > 1.0


def test_rtf_speedup_uses_only_the_pairs_both_cells_ran() -> None:
    # An adaptive run: the short cell stopped after prompt a. Its speed-up is against the
    # baseline's RTF on prompt a alone, not the baseline's median over all three.
    table = _table()
    table = table[(table["cell_id"] == "base") | (table["prompt_id"] == "a")]
    cells, _ = _analysed(table)
    assert cells.loc["short", "n_pairs"] == 1
    assert cells.loc["short", "speedup_rtf"] == pytest.approx((12.0 / 30.0) / (2.0 / 3.0))


def test_silent_generations_make_the_rtf_speedup_zero_not_flattering() -> None:
    table = _table()
    table.loc[table["cell_id"] == "short", "audio_silent"] = True
    cells, _ = _analysed(table)
    # Every generation of the short cell is silent: infinite RTF, speed-up 0.
    assert cells.loc["short", "speedup_rtf"] == 0.0
    assert math.isinf(cells.loc["short", "rtf_median"])
