"""Read a CTranslate2 Whisper ``model.bin`` and write the same weights as an openai-whisper
checkpoint, so both ASR backends can be compared on one model in the tests.

The binary layout (as CTranslate2's ModelSpec writes it): uint32 version, the spec name,
uint32 revision, uint32 variable count, then per variable its name, uint8 rank, uint32
dims, uint8 dtype id (float32, int8, int16, int32, float16, bfloat16), uint32 byte count
and the raw bytes; then the aliases. Strings are a uint16 length (with the NUL) and bytes.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16)


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """Variables of a CTranslate2 model.bin (aliases resolved) as numpy arrays."""

    def unpack(f: BinaryIO, fmt: str) -> int:
        value: int = struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
        return value

    def string(f: BinaryIO) -> str:
        return f.read(unpack(f, "H"))[:-1].decode("utf-8")

    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        unpack(f, "I")
        string(f)
        unpack(f, "I")
        for _ in range(unpack(f, "I")):
            name = string(f)
            shape = [unpack(f, "I") for _ in range(unpack(f, "B"))]
            dtype = _DTYPES[unpack(f, "B")]
            out[name] = np.frombuffer(f.read(unpack(f, "I")), dtype=dtype).reshape(shape)
        for _ in range(unpack(f, "I")):
            alias, target = string(f), string(f)
            out[alias] = out[target]
    return out


def ct2_to_openai_whisper(folder: Path, target: Path) -> Path:
    """Write the Whisper of CTranslate2 ``folder`` as an openai-whisper checkpoint."""
    v = read_ct2(folder / "model.bin")

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(v[name].astype(np.float32).copy())

    state: dict[str, torch.Tensor] = {}

    def linear(dst: str, src: str, bias: bool = True) -> None:
        state[f"{dst}.weight"] = t(f"{src}/weight")
        if bias:
            state[f"{dst}.bias"] = t(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        state[f"{dst}.weight"], state[f"{dst}.bias"] = t(f"{src}/gamma"), t(f"{src}/beta")

    def fused(dst: str, src: str, names: tuple[str, ...]) -> None:
        weights, biases = t(f"{src}/weight").chunk(len(names)), t(f"{src}/bias").chunk(len(names))
        for name, w, b in zip(names, weights, biases, strict=True):
            state[f"{dst}.{name}.weight"] = w.clone()
            if name != "key":  # Whisper's keys have no bias (CTranslate2 stores zeros)
                state[f"{dst}.{name}.bias"] = b.clone()

    def block(dst: str, src: str, cross: bool) -> None:
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        fused(f"{dst}.attn", f"{src}/self_attention/linear_0", ("query", "key", "value"))
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        if cross:
            norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
            linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
            fused(f"{dst}.cross_attn", f"{src}/attention/linear_1", ("key", "value"))
            linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")

    n_audio = sum(1 for k in v if k.startswith("encoder/layer_") and k.endswith("ffn/linear_0/weight"))
    n_text = sum(1 for k in v if k.startswith("decoder/layer_") and k.endswith("ffn/linear_0/weight"))
    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    state["encoder.positional_embedding"] = t("encoder/position_encodings/encodings")
    for i in range(n_audio):
        block(f"encoder.blocks.{i}", f"encoder/layer_{i}", cross=False)
    norm("encoder.ln_post", "encoder/layer_norm")
    state["decoder.token_embedding.weight"] = t("decoder/embeddings/weight")
    state["decoder.positional_embedding"] = t("decoder/position_encodings/encodings")
    for i in range(n_text):
        block(f"decoder.blocks.{i}", f"decoder/layer_{i}", cross=True)
    norm("decoder.ln", "decoder/layer_norm")
    n_state = state["encoder.conv1.weight"].shape[0]
    dims = {
        "n_mels": state["encoder.conv1.weight"].shape[1],
        "n_audio_ctx": state["encoder.positional_embedding"].shape[0],
        "n_audio_state": n_state, "n_audio_head": int(v["encoder/num_heads"]),
        "n_audio_layer": n_audio,
        "n_vocab": state["decoder.token_embedding.weight"].shape[0],
        "n_text_ctx": state["decoder.positional_embedding"].shape[0],
        "n_text_state": n_state, "n_text_head": int(v["decoder/num_heads"]),
        "n_text_layer": n_text,
    }
    torch.save({"dims": dims, "model_state_dict": state}, target)
    return target
