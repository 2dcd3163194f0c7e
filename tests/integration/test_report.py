"""The HTML and Markdown reports of a tiny real run: structure, escaping, no network, and
(where Chromium exists) what a browser renders."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench.backends.local import LocalBackend
from bench.cli import main
from bench.report import render_run_report
from bench.run.runner import run_sweep
from bench.spec.parser import parse_spec
from bench.store.layout import SCORES
from bench.store.records import load_records
from tests.tiny import TINY_MODEL_TOML

XSS = "<script>alert(1)</script>"

SPEC = """
name = "tiny"
""" + TINY_MODEL_TOML + """[prompts]
set = "prompts.jsonl"
[grid]
num_steps = [1, 2]
sequence_length = [32]
[measure]
warmup = 0
score = false
"""


def make_tiny_run(root: Path, spec_dir: Path) -> Path:
    """A two-cell, two-prompt run of the tiny random model (one prompt carries markup)."""
    spec_dir.mkdir(parents=True, exist_ok=True)
    prompts = [{"id": "p-xss", "text": f"Say {XSS} twice."},
               {"id": "p-plain", "text": "Good morning."}]
    (spec_dir / "prompts.jsonl").write_text(
        "".join(json.dumps(p) + "\n" for p in prompts), encoding="utf-8")
    spec = parse_spec(SPEC, base_dir=spec_dir, name="tiny")
    outcome = run_sweep(spec, LocalBackend(), root=root, progress=False)
    return outcome.run_dir


def add_fake_scores(run_dir: Path, *, meaningful: bool) -> None:
    """Score lines as the scorer writes them (fields merged into records by the store)."""
    records = load_records(run_dir)
    with open(run_dir / SCORES, "a", encoding="utf-8") as f:
        for i, key in enumerate(records["key"]):
            errors = i % 3
            f.write(json.dumps({
                "key": key, "asr_model": "random:tiny", "asr_random": not meaningful,
                "transcript": "good morning", "transcript_norm": "good morning",
                "reference_norm": "good morning", "ref_words": 4, "hits": 4 - errors,
                "substitutions": errors, "deletions": 0, "insertions": 0,
                "wer": errors / 4, "cer": errors / 12, "empty_hyp": False,
                "quality_meaningful": meaningful,
            }) + "\n")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("report")
    return make_tiny_run(base / "runs", base / "spec")


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.audio: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "audio":
            self.audio.append(values.get("src") or "")
        for name in ("src", "href", "action", "poster"):
            if values.get(name):
                self.links.append(str(values[name]))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Collector:
    parser = _Collector()
    parser.feed(html)
    parser.close()
    return parser


def test_html_report_is_self_contained_and_escaped(tiny_run: Path) -> None:
    from PIL import Image

    path = render_run_report(tiny_run)
    assert path == tiny_run / "report.html"
    html = path.read_text(encoding="utf-8")
    parsed = _parse(html)
    for cell_id in load_records(tiny_run)["cell_id"].unique():
        assert cell_id in html
    assert len(parsed.images) >= 5
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        image.verify()
    assert not re.search(r"https?://", html), "the report must not reference any URL"
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # Only our own sorting script; no script element came from the prompt.
    assert html.count("<script") == 1
    for src in parsed.audio:
        assert not src.startswith(("/", "file:")) and (tiny_run / src).is_file()
    assert "Quality not scored" in html
    # The headline table's stability column, one entry per hardware.
    assert "<th>stability</th>" in html
    assert re.search(r"<td>same choice in \d+% of 200 prompt resamples", html)
    # Each frontier cell's place under the same resamples (unscored: speed alone).
    assert re.search(r'<span class="tag">front \d+%</span>', html)
    assert re.search(r"the whole set comes out the same in \d+ % of them", html)


def test_random_quality_is_flagged_everywhere(tmp_path: Path, tiny_run: Path) -> None:
    run = tmp_path / "runs" / tiny_run.name
    shutil.copytree(tiny_run, run)
    add_fake_scores(run, meaningful=False)
    html = render_run_report(run).read_text(encoding="utf-8")
    assert "Quality figures not meaningful: random weights" in html
    assert "not meaningful (random weights)" in html
    assert not re.search(r"\d+\.\d\d %", html.split('id="cells-table"')[1].split("</table>")[0])
    # No frontier on random WER: the first figure is speed per cell, no cell is "front".
    assert '<h2 id="frontier">Speed per cell</h2>' in html
    assert '<span class="tag">front</span>' not in html
    md = render_run_report(run, fmt="md").read_text(encoding="utf-8")
    assert "not meaningful" in md and "random weights" in md


def test_scored_report_and_markdown_comparison(tmp_path: Path, tiny_run: Path) -> None:
    old, new = tmp_path / "runs" / "old", tmp_path / "runs" / "new"
    shutil.copytree(tiny_run, old)
    shutil.copytree(tiny_run, new)
    for run in (old, new):
        add_fake_scores(run, meaningful=True)
    html = render_run_report(new, baseline=old).read_text(encoding="utf-8")
    assert "not meaningful" not in html
    assert '<h2 id="frontier">Speed/quality frontier</h2>' in html
    # The page says what the noise figure is, not just that a cell is unstable.
    assert "spread of time per unit of work" in html and "echo_tts.flops" in html
    # ... and how the machine pace enters them; two cells are too few for a pace of
    # their own (a window of neighbours would be mostly the cell itself), so no figure.
    assert "relative to the machine pace" in html
    assert "Machine pace over this run" not in html
    assert "Changes against run" in html
    out = tmp_path / "summary.md"
    md = render_run_report(new, baseline=old, fmt="md", out=out)
    text = md.read_text(encoding="utf-8")
    assert md == out
    assert "| hardware | choose |" in text and "Changes against run" in text
    assert "+0.00 pts" in text  # the same scores on both sides: no change


def test_report_command_prints_the_path(tiny_run: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.md"
    assert main(["report", str(tiny_run), "--format", "md", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["runs", "--root", str(tiny_run.parent)]) == 0
    assert tiny_run.name in capsys.readouterr().out
    assert main(["history", "--root", str(tiny_run.parent)]) == 0
    assert "step change" in capsys.readouterr().out


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


#: Injected into a copy of the page: after layout, every table's width against the box it
#: sits in and the window, written into the DOM that --dump-dom prints.
_MEASURE = """<script>
window.addEventListener("load", function () {
  var out = [], vw = document.documentElement.clientWidth;
  document.querySelectorAll("table").forEach(function (t) {
    var box = t.parentElement;
    out.push({id: t.id || "(no id)", width: t.scrollWidth, box: box.clientWidth,
              right: Math.ceil(t.getBoundingClientRect().right), window: vw});
  });
  var pre = document.createElement("pre");
  pre.id = "measured"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""
#: The narrowest window every table must fit without a column cut off.
WINDOW = (1280, 900)


def test_report_renders_in_headless_chromium(tiny_run: Path, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary on PATH (CI installs it with apt-get install chromium)")
    # Scored with meaningful quality: the widest cells table (every WER column).
    run = tmp_path / "runs" / tiny_run.name
    shutil.copytree(tiny_run, run)
    add_fake_scores(run, meaningful=True)
    path = render_run_report(run, out=tmp_path / "report.html")
    measured = tmp_path / "measured.html"
    measured.write_text(path.read_text(encoding="utf-8").replace("</body>", _MEASURE + "</body>"),
                        encoding="utf-8")
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         f"--window-size={WINDOW[0]},{WINDOW[1]}", "--dump-dom", measured.resolve().as_uri()],
        capture_output=True, text=True, timeout=60, check=False)
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'id="cells-table"' in dom and 'id="predicted-table"' in dom
    parsed = _parse(dom)
    assert len(parsed.images) >= 5
    # The page's own script ran (sorting handlers attach without errors) and the escaped
    # prompt stayed text: no alert script made it into the DOM.
    assert XSS not in dom
    # Readable at 1280 px: no table wider than its box (a column cut off, or hidden
    # behind a scroll bar a reader may not see) or past the window's right edge.
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert found, "the measuring script did not run"
    tables = json.loads(found.group(1).replace("&quot;", '"'))
    assert {"cells-table", "predicted-table", "headline-table"} <= {t["id"] for t in tables}
    too_wide = [t for t in tables if t["width"] > t["box"] or t["right"] > t["window"]]
    assert not too_wide, f"tables cut off at {WINDOW[0]} px: {too_wide}"
