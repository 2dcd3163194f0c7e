"""The whole pipeline (tiny DiT, official-size codec, random weights) against the
reference ``sample_pipeline`` for the same seed, with and without a speaker reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from echo_tts import SamplerConfig, load_model, save_model
from echo_tts.autoencoder import load_codec
from echo_tts.pipeline import EchoPipeline
from tests.parity.codec_weights import LOAD_REFERENCE_CODEC, speech_like
from tests.parity.reference import run_reference

TOLERANCE = 1e-4
TEXT = "Parity of the whole pipeline: text, speaker, sampler and decoder."
SAMPLER = dict(num_steps=6, sequence_length=32, cfg_scale_text=3.0, cfg_scale_speaker=8.0,
               cfg_min_t=0.5, cfg_max_t=1.0, truncation_factor=0.8)
SEED = 99

REFERENCE_SCRIPT = LOAD_REFERENCE_CODEC + r"""
import json
from functools import partial
from safetensors.torch import save_file
from echo_tts.model import EchoDiT
from echo_tts.inference import sample_euler_cfg_independent_guidances, sample_pipeline

job = json.loads((WORK / "job.json").read_text())
ae, pca = load_reference_codec(WORK / "codec")
with torch.device("meta"):
    model = EchoDiT(**job["config"])
model.load_state_dict(load_file(str(WORK / "dit.safetensors")), strict=True, assign=True)
model.eval()
sample_fn = partial(sample_euler_cfg_independent_guidances, rescale_k=None, rescale_sigma=None,
                    speaker_kv_scale=None, speaker_kv_max_layers=None, speaker_kv_min_t=None,
                    **job["sampler"])
speaker = load_file(str(WORK / "speaker.safetensors"))["audio"]
out = {}
for name, spk in (("no_speaker", None), ("speaker", speaker)):
    audio, text = sample_pipeline(model, ae, pca, sample_fn, job["text"], spk, job["seed"])
    out[name] = audio.contiguous()
    (WORK / f"{name}.txt").write_text(text)
save_file(out, str(WORK / "out.safetensors"))
"""


@pytest.fixture(scope="module")
def runs(reference: Path, random_codec: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[dict[str, torch.Tensor], dict[str, object], Path]:
    work = tmp_path_factory.mktemp("pipeline_parity")
    (work / "codec").symlink_to(random_codec)
    model = load_model("random:tiny")
    checkpoint = save_model(model, work / "dit")
    save_file(load_file(str(checkpoint)), str(work / "dit.safetensors"))
    speaker = speech_like(1.5, seed=3).view(1, -1)  # loaded, mono, peak-normalised audio
    save_file({"audio": speaker}, str(work / "speaker.safetensors"))
    (work / "job.json").write_text(json.dumps({
        "config": model.config.to_dict(), "sampler": SAMPLER, "text": TEXT, "seed": SEED}))
    run_reference(REFERENCE_SCRIPT, work, timeout=900)
    pipe = EchoPipeline(load_model(checkpoint.parent), load_codec(work / "codec", work / "codec"))
    sampler = SamplerConfig(**SAMPLER)  # type: ignore[arg-type]
    ours = {"no_speaker": pipe.synthesize(TEXT, None, sampler, SEED),
            "speaker": pipe.synthesize(TEXT, speaker, sampler, SEED)}
    return load_file(str(work / "out.safetensors")), ours, work  # type: ignore[return-value]


@pytest.mark.parametrize("case", ["no_speaker", "speaker"])
def test_pipeline_matches_reference(runs: tuple[dict[str, torch.Tensor], dict[str, object], Path],
                                    case: str) -> None:
    ref, ours, work = runs
    result = ours[case]
    ref_audio = ref[case][0]
    assert result.audio.shape == ref_audio.shape  # type: ignore[attr-defined]
    assert result.audio.numel() > 0  # type: ignore[attr-defined]
    err = float((result.audio - ref_audio).norm() / ref_audio.norm())  # type: ignore[attr-defined]
    assert err < TOLERANCE
    assert result.normalized_text == (work / f"{case}.txt").read_text()  # type: ignore[attr-defined]
