"""The "when present" quality choices of the scheduled specs
(``sim = "wavlm-ecapa-or-resemblyzer"``, ``mos = [..., "utmos-if-present"]``): with the
models absent (as on this machine) they fall back to Resemblyzer and no UTMOS, said in
one line, once per sweep, and nothing is recorded as skipped per generation; with the
models present (tiny random checkpoints written here, read by the same loading code)
they score with WavLM-ECAPA and UTMOS."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from bench.scoring import speaker, utmos
from bench.scoring.ecapa import CLASSIFIER_KEY, WavLMEcapa
from bench.scoring.quality import MOS_IF_PRESENT, SIM_PREFERRED, resolve_present
from bench.scoring.run_scoring import QualityScorer
from bench.scoring.utmos import UTMOSStrong
from bench.spec.parser import parse_spec
from bench.store.run_store import RunStore
from tests.tiny import TINY_MODEL_TOML
from tests.unit.test_scoring_models import TINY_ECAPA, TINY_UTMOS, _randomize


def test_absent_models_fall_back_and_say_so_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "models"
    quality = QualityScorer.load(SIM_PREFERRED, ["dnsmos", MOS_IF_PRESENT], "cpu", str(root))
    by_name = {m.name: m for m in quality.metrics}
    assert sorted(by_name) == ["dnsmos", "sim"]
    assert str(by_name["sim"].model_id).startswith("resemblyzer")
    # Nothing missing: no generation is marked skipped for a model the spec made optional.
    assert quality.missing == {}
    note = quality.note
    assert note is not None and "\n" not in note
    for fragment in ("wavlm-ecapa", "utmos22-strong", str(root), "SIM with resemblyzer",
                     "no UTMOS", "echo-bench modal prefetch"):
        assert fragment in note, note


def test_plain_choices_pass_through_unchanged(tmp_path: Path) -> None:
    assert resolve_present("resemblyzer", ["dnsmos", "utmos"], tmp_path) == (
        "resemblyzer", ["dnsmos", "utmos"], None)


def test_present_models_are_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Full-size defaults swapped for the tiny configurations: the checkpoints below go
    # through the real file lookup, torch.load and the exact key/shape check.
    monkeypatch.setattr(speaker, "WavLMEcapa", lambda cfg=None: WavLMEcapa(cfg or TINY_ECAPA))
    monkeypatch.setattr(utmos, "UTMOSStrong", lambda cfg=None: UTMOSStrong(cfg or TINY_UTMOS))
    state = dict(_randomize(WavLMEcapa(TINY_ECAPA)).state_dict())
    state[CLASSIFIER_KEY] = torch.randn(10, TINY_ECAPA.embed_dim)
    torch.save({"model": state}, tmp_path / "wavlm_large_finetune.pth")
    torch.save(_randomize(UTMOSStrong(TINY_UTMOS)).state_dict(),
               tmp_path / "utmos22_strong_step7459_v1.pt")
    assert resolve_present(SIM_PREFERRED, ["dnsmos", MOS_IF_PRESENT], tmp_path) == (
        "wavlm-ecapa", ["dnsmos", "utmos"], None)
    quality = QualityScorer.load(SIM_PREFERRED, [MOS_IF_PRESENT], "cpu", str(tmp_path))
    assert quality.note is None and quality.missing == {}
    ids = {m.name: str(m.model_id) for m in quality.metrics}
    assert ids["sim"].startswith("wavlm-ecapa:") and ids["utmos"].startswith("utmos22-strong:")


def test_a_sweep_says_it_once_not_per_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from bench.commands.sweep import CellScorer

    monkeypatch.setenv("ECHO_BENCH_MODELS", str(tmp_path / "models"))
    spec = parse_spec(TINY_MODEL_TOML + "[measure]\nasr_device = 'cpu'\n"
                      f"sim = '{SIM_PREFERRED}'\nmos = ['{MOS_IF_PRESENT}']\n",
                      base_dir=tmp_path, name="t")
    scorer = CellScorer(spec)
    scorer.asr = SimpleNamespace(name="stub", is_random=True)  # type: ignore[assignment]
    with RunStore.create(tmp_path / "runs", spec={}, spec_name="t", spec_hash="h",
                         environment={}) as store:
        cell: Any = None
        for _ in range(3):  # three cells finish
            scorer(store, cell, [])
    lines = [x for x in capsys.readouterr().out.splitlines() if "quality models" in x]
    assert len(lines) == 1 and "SIM with resemblyzer" in lines[0]
