"""The text-to-waveform pipeline on the tiny model and codec (random weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from bench.cli import main
from echo_tts import SamplerConfig, load_model
from echo_tts.acceleration import DiTForward
from echo_tts.blockwise import sample_blockwise
from echo_tts.pipeline import STAGES, EchoPipeline
from echo_tts.sampling import Conditioning, encode_speaker_condition, encode_text_condition

FAST = SamplerConfig(num_steps=3, sequence_length=24)
LONG_TEXT = " ".join(f"Sentence number {i} is here to make the text long." for i in range(12))


@pytest.fixture(scope="module")
def pipe() -> EchoPipeline:
    return EchoPipeline.from_pretrained("random:tiny", "random:tiny", keep_blockwise=True)


def test_result_fields_and_timings(pipe: EchoPipeline) -> None:
    result = pipe.synthesize("Hello there.", sampler=FAST, seed=1)
    assert result.sample_rate == 44_100 and result.latents.shape == (24, 80)
    assert result.audio.shape[0] == 1 and result.audio.shape[1] <= 24 * 2048
    assert result.full_seconds == pytest.approx(24 * 2048 / 44_100)
    assert 0 <= result.audio_seconds <= result.full_seconds
    assert result.normalized_text == "[S1] Hello there."
    assert set(result.timings) == set(STAGES)
    assert result.timings["total"] >= result.timings["sampling"] + result.timings["decode"]
    assert result.nfe == FAST.nfe()


def test_speaker_reference_is_cached(pipe: EchoPipeline, tmp_path: Path) -> None:
    wav = tmp_path / "ref.wav"
    sf.write(wav, 0.3 * np.sin(np.linspace(0, 2000, 24_000)).astype("float32"), 16_000)
    first = pipe.synthesize("With a voice.", wav, FAST)
    second = pipe.synthesize("With a voice.", wav, FAST)
    assert not first.speaker_cached and second.speaker_cached
    assert second.timings["speaker_encode"] < first.timings["speaker_encode"]
    torch.testing.assert_close(first.latents, second.latents)


def test_long_text_is_chunked_and_batching_changes_nothing(pipe: EchoPipeline) -> None:
    sequential = pipe.synthesize_long(LONG_TEXT, sampler=FAST, seed=5, max_bytes=200)
    batched = pipe.synthesize_long(LONG_TEXT, sampler=FAST, seed=5, max_bytes=200, batch_size=3)
    assert len(sequential.chunks) == len(batched.chunks) >= 3
    for a, b in zip(sequential.chunks, batched.chunks, strict=True):
        torch.testing.assert_close(a.latents, b.latents, rtol=1e-4, atol=1e-5)
    assert sequential.nfe == batched.nfe == FAST.nfe() * len(sequential.chunks)
    gaps = 0.1 * (len(sequential.chunks) - 1)
    assert sequential.audio_seconds == pytest.approx(
        sum(c.audio_seconds for c in sequential.chunks) + gaps)


def test_blockwise_invariants(pipe: EchoPipeline) -> None:
    model = pipe.model
    text_state, text_mask = encode_text_condition(model, *_ids("Block by block."))
    spk, spk_mask = encode_speaker_condition(model, None, None, 1)
    cond = Conditioning(text_state, text_mask, spk, spk_mask)
    blocks = [8, 8, 6]
    a = sample_blockwise(model, cond, FAST, blocks, seed=3)
    b = sample_blockwise(model, cond, FAST, blocks, seed=3)
    assert a.shape == (1, sum(blocks), 80) and torch.equal(a, b)
    prefix = torch.randn(1, 6, 80)
    c = sample_blockwise(model, cond, FAST, [8, 4], seed=3, prefix=prefix)
    assert c.shape == (1, 18, 80) and torch.equal(c[:, :6], prefix)
    with pytest.raises(ValueError, match="exceeds 640"):
        sample_blockwise(model, cond, FAST, [600, 100], seed=0)
    result = pipe.synthesize_blockwise("Block by block.", [8, 8], sampler=FAST)
    assert result.first_block_seconds is not None
    assert 0 < result.first_block_seconds <= result.timings["total"]


def test_blockwise_without_its_modules_fails_before_sampling() -> None:
    model = load_model("random:tiny", keep_blockwise=False)
    text_state, text_mask = encode_text_condition(model, *_ids("No prefix modules."))
    spk, spk_mask = encode_speaker_condition(model, None, None, 1)
    cond = Conditioning(text_state, text_mask, spk, spk_mask)
    blocks_done: list[int] = []
    with pytest.raises(RuntimeError, match="keep_blockwise=True"):
        sample_blockwise(model, cond, FAST, [8, 8], seed=0,
                         on_block=lambda i, _: blocks_done.append(i))
    assert blocks_done == []  # refused up front, not after a wasted first block
    one = sample_blockwise(model, cond, FAST, [8], seed=0)  # one block needs no prefix
    assert one.shape == (1, 8, 80)


def _ids(text: str) -> tuple[torch.Tensor, torch.Tensor]:
    from echo_tts import encode_text

    return encode_text([text])


def test_compiled_forward_matches_eager(pipe: EchoPipeline) -> None:
    from echo_tts.sampling import sample_conditioned

    model = pipe.model
    text_state, text_mask = encode_text_condition(model, *_ids("Compiled or not."))
    speaker = torch.randn(1, 8, 80)
    spk, spk_mask = encode_speaker_condition(model, speaker, torch.ones(1, 8, dtype=torch.bool), 1)
    cond = Conditioning(text_state, text_mask, spk, spk_mask)
    # The plain path: eager, every key scored under a mask, as the reference does.
    plain = sample_conditioned(model, cond, FAST, 0, DiTForward(model, attention="masked"))
    for forward in (DiTForward(model), DiTForward(model, compile=True),
                    DiTForward(model, compile=True, attention="masked")):
        out = sample_conditioned(model, cond, FAST, 0, forward)
        assert float((out - plain).norm() / plain.norm()) < 1e-5, forward.label
    with pytest.raises(ValueError, match="CUDA"):
        DiTForward(model, cuda_graphs=True)


def test_compiled_forward_does_not_recompile_per_prompt_length(pipe: EchoPipeline) -> None:
    # Every prompt of a sweep has its own byte length. A graph specialised to one length
    # would recompile for each (seconds to a minute each, inside timed generations) and,
    # past dynamo's recompile limit, silently run eager: the second length must make the
    # graph dynamic, after which new lengths reuse it.
    from torch._dynamo.utils import counters

    from echo_tts.sampling import sample_conditioned

    model = pipe.model
    forward = DiTForward(model, compile=True)
    spk, spk_mask = encode_speaker_condition(model, None, None, 1)
    graphs = []
    for text in ("Hi.", "A longer prompt.", "Longer still, with a clause.", "And the longest of them all."):
        text_state, text_mask = encode_text_condition(model, *_ids(text))
        cond = Conditioning(text_state, text_mask, spk, spk_mask)
        eager = sample_conditioned(model, cond, FAST, 0)
        compiled = sample_conditioned(model, cond, FAST, 0, forward)
        assert float((compiled - eager).norm() / eager.norm()) < 1e-5, text
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[3] == graphs[2] == graphs[1], graphs


def test_bfloat16_stays_close_to_float32() -> None:
    fp32 = EchoPipeline.from_pretrained("random:tiny", "random:tiny")
    bf16 = EchoPipeline.from_pretrained("random:tiny", "random:tiny", dtype=torch.bfloat16,
                                        codec_dtype=torch.bfloat16)
    a = fp32.synthesize("Precision.", sampler=FAST).latents
    b = bf16.synthesize("Precision.", sampler=FAST).latents
    # bf16 keeps ~3 significant digits and CFG (scales 3 and 8) amplifies the rounding:
    # about 6% relative difference on random weights after 3 steps; 10% is the bound.
    assert float((a - b).norm() / a.norm()) < 0.10


@pytest.mark.parametrize("argv, message", [
    (["--speaker", "missing.wav"], "does not exist"),
    (["--sequence-length", "700"], "sequence_length"),
    (["--steps", "0"], "num_steps"),
    (["--cfg-mode", "double"], "cfg_mode"),
    (["--batch-chunks", "0"], "--batch-chunks"),
    (["--no-chunk", "--text-override", "x " * 500], "exceeds"),
])
def test_synth_bad_input_is_one_line(argv: list[str], message: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    text = "Hello."
    if "--text-override" in argv:
        text = argv[argv.index("--text-override") + 1]
        argv = [a for a in argv if a not in ("--text-override", text)]
    code = main(["synth", text, "-o", str(tmp_path / "o.wav"), "--model", "random:tiny",
                 "--codec", "random:tiny", "--device", "cpu", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]


def test_synth_corrupt_speaker_audio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    code = main(["synth", "Hello.", "-o", str(tmp_path / "o.wav"), "--model", "random:tiny",
                 "--codec", "random:tiny", "--device", "cpu", "--speaker", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "bad.wav" in err[0]


def test_synth_writes_audio_and_prints_rtf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.wav"
    code = main(["synth", "Hello there.", "-o", str(out), "--model", "random:tiny", "--codec",
                 "random:tiny", "--device", "cpu", "--steps", "2", "--sequence-length", "16"])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file() and "RTF" in printed and "sampling" in printed
