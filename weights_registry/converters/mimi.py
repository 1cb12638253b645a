"""Mimi checkpoints -> `SpeechCodec`.

Three layouts of the same weights are accepted:
- transformers' `MimiModel` as it sits in memory in transformers 5.x (`encoder.encoder_seanet.layers.*`,
  `encoder.encoder_transformer.*`, `encoder.downsample.*`, `decoder.upsample.*`, ...);
- the flat layout of the Hub's `kyutai/mimi` safetensors and transformers 4.x (`encoder.layers.*`,
  `encoder_transformer.*`, `downsample.*`, `upsample.*`, `decoder_transformer.*`, `decoder.layers.*`);
  both have q/k/v split and rotate q/k by halves (`rotate_half`);
- moshi's own (`encoder.model.*`, `encoder_transformer.transformer.layers.*` with a fused
  `self_attn.in_projs.0` [3 * dim, dim], `quantizer.rvq_first|rvq_rest.vq.layers.N._codebook.*`),
  which rotates interleaved pairs like zoo.

zoo's attention fuses q, k, v and rotates interleaved pairs (Meta Llama, moshi), so transformers'
q and k rows are permuted back (the inverse of transformers' own `convert_mimi_checkpoint_to_pytorch.py`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from tokenizers_audio.codec import SpeechCodec

from .common import load_converted
from .hf_llama import _halves_to_pairs

# transformers 5.x nested names -> the flat (Hub) names
_NESTED_TO_FLAT = [
    (r"^encoder\.encoder_seanet\.layers\.", "encoder.layers."),
    (r"^encoder\.encoder_transformer\.", "encoder_transformer."),
    (r"^encoder\.downsample\.", "downsample."),
    (r"^decoder\.upsample\.", "upsample."),
    (r"^decoder\.decoder_transformer\.", "decoder_transformer."),
    (r"^decoder\.decoder_seanet\.layers\.", "decoder.layers."),
]
# moshi names -> the flat (Hub) names; attention is handled apart (fused in moshi)
_MOSHI_TO_FLAT = [
    (r"^(encoder|decoder)\.model\.(\d+)\.block\.(\d+)\.conv\.conv\.", r"\1.layers.\2.block.\3.conv."),
    (r"^(encoder|decoder)\.model\.(\d+)\.conv\.conv\.", r"\1.layers.\2.conv."),
    (r"^decoder\.model\.(\d+)\.convtr\.convtr\.", r"decoder.layers.\1.conv."),
    (r"^downsample\.conv\.conv\.conv\.", "downsample.conv."),
    (r"^upsample\.convtr\.convtr\.convtr\.", "upsample.conv."),
    (r"^(encoder|decoder)_transformer\.transformer\.layers\.", r"\1_transformer.layers."),
    (r"\.norm1\.", ".input_layernorm."),
    (r"\.norm2\.", ".post_attention_layernorm."),
    (r"\.linear1\.", ".mlp.fc1."),
    (r"\.linear2\.", ".mlp.fc2."),
    (r"\.layer_scale_1\.", ".self_attn_layer_scale."),
    (r"\.layer_scale_2\.", ".mlp_layer_scale."),
    (r"\.self_attn\.out_projs\.0\.", ".self_attn.o_proj."),
    (r"^quantizer\.rvq_first\.", "quantizer.semantic_residual_vector_quantizer."),
    (r"^quantizer\.rvq_rest\.", "quantizer.acoustic_residual_vector_quantizer."),
    (r"\.vq\.layers\.(\d+)\._codebook\.", r".layers.\1.codebook."),
    (r"\.codebook\.embedding_sum$", ".codebook.embed_sum"),
    (r"\.codebook\._initialized$", ".codebook.initialized"),
]
# flat (Hub) names -> zoo names, after the attention has been fused
_FLAT_TO_ZOO = [
    (r"\.input_layernorm\.", ".norm1."),
    (r"\.post_attention_layernorm\.", ".norm2."),
    (r"\.mlp\.fc1\.", ".fc1."),
    (r"\.mlp\.fc2\.", ".fc2."),
    (r"\.self_attn_layer_scale\.", ".scale1."),
    (r"\.mlp_layer_scale\.", ".scale2."),
    (r"\.self_attn\.o_proj\.", ".attn.proj."),
    (r"^upsample\.conv\.", "upsample.convtr."),
    (r"^quantizer\.semantic_residual_vector_quantizer\.", "quantizer.semantic."),
    (r"^quantizer\.acoustic_residual_vector_quantizer\.", "quantizer.acoustic."),
    (r"\.layers\.(\d+)\.codebook\.embed_sum$", r".codebooks.\1.embedding_sum"),
    (r"\.layers\.(\d+)\.codebook\.cluster_usage$", r".codebooks.\1.cluster_usage"),
    (r"\.layers\.(\d+)\.codebook\.initialized$", r".codebooks.\1.initialized"),
]


def _rename(name: str, rules) -> str:
    for pattern, replacement in rules:
        name = re.sub(pattern, replacement, name)
    return name


# MimiConfig fields that SpeechCodec implements at one value only (Mimi's)
_FIXED_MIMI_SETTINGS = {"audio_channels": 1, "use_causal_conv": True, "pad_mode": "constant", "trim_right_ratio": 1.0,
                        "use_conv_shortcut": False, "hidden_act": "gelu", "attention_bias": False}


def mimi_config_to_zoo(hf_config) -> dict:
    """A transformers `MimiConfig` (object or dict) -> `SpeechCodec` keyword arguments."""
    c = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
    for key, value in _FIXED_MIMI_SETTINGS.items():
        if c.get(key, value) != value:
            raise ValueError(f"MimiConfig.{key}={c[key]!r} is not supported (SpeechCodec implements {value!r}).")
    heads = c["num_attention_heads"]
    if c.get("num_key_value_heads", heads) != heads or c.get("head_dim", c["hidden_size"] // heads) * heads != c["hidden_size"]:
        raise ValueError("only Mimi configs with num_key_value_heads == num_attention_heads and head_dim * heads == "
                         "hidden_size convert.")
    if c.get("upsample_groups", c["hidden_size"]) != c["hidden_size"]:
        raise ValueError("only the channel-wise upsampling of Mimi (upsample_groups == hidden_size) converts.")
    rope = c.get("rope_parameters") or {"rope_theta": c.get("rope_theta", 10_000.0)}
    ratios = list(c["upsampling_ratios"])
    frame_rate = c.get("frame_rate") or c.get("_frame_rate") or 12.5
    return dict(
        sample_rate=c["sampling_rate"], num_filters=c["num_filters"], ratios=ratios, hidden_size=c["hidden_size"],
        num_residual_layers=c["num_residual_layers"], kernel_size=c["kernel_size"],
        residual_kernel_size=c["residual_kernel_size"], last_kernel_size=c["last_kernel_size"],
        dilation_base=c["dilation_growth_rate"], compress=c["compress"], num_transformer_layers=c["num_hidden_layers"],
        num_heads=heads, ffn_dim=c["intermediate_size"], context=c["sliding_window"],
        layer_scale=c["layer_scale_initial_scale"], rope_base=float(rope.get("rope_theta", 10_000.0)),
        frame_rate=float(frame_rate), num_codebooks=c["num_quantizers"],
        num_semantic_codebooks=c["num_semantic_quantizers"], codebook_size=c["codebook_size"],
        codebook_dim=c.get("vector_quantization_hidden_dimension", c["codebook_dim"]),
    )


def _fuse_attention(flat: dict, num_heads: int, permute: bool) -> dict:
    """Join q/k/v (transformers) or take moshi's fused in_projs.0 into zoo's `attn.qkv.weight`."""
    out = {}
    for name, tensor in flat.items():
        match = re.match(r"^(.*)\.self_attn\.(q_proj|k_proj|v_proj|in_projs\.0)\.weight$", name)
        if match is None:
            out[name] = tensor
            continue
        prefix, part = match.groups()
        if part == "in_projs.0":
            out[f"{prefix}.attn.qkv.weight"] = tensor
        elif part == "q_proj":
            q, k, v = (flat[f"{prefix}.self_attn.{p}_proj.weight"] for p in "qkv")
            if permute:
                q, k = _halves_to_pairs(q, num_heads), _halves_to_pairs(k, num_heads)
            out[f"{prefix}.attn.qkv.weight"] = torch.cat([q, k, v])
    return out


def convert_mimi(state_dict: dict, config=None, *, codec_config: dict | None = None) -> SpeechCodec:
    """A Mimi state dict (any of the three layouts above) -> `SpeechCodec` in eval mode, built from its
    `MimiConfig` (object or dict) or directly from `SpeechCodec` keyword arguments (`codec_config`).
    Unknown or missing keys raise."""
    if (config is None) == (codec_config is None):
        raise ValueError("pass either the checkpoint's MimiConfig (config=) or SpeechCodec arguments (codec_config=).")
    kwargs = dict(codec_config) if codec_config is not None else mimi_config_to_zoo(config)
    codec = SpeechCodec(**kwargs)
    moshi = any(".in_projs.0." in k or k.startswith("encoder.model.") for k in state_dict)
    flat = {_rename(k, _MOSHI_TO_FLAT if moshi else _NESTED_TO_FLAT): v for k, v in state_dict.items()}
    flat = _fuse_attention(flat, kwargs["num_heads"], permute=not moshi)
    zoo_keys = set(codec.state_dict())
    converted = {}
    for name, tensor in flat.items():
        new = _rename(name, _FLAT_TO_ZOO)
        if re.match(r"^decoder\.layers\.\d+\.conv\.", new) and new not in zoo_keys:
            new = new.replace(".conv.", ".convtr.", 1)  # the decoder's transposed convolutions
        if new.endswith(".initialized") and tensor.dim() == 1:
            tensor = tensor.float()
        converted[new] = tensor
    return load_converted(codec, converted, "Mimi checkpoint")


def hf_mimi_to_zoo(hf_model) -> SpeechCodec:
    """transformers `MimiModel` -> `SpeechCodec` with the same weights (for parity tests and benchmarks)."""
    return convert_mimi(hf_model.state_dict(), hf_model.config)


def convert_mimi_checkpoint(checkpoint: str | os.PathLike) -> SpeechCodec:
    """A Mimi checkpoint on disk -> `SpeechCodec`: a transformers folder (`config.json` +
    `model.safetensors`, e.g. `kyutai/mimi`) or one safetensors file (moshi's
    `tokenizer-e351c8d8-checkpoint125.safetensors` or the Hub's `model.safetensors`), whose config is the
    `config.json` beside it if there is one, else Mimi's released configuration (`MimiConfig()`).
    Safetensors only: nothing pickled is ever loaded."""
    from safetensors.torch import load_file
    from transformers import MimiConfig

    path = Path(checkpoint)
    weights = path / "model.safetensors" if path.is_dir() else path
    if weights.suffix != ".safetensors" or not weights.is_file():
        raise ValueError(f"{checkpoint} is not a Mimi safetensors file or a folder holding model.safetensors.")
    config_file = weights.parent / "config.json"
    config = MimiConfig(**json.loads(config_file.read_text())) if config_file.is_file() else MimiConfig()
    state_dict = load_file(weights)
    if any(k.startswith(("encoder.model.", "encoder.layers.", "encoder.encoder_seanet.")) for k in state_dict):
        return convert_mimi(state_dict, config)
    raise ValueError(f"{weights} holds no Mimi encoder weights (keys like {sorted(state_dict)[:3]}); "
                     "for a Moshi LM file, pass the tokenizer file (tokenizer-*.safetensors) instead.")
