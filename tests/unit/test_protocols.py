"""Named WER protocols against hand-computed cases, and re-scoring from stored transcripts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from bench.scoring import summarize
from bench.scoring.protocols import (
    PROTOCOLS,
    ProtocolError,
    get_protocol,
    headline_wer,
    normalize_f5_tts,
    normalize_seed_tts,
    protocol_fields,
)
from bench.scoring.rescore import rescore_protocol
from bench.spec.sweep import WER_PROTOCOLS
from bench.store.layout import record_key
from bench.store.run_store import RunStore


@pytest.mark.parametrize(
    ("raw", "seed", "f5"),
    [
        ("Hello, World!", "hello world", "hello world"),
        # The ASCII apostrophe survives only under seed-tts-eval.
        ("Don't stop.", "don't stop", "dont stop"),
        # The typographic apostrophe (U+2019) is deleted by both.
        ("Don\u2019t stop.", "dont stop", "dont stop"),
        # Deleted, not replaced by a space: a hyphenated word becomes one word.
        ("twenty-five", "twentyfive", "twentyfive"),
        ("Mr. Smith\u2014the baker\u2026", "mr smiththe baker", "mr smiththe baker"),
        # No number normalisation either way.
        ("It cost $50.", "it cost 50", "it cost 50"),
        ("  spaced   out  ", "spaced out", "spaced out"),
        ("", "", ""),
    ],
)
def test_normalisers(raw: str, seed: str, f5: str) -> None:
    assert normalize_seed_tts(raw) == seed
    assert normalize_f5_tts(raw) == f5


def test_fifty_versus_50_under_each_protocol() -> None:
    ref, hyp = "I have fifty apples.", "I have 50 apples"
    # Whisper's normaliser turns "fifty" into "50": no error.
    assert PROTOCOLS["whisper-normalizer"].score(ref, hyp).wer == 0.0
    # The published protocols do not: one substitution in four words.
    for name in ("seed-tts-eval", "f5-tts"):
        score = PROTOCOLS[name].score(ref, hyp)
        assert (score.substitutions, score.ref_words, score.wer) == (1, 4, 0.25)


def test_apostrophe_separates_seed_from_f5() -> None:
    ref, hyp = "Don't stop now.", "dont stop now"
    assert PROTOCOLS["seed-tts-eval"].score(ref, hyp).wer == pytest.approx(1 / 3)
    assert PROTOCOLS["f5-tts"].score(ref, hyp).wer == 0.0


def test_headline_is_mean_for_published_protocols_and_corpus_for_whisper() -> None:
    # 0 errors in 4 words and 1 error in 2 words: corpus 1/6, mean of (0, 1/2) = 1/4.
    pairs = [("a b c d", "a b c d"), ("x y", "x z")]
    for name, expected in (("seed-tts-eval", 0.25), ("f5-tts", 0.25),
                           ("whisper-normalizer", 1 / 6)):
        protocol = PROTOCOLS[name]
        quality = summarize([protocol.score(r, h) for r, h in pairs], n_boot=50)
        value, (low, high) = headline_wer(quality, protocol)
        assert value == pytest.approx(expected)
        assert low <= value <= high
    assert PROTOCOLS["seed-tts-eval"].headline_label == "mean per-utterance WER (seed-tts-eval)"


def test_unknown_protocol_names_the_known_ones() -> None:
    with pytest.raises(ProtocolError, match="seed-tts-eval, f5-tts"):
        get_protocol("seed-tts")
    assert get_protocol(None).name == "whisper-normalizer"


def test_spec_parser_knows_the_same_protocols() -> None:
    assert tuple(PROTOCOLS) == WER_PROTOCOLS


def _run_with_transcripts(root: Path) -> Path:
    """A run whose two generations were transcribed (by no real ASR: fields written here)
    and scored under whisper-normalizer, one with a SIM figure on its score line."""
    spec = {"measure": {"asr": "large-v3"}, "prompts": {"source": "builtin"}}
    store = RunStore.create(root, spec=spec, spec_name="t", spec_hash="h",
                            environment={})
    texts = {"p1": ("I have fifty apples.", "I have 50 apples"),
             "p2": ("Don't stop now.", "dont stop now")}
    with store:
        for pid, (text, transcript) in texts.items():
            key = record_key("c1", pid, 0, 0)
            store.append({"key": key, "status": "ok", "cell_id": "c1", "prompt_id": pid,
                          "seed": 0, "text": text})
            fields: dict[str, Any] = {"asr_model": "whisper:large-v3", "score_status": "ok",
                                      "transcript": transcript, "sim": 0.5}
            fields.update(protocol_fields(text, transcript, get_protocol(None)))
            store.append_score(key, fields)
        return store.path


def test_rescore_changes_wer_and_keeps_other_metrics(tmp_path: Path) -> None:
    run_dir = _run_with_transcripts(tmp_path)
    with RunStore.open(run_dir) as store:
        before = {r["prompt_id"]: r["wer"] for r in store.records()}
        done = rescore_protocol(store, PROTOCOLS["seed-tts-eval"])
        after = {r["prompt_id"]: r for r in store.records()}
        again = rescore_protocol(store, PROTOCOLS["seed-tts-eval"])
    # Whisper's normaliser: "fifty" == "50", but "don't" becomes "do not" (2 errors in 4).
    assert before == {"p1": 0.0, "p2": 0.5}
    assert (done.rescored, done.already, done.untranscribed) == (2, 0, 0)
    assert after["p1"]["wer"] == 0.25 and after["p2"]["wer"] == pytest.approx(1 / 3)
    assert after["p1"]["wer_protocol"] == "seed-tts-eval"
    assert after["p1"]["sim"] == 0.5 and after["p1"]["transcript"] == "I have 50 apples"
    assert (again.rescored, again.already) == (0, 2)


def test_score_command_rescores_without_loading_the_asr(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    # The run's ASR (large-v3) is not on this machine: loading it would fail, so exit 0
    # shows that the transcripts were reused.
    run_dir = _run_with_transcripts(tmp_path)
    assert main(["score", str(run_dir), "--protocol", "f5-tts"]) == 0
    assert "re-scored 2 generations" in capsys.readouterr().out
    with RunStore.open(run_dir) as store:
        wers = sorted(r["wer"] for r in store.records())
    assert wers == [0.0, 0.25]


def test_score_command_rejects_an_unknown_protocol(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _run_with_transcripts(tmp_path)
    assert main(["score", str(run_dir), "--protocol", "seedtts"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown WER protocol 'seedtts'" in err[0]
    with RunStore.open(run_dir) as store:  # nothing recorded was lost or changed
        assert all(r["wer_protocol"] == "whisper-normalizer" for r in store.records())


def test_protocol_fields_empty_reference_is_nan() -> None:
    fields = protocol_fields("...", "hello", PROTOCOLS["seed-tts-eval"])
    assert fields["empty_ref"] and math.isnan(fields["wer"]) and fields["insertions"] == 1
