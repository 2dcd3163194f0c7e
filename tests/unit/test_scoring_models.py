"""Architecture of the scoring models (WavLM-large + ECAPA-TDNN, UTMOS22 strong) on random
weights written in the official checkpoint layouts; the encoders checked against
torchaudio's independent WavLM / wav2vec 2.0 implementations on the same weights."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from bench.scoring.ecapa import CLASSIFIER_KEY, EcapaConfig, WavLMEcapa
from bench.scoring.models import ModelMissingError, load_state
from bench.scoring.speaker import WavLMEcapaEncoder
from bench.scoring.ssl_encoder import EncoderLayer, SSLConfig, SSLEncoder
from bench.scoring.utmos import UTMOS, UTMOSConfig, UTMOSStrong

TINY_WAVLM = SSLConfig(conv_layers=((8, 10, 5), (8, 3, 2)), embed_dim=16, ffn_dim=32, heads=2,
                       layers=3, pos_conv_kernel=4, pos_conv_groups=2, rel_pos_buckets=8,
                       rel_pos_max_distance=20)
TINY_W2V2 = SSLConfig(conv_layers=((8, 10, 5), (8, 3, 2)), extractor_norm="group", embed_dim=16,
                      ffn_dim=32, heads=2, layers=2, pos_conv_kernel=4, pos_conv_groups=2,
                      layer_norm_first=False, rel_pos_buckets=0, normalize_waveform=False)
TINY_ECAPA = EcapaConfig(ssl=TINY_WAVLM, channels=8, pooled_channels=12, embed_dim=6, scale=4,
                         se_dim=4, attention_dim=4)
TINY_UTMOS = UTMOSConfig(ssl=TINY_W2V2, domain_dim=3, judge_dim=3, lstm_dim=5, proj_dim=7)


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random values in every float tensor (LayerNorm and BatchNorm included), in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.3)
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.abs_().add_(0.5)  # variances must be positive
    return model.eval()


def _wav(seconds: float = 0.5, seed: int = 1) -> torch.Tensor:
    return 0.1 * torch.randn(1, int(16_000 * seconds), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------- official layouts


def test_full_size_wavlm_ecapa_has_the_official_checkpoint_layout() -> None:
    with torch.device("meta"):
        state = WavLMEcapa().state_dict()
    # 710 tensors + the training classifier = the 711 keys of wavlm_large_finetune.pth.
    assert len(state) == 710
    expected = {
        "feature_weight": (25,),
        "feature_extract.model.mask_emb": (1024,),
        "feature_extract.model.feature_extractor.conv_layers.0.0.weight": (512, 1, 10),
        "feature_extract.model.feature_extractor.conv_layers.0.2.1.weight": (512,),
        "feature_extract.model.feature_extractor.conv_layers.6.0.weight": (512, 512, 2),
        "feature_extract.model.layer_norm.weight": (512,),
        "feature_extract.model.post_extract_proj.weight": (1024, 512),
        "feature_extract.model.encoder.pos_conv.0.weight_g": (1, 1, 128),
        "feature_extract.model.encoder.pos_conv.0.weight_v": (1024, 64, 128),
        "feature_extract.model.encoder.pos_conv.0.bias": (1024,),
        "feature_extract.model.encoder.layer_norm.weight": (1024,),
        "feature_extract.model.encoder.layers.0.self_attn.relative_attention_bias.weight": (320, 16),
        "feature_extract.model.encoder.layers.23.self_attn.grep_linear.weight": (8, 64),
        "feature_extract.model.encoder.layers.23.self_attn.grep_a": (1, 16, 1, 1),
        "feature_extract.model.encoder.layers.23.self_attn.k_proj.bias": (1024,),
        "feature_extract.model.encoder.layers.23.fc1.weight": (4096, 1024),
        "feature_extract.model.encoder.layers.23.final_layer_norm.bias": (1024,),
        "layer1.conv.weight": (512, 1024, 5),
        "layer1.bn.running_mean": (512,),
        "layer2.Conv1dReluBn1.conv.weight": (512, 512, 1),
        "layer3.Res2Conv1dReluBn.convs.6.weight": (64, 64, 3),
        "layer4.Res2Conv1dReluBn.bns.6.num_batches_tracked": (),
        "layer4.SE_Connect.linear1.weight": (128, 512),
        "layer4.Conv1dReluBn2.bn.weight": (512,),
        "conv.weight": (1536, 1536, 1),
        "pooling.linear1.weight": (128, 1536, 1),
        "pooling.linear2.weight": (1536, 128, 1),
        "bn.running_var": (3072,),
        "linear.weight": (256, 3072),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert not any(".relative_attention_bias." in k for k in state if ".layers.0." not in k)


def test_full_size_utmos_has_the_official_state_dict_layout() -> None:
    with torch.device("meta"):
        state = UTMOSStrong().state_dict()
    expected = {
        "wav2vec2.feature_extractor.conv_layers.0.0.weight": (512, 1, 10),
        "wav2vec2.feature_extractor.conv_layers.0.2.weight": (512,),  # GroupNorm, block 0 only
        "wav2vec2.encoder.pos_conv.0.weight_v": (768, 48, 128),
        "wav2vec2.encoder.layers.11.fc1.weight": (3072, 768),
        "wav2vec2.mask_emb": (768,),
        "domain_emb": (1, 128),
        "judge_emb": (1, 128),
        "blstm.weight_ih_l0": (2048, 1024),
        "blstm.weight_hh_l0_reverse": (2048, 512),
        "projection.0.weight": (2048, 1024),
        "projection.2.weight": (1, 2048),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert not any("conv_layers.1.2" in k for k in state)  # no norm after block 0
    assert not any("grep" in k or "relative_attention" in k for k in state)


# ---------------------------------------------------------------------- loading


def _write_ecapa(root: Path, model: WavLMEcapa, drop: str | None = None) -> Path:
    state = {k: v for k, v in model.state_dict().items() if k != drop}
    state[CLASSIFIER_KEY] = torch.randn(10, TINY_ECAPA.embed_dim)
    path = root / "wavlm_large_finetune.pth"
    torch.save({"model": state}, path)
    return path


def test_wavlm_ecapa_encoder_loads_the_official_layout_and_embeds(tmp_path: Path) -> None:
    model = _randomize(WavLMEcapa(TINY_ECAPA))
    _write_ecapa(tmp_path, model)  # type: ignore[arg-type]
    encoder = WavLMEcapaEncoder(tmp_path, config=TINY_ECAPA)
    wav = _wav()
    [embedding] = encoder.embed([wav[0].numpy()])
    with torch.inference_mode():
        direct = model(wav)[0].tolist()
    assert len(embedding) == TINY_ECAPA.embed_dim
    assert embedding == pytest.approx(direct, rel=1e-5, abs=1e-6)
    assert encoder.name.startswith("wavlm-ecapa:")


def test_wavlm_ecapa_refuses_a_checkpoint_with_a_missing_key(tmp_path: Path) -> None:
    model = WavLMEcapa(TINY_ECAPA)
    _write_ecapa(tmp_path, model, drop="layer2.SE_Connect.linear1.weight")
    with pytest.raises(ValueError, match=r"missing: layer2\.SE_Connect\.linear1\.weight"):
        WavLMEcapaEncoder(tmp_path, config=TINY_ECAPA)


def test_checkpoints_are_read_without_running_pickled_code(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pickled code ran",))

    with open(tmp_path / "wavlm_large_finetune.pth", "wb") as f:
        pickle.dump({"model": Payload()}, f)
    with pytest.raises(pickle.UnpicklingError):
        WavLMEcapaEncoder(tmp_path, config=TINY_ECAPA)


def test_missing_models_say_which_file_where_and_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError) as err:
        WavLMEcapaEncoder(tmp_path)
    message = str(err.value)
    assert "wavlm_large_finetune.pth" in message and str(tmp_path) in message
    assert "echo-bench models fetch wavlm-ecapa" in message and "\n" not in message
    with pytest.raises(ModelMissingError, match="echo-bench models fetch utmos22-strong"):
        UTMOS(tmp_path)


def test_utmos_loads_the_official_layout_and_scores(tmp_path: Path) -> None:
    model = _randomize(UTMOSStrong(TINY_UTMOS))
    torch.save(model.state_dict(), tmp_path / "utmos22_strong_step7459_v1.pt")
    metric = UTMOS(tmp_path, config=TINY_UTMOS)
    wav = _wav()
    [[mos]] = metric.compute([wav[0].numpy()])
    with torch.inference_mode():
        assert mos == pytest.approx(float(model(wav)[0]), rel=1e-5)
    assert metric.columns([mos], {}) == {"utmos_model": metric.model_id, "utmos": mos}


def test_load_state_names_unexpected_and_misshapen_keys() -> None:
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"unexpected: extra .*wrong shape: weight"):
        load_state(model, {"weight": torch.zeros(3, 3), "bias": torch.zeros(2), "extra": torch.zeros(1)})


# ---------------------------------------------------------------------- semantics


def test_relative_position_buckets_match_the_published_scheme() -> None:
    cfg = SSLConfig(embed_dim=16, heads=1, pos_conv_groups=1, layers=1, rel_pos_buckets=320,
                    rel_pos_max_distance=800, pos_conv_kernel=4)
    layer = SSLEncoder(cfg).encoder.layers[0]
    assert isinstance(layer, EncoderLayer)
    attn = layer.self_attn
    with torch.no_grad():
        attn.relative_attention_bias.weight.copy_(torch.arange(320.0)[:, None])
    bias = attn.position_bias(2001)[0]  # [query, key] -> bucket index
    # Half the buckets per direction (keys after the query in the upper half), 80 exact
    # distances, then log-spaced up to 800, the last bucket holding everything beyond.
    cases = {0: 0, 1: 161, -1: 1, -79: 79, 79: 239, -80: 80, -799: 159, -800: 159, 2000: 319}
    got = {d: int(bias[1000, 1000 + d]) if -1000 <= d <= 1000 else int(bias[0, d]) for d in cases}
    assert got == cases


def _to_torchaudio(state: dict[str, torch.Tensor], cfg: SSLConfig) -> dict[str, torch.Tensor]:
    """Our (fairseq-layout) encoder keys -> torchaudio Wav2Vec2Model keys."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "mask_emb":
            continue
        k = key.replace("feature_extractor.conv_layers.", "feature_extractor.conv_layers.")
        k = k.replace(".0.weight", ".conv.weight") if "conv_layers" in k and k.count(".") == 4 else k
        k = k.replace(".2.1.", ".layer_norm.").replace(".0.2.", ".0.layer_norm.")
        k = k.replace("post_extract_proj.", "encoder.feature_projection.projection.")
        k = k.replace("layer_norm.", "encoder.feature_projection.layer_norm.") if k.startswith("layer_norm.") else k
        k = k.replace("encoder.pos_conv.0.weight_g", "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original0")
        k = k.replace("encoder.pos_conv.0.weight_v", "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1")
        k = k.replace("encoder.pos_conv.0.bias", "encoder.transformer.pos_conv_embed.conv.bias")
        k = k.replace("encoder.layer_norm.", "encoder.transformer.layer_norm.")
        k = k.replace("encoder.layers.", "encoder.transformer.layers.")
        k = k.replace(".self_attn_layer_norm.", ".layer_norm.").replace(".fc1.", ".feed_forward.intermediate_dense.")
        k = k.replace(".fc2.", ".feed_forward.output_dense.")
        k = k.replace(".self_attn.relative_attention_bias.", ".attention.rel_attn_embed.")
        k = k.replace(".self_attn.grep_linear.", ".attention.gru_rel_pos_linear.")
        k = k.replace(".self_attn.grep_a", ".attention.gru_rel_pos_const")
        inner = ".attention.attention." if cfg.rel_pos_buckets else ".attention."
        k = k.replace(".self_attn.out_proj.", inner + "out_proj.")
        out[k] = value
    for i in range(cfg.layers):
        p = f"encoder.transformer.layers.{i}.attention"
        names = [f"{p}.self_attn.{n}_proj" for n in "qkv"]
        if cfg.rel_pos_buckets:
            for kind in ("weight", "bias"):
                out[f"{p}.attention.in_proj_{kind}"] = torch.cat(
                    [state[n.replace(f"encoder.transformer.layers.{i}.attention.self_attn", f"encoder.layers.{i}.self_attn") + f".{kind}"] for n in names])
        else:
            for n in "qkv":
                for kind in ("weight", "bias"):
                    out[f"{p}.{n}_proj.{kind}"] = state[f"encoder.layers.{i}.self_attn.{n}_proj.{kind}"]
    return {k: v for k, v in out.items() if ".self_attn." not in k}


def _torchaudio_model(cfg: SSLConfig) -> Any:
    from torchaudio.models import wav2vec2_model, wavlm_model

    common = dict(extractor_conv_layer_config=list(cfg.conv_layers), extractor_conv_bias=False,
                  encoder_embed_dim=cfg.embed_dim, encoder_projection_dropout=0.0,
                  encoder_pos_conv_kernel=cfg.pos_conv_kernel,
                  encoder_pos_conv_groups=cfg.pos_conv_groups, encoder_num_layers=cfg.layers,
                  encoder_num_heads=cfg.heads, encoder_attention_dropout=0.0,
                  encoder_ff_interm_features=cfg.ffn_dim, encoder_ff_interm_dropout=0.0,
                  encoder_dropout=0.0, encoder_layer_norm_first=cfg.layer_norm_first,
                  encoder_layer_drop=0.0, aux_num_out=None)
    if cfg.rel_pos_buckets:
        return wavlm_model(extractor_mode="layer_norm", encoder_num_buckets=cfg.rel_pos_buckets,
                           encoder_max_distance=cfg.rel_pos_max_distance, **common)
    return wav2vec2_model(extractor_mode="group_norm", **common)


@pytest.mark.parametrize("cfg", [TINY_WAVLM, TINY_W2V2], ids=["wavlm", "wav2vec2"])
def test_encoder_matches_torchaudio_on_the_same_weights(cfg: SSLConfig) -> None:
    from dataclasses import replace

    cfg = replace(cfg, normalize_waveform=False)  # torchaudio leaves normalising to callers
    ours = SSLEncoder(cfg)
    _randomize(ours)
    theirs = _torchaudio_model(cfg).eval()
    theirs.load_state_dict(_to_torchaudio(ours.state_dict(), cfg), strict=True)
    wav = _wav(0.4)
    with torch.inference_mode():
        states: list[torch.Tensor] = ours(wav)
        layer_outputs, _ = theirs.extract_features(wav)
        last = layer_outputs[-1]
        if cfg.layer_norm_first:  # pre-norm: the encoder's output is the last layer's, normalised
            last = ours.encoder.layer_norm(last)
    assert len(states) == cfg.layers + 1
    for mine, ref in zip(states[1:-1], layer_outputs[:-1], strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(states[-1], last, rtol=1e-4, atol=1e-5)
