"""``echo-bench dashboard`` over constructed nightly runs in the store's real format: the
planted 15 % slowdown and +4 WER points are marked and listed, summaries are computed once
per run, bad runs are skipped with their reason, and Chromium renders the pages."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench.analysis.history import flag_step_changes, history_table
from bench.cli import main
from bench.report.dashboard import build_dashboard
from bench.scripts.nightly_runs import NightlyTruth, Plant, nightly_shape, write_night
from bench.store import files
from bench.store.history import HistoryIndex
from bench.store.layout import MANIFEST, RECORDS, SCORES, SUMMARY
from bench.store.run_store import RunStore
from tests.integration.test_report import _chromium

NIGHTS = 5
SLOW = Plant(3, "L4", 40, "independent", slower=1.15)
# +4 points, as the constructed history plants it (bench.scripts.nightly_runs.default_plants):
# beyond the 1-point step by more than the interval over 48 twins is wide (+2 is not).
WORSE_WER = Plant(4, "A10G", 30, "independent", wer_points=4.0)


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five nights of two GPUs (8 cells, 24 prompts x 2 seeds): night 1 on random
    weights, night 2 adaptive, the slowdown from night 3, the WER step from night 4."""
    root = tmp_path_factory.mktemp("dashboard") / "runs"
    truth = NightlyTruth(nightly_shape(gpus=("A10G", "L4")), seed=3)
    with pytest.MonkeyPatch.context() as patch:
        # Durability is not under test here: 1,900 fsyncs cost seconds on a busy disk.
        patch.setattr(files.os, "fsync", lambda fd: None)
        for night in range(NIGHTS):
            write_night(root, truth, night, (SLOW, WORSE_WER), random_weights=night == 1,
                        adaptive=night == 2)
    return root


def _copy(root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "runs"
    shutil.copytree(root, copy)
    return copy


def test_planted_slowdown_and_wer_step_are_listed_and_nothing_else(nights: Path,
                                                                   tmp_path: Path) -> None:
    site = build_dashboard(_copy(nights, tmp_path), tmp_path / "site")
    found = sorted((s.run_id[-4:], s.hardware, s.cell_label.split(" gpu")[0], s.figure,
                    s.direction) for s in site.steps)
    assert found == [
        ("n003", "L4", "steps=40 cfg=independent len=640", "median RTF", "worse"),
        ("n004", "A10G", "steps=30 cfg=independent len=640", "corpus WER %", "worse"),
    ]
    slow = next(s for s in site.steps if s.figure == "median RTF")
    assert slow.change.startswith("x1.1") and slow.n_pairs == 48
    wer = next(s for s in site.steps if s.figure == "corpus WER %")
    assert 3.0 < float(wer.change.split()[0]) < 5.0  # e.g. "+3.71 WER points"
    assert site.runs == {"nightly": NIGHTS} and site.skipped == []
    # The spec page lists both at the top, before the first chart.
    page = (tmp_path / "site" / "nightly" / "index.html").read_text(encoding="utf-8")
    steps_table = page[page.index('id="steps"'):page.index("<svg")]
    assert steps_table.count("<tr class=\"worse\">") == 2
    assert page.count('class="step worse"') == 2  # one marker on each stepped chart


def test_history_flags_the_same_steps_from_the_same_summaries(
        nights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(nights, tmp_path)
    assert main(["history", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.count("<-- STEP") == 2
    assert "STEP: median RTF slower" in out and "STEP: corpus WER worse" in out
    assert "2 step changes flagged" in out
    # What the runs resolve, per figure, so a step below it is not read as "no change".
    resolved = out[out.index("what the runs resolve"):]
    wer = float(resolved.split("corpus WER ")[1].split(" points")[0])
    assert 0.2 < wer < 5 and "median RTF x1.0" in resolved and "SIM " in resolved
    # history summarised each run once and kept it beside the run
    assert len(list(root.glob(f"*/{SUMMARY}"))) == NIGHTS


def test_quality_steps_skip_over_a_random_weight_night(nights: Path, tmp_path: Path) -> None:
    flagged = flag_step_changes(history_table(_copy(nights, tmp_path)))
    night1 = flagged[flagged["run_id"].str.endswith("n001")]
    night2 = flagged[flagged["run_id"].str.endswith("n002")]
    # Night 1 ran random weights: its WER is no figure, and night 2's quality is compared
    # with night 0's instead.
    assert night1["corpus_wer"].isna().all()
    assert all({c.metric for c in changes} == {"rtf"} for changes in night1["changes"])
    assert all("wer_errors" in {c.metric for c in changes} for changes in night2["changes"])


def test_summaries_are_computed_once_and_again_when_the_run_changes(nights: Path,
                                                                    tmp_path: Path) -> None:
    root = _copy(nights, tmp_path)
    assert build_dashboard(root, tmp_path / "site").computed == NIGHTS
    assert build_dashboard(root, tmp_path / "site").computed == 0
    runs = sorted(p.parent for p in root.glob(f"*/{MANIFEST}"))
    # A run scored again (a new score line) is summarised again; the others are not.
    key = json.loads((runs[0] / RECORDS).read_text().splitlines()[0])["key"]
    with RunStore.open(runs[0]) as store:
        store.append_score(key, {"wer": 1.0, "ref_words": 10, "substitutions": 10, "hits": 0})
    # A torn summary file is summarised again, not trusted and not a skip.
    (runs[1] / SUMMARY).write_text('{"version": 1, "cel', encoding="utf-8")
    site = build_dashboard(root, tmp_path / "site")
    assert site.computed == 2 and site.skipped == []
    assert build_dashboard(root, tmp_path / "site").computed == 0


def test_bad_runs_are_skipped_with_the_reason_and_the_site_still_builds(
        nights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(nights, tmp_path)
    runs = sorted(p.parent for p in root.glob(f"*/{MANIFEST}"))
    before = {p: p.read_bytes() for p in runs[1].iterdir() if p.is_file()}
    # corrupt: a damaged line in the middle of records.jsonl, and no fresh parquet
    records = (runs[1] / RECORDS).read_text().splitlines()
    records[5] = records[5][:40]
    (runs[1] / RECORDS).write_text("\n".join(records) + "\n")
    (runs[1] / "records.parquet").unlink()
    # another spec: the folder's manifest says so, the index says nightly
    manifest = json.loads((runs[2] / MANIFEST).read_text())
    (runs[2] / MANIFEST).write_text(json.dumps({**manifest, "spec_name": "weekly"}))
    # incomplete: created, never finalised
    RunStore.create(root, run_id="unfinished", spec={}, spec_name="nightly", spec_hash="h",
                    environment={}).close()
    # missing: listed by the index, folder gone
    HistoryIndex(root).append({"run_id": "gone", "spec_name": "nightly", "path": "gone",
                               "status": "complete", "started_at": "2027-01-01T00:00:00+00:00"})
    assert main(["dashboard", "--root", str(root), "--out", str(tmp_path / "site")]) == 0
    out = capsys.readouterr().out
    assert "3 runs of 1 spec(s)" in out and "4 runs skipped" in out
    reasons = dict(re.findall(r"skipped (\S+): (.*)", out))
    assert reasons[runs[1].name].startswith("unreadable: ")
    assert "another spec" in reasons[runs[2].name] and "'weekly'" in reasons[runs[2].name]
    assert reasons["unfinished"].startswith("incomplete")
    assert "missing" in reasons["gone"]
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert 'id="skipped"' in page and "unfinished" in page
    # Nothing recorded was touched by the build (the bad run's files as we left them).
    assert (runs[1] / SCORES).read_bytes() == before[runs[1] / SCORES]
    assert not (runs[1] / SUMMARY).exists()


def test_bad_arguments_are_one_line_errors(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", "--root", str(tmp_path / "nope")]) == 2
    assert main(["dashboard", "--root", str(tmp_path), "--factor", "0.9"]) == 2
    (tmp_path / "file").write_text("x")
    assert main(["dashboard", "--root", str(tmp_path), "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("echo-bench: error: ") for e in err)
    assert "Traceback" not in "".join(err)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src", "xlink:href") and value:
                self.links.append(value)


def test_dashboard_renders_in_headless_chromium_at_1280(nights: Path, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary on PATH (CI installs it with apt-get install chromium)")
    root = _copy(nights, tmp_path)
    for run in root.glob(f"*/{MANIFEST}"):  # a rendered report for the points to link to
        (run.parent / "report.html").write_text("<p>report</p>", encoding="utf-8")
    site = build_dashboard(root, tmp_path / "site")
    slow = next(s for s in site.steps if s.figure == "median RTF")
    cell_page = tmp_path / "site" / "nightly" / f"{slow.cell_id}.html"
    spec_page = tmp_path / "site" / "nightly" / "index.html"
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
              "--window-size=1280,1400"]
    dom = subprocess.run([*common, "--dump-dom", cell_page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=60, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parser = _Links()
    parser.feed(dom.stdout)
    assert not [u for u in parser.links if re.match(r"[a-z]+://", u)]  # nothing external
    reports = [u for u in parser.links if u.endswith("/report.html")]
    # every point of every chart (RTF, WER, SIM, UTMOS, DNSMOS, memory) links to a report,
    # and each report link resolves to the run's file
    assert len(reports) >= NIGHTS * 5
    assert all((cell_page.parent / u).resolve().is_file() for u in reports)
    assert dom.stdout.count('class="step worse"') == 1
    assert dom.stdout.count("staged run") >= 5 and dom.stdout.count("random weights") >= 1
    # The spec's page (every cell's small charts) renders at 1280 px.
    shot = tmp_path / "index.png"
    result = subprocess.run([*common, f"--screenshot={shot}", spec_page.resolve().as_uri()],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and shot.stat().st_size > 20_000, result.stderr[-2000:]
    assert int.from_bytes(shot.read_bytes()[16:20], "big") == 1280  # PNG width


class _Volume:
    """A stand-in for the outputs Volume: counts reloads and commits, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def reload(self) -> None:
        self.calls.append("reload")

    def commit(self) -> None:
        self.calls.append("commit")


def test_the_nightly_publishes_the_site_beside_its_runs(nights: Path, tmp_path: Path) -> None:
    from bench.backends.dashboard_publish import publish_dashboard

    root = _copy(nights, tmp_path)
    volume = _Volume()
    site = publish_dashboard(root, volume)
    assert volume.calls == ["reload", "commit"]
    assert site.index == tmp_path / "dashboard" / "index.html" and site.index.is_file()
    assert len(site.steps) == 2
