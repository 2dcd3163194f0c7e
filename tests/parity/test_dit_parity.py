"""Parity of the DiT, tokenizer and sampler with the reference ``echo-tts==0.1.4``.

One reference subprocess per module computes every reference output from the same
random weights (all parameters randomised, tiny config, float32) and inputs; the tests
compare ours against them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from echo_tts import ModelConfig, SamplerConfig, encode_text, load_model, sample_latents
from echo_tts.weights import save_model
from tests.parity.reference import run_reference

TOLERANCE = 1e-4
TRICKY_PROMPTS = [
    "Plain text.",
    "\u201cCurly quotes,\u201d she said \u2014 and \u2018single\u2019 ones\u2026",
    "Time: 10:30; place: Paris.",
    "[S1] Already tagged. [S2] Second speaker.",
    "(laughs) Starts with a parenthesis",
    "Line one\nLine two\n\nLine four",
    "S1 appears mid-text without brackets",
    "Unicode caf\u00e9 \u65e5\u672c\u8a9e \U0001f600",
    "",
]

# name -> (sampler settings, use a speaker reference)
INDEPENDENT_CASES: dict[str, tuple[dict[str, object], bool]] = {
    "plain": ({}, False),
    "speaker": ({}, True),
    "all_options": (dict(truncation_factor=0.8, rescale_k=1.2, rescale_sigma=3.0,
                         speaker_kv_scale=1.5, speaker_kv_max_layers=1, speaker_kv_min_t=0.7), True),
}
FORMULA_MODES = ("joint", "alternating", "none")
BASE = dict(num_steps=8, sequence_length=48, cfg_scale_text=3.0, cfg_scale_speaker=5.0,
            cfg_min_t=0.4, cfg_max_t=1.0)

REFERENCE_SCRIPT = r"""
import json
import torch
from safetensors.torch import load_file, save_file
from echo_tts.model import EchoDiT
from echo_tts.inference import (get_text_input_ids_and_mask, tokenizer_encode,
                                sample_euler_cfg_independent_guidances, _concat_kv_caches)

job = json.loads((WORK / "job.json").read_text())
out = {}

# (b) tokenizer
ids, mask = get_text_input_ids_and_mask(job["prompts"], max_length=None)
out["tok_ids"], out["tok_mask"] = ids, mask
(WORK / "normalized.json").write_text(json.dumps(
    [tokenizer_encode(p, return_normalized_text=True)[1] for p in job["prompts"]]))

# (a) strict key matching in both directions
model = EchoDiT(**job["config"]).eval()
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(WORK / "ref_init.safetensors"))
model.load_state_dict(load_file(str(WORK / "ours.safetensors")), strict=True)

inputs = load_file(str(WORK / "inputs.safetensors"))
no_spk = (torch.zeros(2, 4, 80), torch.zeros(2, 4, dtype=torch.bool))
spk = (inputs["speaker"], inputs["speaker_mask"])

# (c) the reference sampler
for name, (settings, use_speaker) in job["independent"].items():
    cfg = dict(job["base"])
    cfg.update(truncation_factor=None, rescale_k=None, rescale_sigma=None, speaker_kv_scale=None,
               speaker_kv_max_layers=None, speaker_kv_min_t=None)
    cfg.update(settings)
    latent, smask = spk if use_speaker else no_spk
    out["independent_" + name] = sample_euler_cfg_independent_guidances(
        model, latent, smask, inputs["text_ids"], inputs["text_mask"], 1234, **cfg)

# (d) the other modes restated from their formulas on the reference forward
@torch.inference_mode()
def restated(mode):
    b = job["base"]
    s_t, s_s = b["cfg_scale_text"], b["cfg_scale_speaker"]
    ids, tmask = inputs["text_ids"], inputs["text_mask"]
    latent, smask = spk
    kv_t = model.get_kv_cache_text(ids, tmask)
    kv_s = model.get_kv_cache_speaker(latent)
    t_sched = torch.linspace(1.0, 0.0, b["num_steps"] + 1) * 0.999
    x = torch.randn((2, b["sequence_length"], 80), generator=torch.Generator().manual_seed(1234))
    off_t, off_s = torch.zeros_like(tmask), torch.zeros_like(smask)
    rows = {"cond": (tmask, smask), "no_text": (off_t, smask), "no_speaker": (tmask, off_s),
            "no_both": (off_t, off_s)}
    def call(kinds, t):
        n = len(kinds)
        v = model(x=torch.cat([x] * n), t=torch.ones(2 * n) * t,
                  text_mask=torch.cat([rows[k][0] for k in kinds]),
                  speaker_mask=torch.cat([rows[k][1] for k in kinds]),
                  kv_cache_text=_concat_kv_caches(*[kv_t] * n),
                  kv_cache_speaker=_concat_kv_caches(*[kv_s] * n)).float()
        return v.chunk(n)
    k = 0
    for i in range(b["num_steps"]):
        t, t_next = t_sched[i], t_sched[i + 1]
        if b["cfg_min_t"] <= t <= b["cfg_max_t"] and mode != "none":
            if mode == "joint":
                vc, vu = call(["cond", "no_both"], t)
                v = vc + (s_t + s_s) * (vc - vu)
            elif k % 2 == 0:
                vc, vu = call(["cond", "no_text"], t)
                v = vc + s_t * (vc - vu)
            else:
                vc, vu = call(["cond", "no_speaker"], t)
                v = vc + s_s * (vc - vu)
            k += 1
        else:
            (v,) = call(["cond"], t)
        x = x + v * (t_next - t)
    return x

for mode in job["modes"]:
    out["formula_" + mode] = restated(mode)
save_file({k: v.contiguous() for k, v in out.items()}, str(WORK / "out.safetensors"))
"""


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).norm() / ref.norm())


@pytest.fixture(scope="module")
def parity(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    work = tmp_path_factory.mktemp("dit_parity")
    config = ModelConfig.preset("tiny")
    ours = load_model("random:tiny")
    save_file({k: v.contiguous() for k, v in ours.state_dict().items()}, str(work / "ours.safetensors"))
    text_ids, text_mask = encode_text(["Hello there, parity.", "A somewhat longer second prompt!"])
    gen = torch.Generator().manual_seed(7)
    speaker = torch.randn(2, 16, 80, generator=gen)
    speaker_mask = torch.ones(2, 16, dtype=torch.bool)
    speaker_mask[1, 12:] = False
    save_file({"text_ids": text_ids, "text_mask": text_mask, "speaker": speaker,
               "speaker_mask": speaker_mask}, str(work / "inputs.safetensors"))
    (work / "job.json").write_text(json.dumps({
        "config": config.to_dict(), "prompts": TRICKY_PROMPTS, "base": BASE,
        "independent": INDEPENDENT_CASES, "modes": FORMULA_MODES,
    }))
    run_reference(REFERENCE_SCRIPT, work)
    return {"work": work, "model": ours, "out": load_file(str(work / "out.safetensors")),
            "inputs": load_file(str(work / "inputs.safetensors"))}


def test_loads_reference_state_dict_strictly(parity: dict[str, object], tmp_path: Path) -> None:
    work = parity["work"]
    assert isinstance(work, Path)
    # The reference's own freshly initialised state dict loads into ours with strict keys
    # (load_model checks every key and shape), and ours loaded into the reference above.
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "pytorch_model.safetensors").write_bytes((work / "ref_init.safetensors").read_bytes())
    model = load_model(folder, config=ModelConfig.preset("tiny"))
    ref_state = load_file(str(work / "ref_init.safetensors"))
    assert set(model.state_dict()) == set(ref_state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, ref_state[key]), key


def test_tokenizer_matches_reference(parity: dict[str, object]) -> None:
    out, work = parity["out"], parity["work"]
    assert isinstance(out, dict) and isinstance(work, Path)
    ids, mask = encode_text(TRICKY_PROMPTS)
    assert torch.equal(ids, out["tok_ids"].to(ids.dtype))
    assert torch.equal(mask, out["tok_mask"])
    from echo_tts import normalize_prompt
    assert [normalize_prompt(p) for p in TRICKY_PROMPTS] == json.loads(
        (work / "normalized.json").read_text())


@pytest.mark.parametrize("case", sorted(INDEPENDENT_CASES))
def test_independent_sampler_matches_reference(parity: dict[str, object], case: str) -> None:
    out, inputs, model = parity["out"], parity["inputs"], parity["model"]
    assert isinstance(out, dict) and isinstance(inputs, dict)
    settings, use_speaker = INDEPENDENT_CASES[case]
    config = SamplerConfig(cfg_mode="independent", **BASE, **settings)  # type: ignore[arg-type]
    ours = sample_latents(
        model,  # type: ignore[arg-type]
        text_ids=inputs["text_ids"], text_mask=inputs["text_mask"],
        speaker_latent=inputs["speaker"] if use_speaker else None,
        speaker_mask=inputs["speaker_mask"] if use_speaker else None,
        config=config, seed=1234,
    )
    assert rel_err(ours, out[f"independent_{case}"]) < TOLERANCE


@pytest.mark.parametrize("mode", FORMULA_MODES)
def test_other_modes_match_their_formulas(parity: dict[str, object], mode: str) -> None:
    out, inputs, model = parity["out"], parity["inputs"], parity["model"]
    assert isinstance(out, dict) and isinstance(inputs, dict)
    config = SamplerConfig(cfg_mode=mode, **BASE)  # type: ignore[arg-type]
    ours = sample_latents(
        model,  # type: ignore[arg-type]
        text_ids=inputs["text_ids"], text_mask=inputs["text_mask"],
        speaker_latent=inputs["speaker"], speaker_mask=inputs["speaker_mask"],
        config=config, seed=1234,
    )
    assert rel_err(ours, out[f"formula_{mode}"]) < TOLERANCE


def test_saved_checkpoint_round_trips(tmp_path: Path) -> None:
    model = load_model("random:tiny")
    path = save_model(model, tmp_path)
    again = load_model(path.parent)  # config comes from the checkpoint's metadata
    assert again.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])
