"""Official FlexTok checkpoints (apple/ml-flextok, `EPFL-VILAB/flextok_*` `model.safetensors`) -> `FlexTok`.

The official model is a Hydra tree of `SequentialModuleDictWrapper`s; its state dict has three parts:

- `vae.vae.*`: a diffusers `AutoencoderKL`, same names as zoo's `vae.*`;
- `encoder.module_dict.<name>.*`: `enc_patch_emb.patch_proj` (2x2 latent patches -> width),
  `enc_posemb_module.posembs` (fixed sin-cos, [1, D, H, W]), `enc_register_module.registers` [R, D],
  `enc_transformer.blocks.N.*` and `enc_to_latents.proj` (width -> 6);
- `decoder.module_dict.<name>.*`: `dec_from_latents.proj` (6 -> width), `dec_registers_posemb_module.posembs`
  (learned, [1, 1, D, R]), `dec_nested_dropout.dropout_mask_token` [D], `dec_latent_dropout.nullcond` [D],
  `dec_noise_patch_emb.patch_proj`, `dec_patches_posemb_module.posembs`, `dec_time_embedder.mlp.{0,2}`,
  `dec_transformer.blocks.N.*` (with `adaLN_modulation.1`, two segments: patches then registers) and
  `dec_to_patches` (`adaLN_modulation.1`, `proj`).

Transformer blocks keep q, k, v apart (`attn.wq|wk|wv`) and a SwiGLU as `mlp.fc1` (gate), `mlp.fc3` (up),
`mlp.fc2` (down); zoo fuses q|k|v and gate|up. Norms have no parameters. The VAE's `scaling_factor`
lives in the VAE's own Hub config (`EPFL-VILAB/flextok_vae_c16`): pass that config as `vae_config`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from tokenizers_visual.flextok import FLEXTOK_VAE_CONFIG, FlexTok

from .common import check_keys, load_converted

ENC, DEC = "encoder.module_dict.", "decoder.module_dict."
_BLOCK_KEYS = ("attn.wq.weight", "attn.wk.weight", "attn.wv.weight", "attn.proj.weight",
               "mlp.fc1.weight", "mlp.fc2.weight", "mlp.fc3.weight")


def flextok_keys(encoder_depth: int, decoder_depth: int) -> list[str]:
    """Every non-VAE key of an official FlexTok state dict."""
    keys = [f"{ENC}enc_patch_emb.patch_proj.weight", f"{ENC}enc_patch_emb.patch_proj.bias",
            f"{ENC}enc_posemb_module.posembs", f"{ENC}enc_register_module.registers",
            f"{ENC}enc_to_latents.proj.weight", f"{ENC}enc_to_latents.proj.bias",
            f"{DEC}dec_from_latents.proj.weight", f"{DEC}dec_from_latents.proj.bias",
            f"{DEC}dec_registers_posemb_module.posembs", f"{DEC}dec_nested_dropout.dropout_mask_token",
            f"{DEC}dec_latent_dropout.nullcond", f"{DEC}dec_noise_patch_emb.patch_proj.weight",
            f"{DEC}dec_noise_patch_emb.patch_proj.bias", f"{DEC}dec_patches_posemb_module.posembs",
            f"{DEC}dec_to_patches.adaLN_modulation.1.weight", f"{DEC}dec_to_patches.adaLN_modulation.1.bias",
            f"{DEC}dec_to_patches.proj.weight", f"{DEC}dec_to_patches.proj.bias"]
    keys += [f"{DEC}dec_time_embedder.mlp.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]
    keys += [f"{ENC}enc_transformer.blocks.{i}.{k}" for i in range(encoder_depth) for k in _BLOCK_KEYS]
    keys += [f"{DEC}dec_transformer.blocks.{i}.{k}" for i in range(decoder_depth)
             for k in _BLOCK_KEYS + ("adaLN_modulation.1.weight", "adaLN_modulation.1.bias")]
    return keys


def _depth(state_dict: dict, prefix: str) -> int:
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    if not blocks:
        raise ValueError(f"no transformer blocks under {prefix}*: not an official FlexTok checkpoint.")
    return max(blocks) + 1


def _blocks(sd: dict, source: str, target: str, depth: int, adaln: bool) -> dict:
    out = {}
    for i in range(depth):
        s, t = f"{source}{i}.", f"{target}{i}."
        out[t + "attn.qkv.weight"] = torch.cat([sd[s + f"attn.{n}.weight"] for n in ("wq", "wk", "wv")])
        out[t + "attn.proj.weight"] = sd[s + "attn.proj.weight"]
        out[t + "mlp.gate_up.weight"] = torch.cat([sd[s + "mlp.fc1.weight"], sd[s + "mlp.fc3.weight"]])
        out[t + "mlp.down.weight"] = sd[s + "mlp.fc2.weight"]
        if adaln:
            out[t + "adaln.weight"] = sd[s + "adaLN_modulation.1.weight"]
            out[t + "adaln.bias"] = sd[s + "adaLN_modulation.1.bias"]
    return out


def _grid_posemb(posembs: torch.Tensor) -> torch.Tensor:
    """official [1, D, H, W] -> zoo [H, W, D]."""
    return posembs[0].permute(1, 2, 0)


def convert_flextok(state_dict: dict, vae_config: dict | None = None, head_dim: int = 64,
                    **flextok_kwargs) -> FlexTok:
    """An official FlexTok state dict -> `FlexTok` in eval mode. Sizes (widths, depths, registers, image
    size) are read off the weights; `vae_config` is the VAE's diffusers config (default: the official
    16-channel f8 layout with scaling_factor 1.0). Missing or unexpected keys raise."""
    sd = dict(state_dict)
    enc_depth, dec_depth = _depth(sd, f"{ENC}enc_transformer.blocks."), _depth(sd, f"{DEC}dec_transformer.blocks.")
    vae_keys = [k for k in sd if k.startswith("vae.vae.")]
    check_keys({k: v for k, v in sd.items() if k not in vae_keys}, flextok_keys(enc_depth, dec_depth),
               what="FlexTok checkpoint")
    vae_config = dict(vae_config or FLEXTOK_VAE_CONFIG)
    patch_weight = sd[f"{ENC}enc_patch_emb.patch_proj.weight"]  # [D, 4 * C]
    encoder_dim, patch_dim = patch_weight.shape
    patch_size = int(round((patch_dim / vae_config["latent_channels"]) ** 0.5))
    grid = sd[f"{ENC}enc_posemb_module.posembs"].shape[-1]
    downsample = 2 ** (len(vae_config["block_out_channels"]) - 1)
    config = dict(vae_config=vae_config, image_size=grid * patch_size * downsample, patch_size=patch_size,
                  num_registers=sd[f"{ENC}enc_register_module.registers"].shape[0],
                  encoder_dim=encoder_dim, encoder_depth=enc_depth,
                  decoder_dim=sd[f"{DEC}dec_from_latents.proj.weight"].shape[0], decoder_depth=dec_depth,
                  head_dim=head_dim)
    model = FlexTok(**{**config, **flextok_kwargs})

    R, D = model.num_registers, model.config.decoder_dim
    converted = {"vae." + k[len("vae.vae."):]: sd[k] for k in vae_keys}
    converted.update({
        "encoder.patch_proj.weight": patch_weight,
        "encoder.patch_proj.bias": sd[f"{ENC}enc_patch_emb.patch_proj.bias"],
        "encoder.patch_posemb": _grid_posemb(sd[f"{ENC}enc_posemb_module.posembs"]),
        "encoder.registers": sd[f"{ENC}enc_register_module.registers"],
        "encoder.to_codes.proj.weight": sd[f"{ENC}enc_to_latents.proj.weight"],
        "encoder.to_codes.proj.bias": sd[f"{ENC}enc_to_latents.proj.bias"],
        "decoder.from_codes.weight": sd[f"{DEC}dec_from_latents.proj.weight"],
        "decoder.from_codes.bias": sd[f"{DEC}dec_from_latents.proj.bias"],
        # a learnable 1D position embedding, stored [n_dims=1, 1, D, R]
        "decoder.register_posemb": sd[f"{DEC}dec_registers_posemb_module.posembs"].reshape(D, R).T,
        "decoder.mask_token": sd[f"{DEC}dec_nested_dropout.dropout_mask_token"],
        "decoder.null_condition": sd[f"{DEC}dec_latent_dropout.nullcond"],
        "decoder.patch_proj.weight": sd[f"{DEC}dec_noise_patch_emb.patch_proj.weight"],
        "decoder.patch_proj.bias": sd[f"{DEC}dec_noise_patch_emb.patch_proj.bias"],
        "decoder.patch_posemb": _grid_posemb(sd[f"{DEC}dec_patches_posemb_module.posembs"]),
        "decoder.time_embedding.linear_1.weight": sd[f"{DEC}dec_time_embedder.mlp.0.weight"],
        "decoder.time_embedding.linear_1.bias": sd[f"{DEC}dec_time_embedder.mlp.0.bias"],
        "decoder.time_embedding.linear_2.weight": sd[f"{DEC}dec_time_embedder.mlp.2.weight"],
        "decoder.time_embedding.linear_2.bias": sd[f"{DEC}dec_time_embedder.mlp.2.bias"],
        "decoder.to_patches.adaln.weight": sd[f"{DEC}dec_to_patches.adaLN_modulation.1.weight"],
        "decoder.to_patches.adaln.bias": sd[f"{DEC}dec_to_patches.adaLN_modulation.1.bias"],
        "decoder.to_patches.proj.weight": sd[f"{DEC}dec_to_patches.proj.weight"],
        "decoder.to_patches.proj.bias": sd[f"{DEC}dec_to_patches.proj.bias"],
    })
    converted.update(_blocks(sd, f"{ENC}enc_transformer.blocks.", "encoder.blocks.", enc_depth, adaln=False))
    converted.update(_blocks(sd, f"{DEC}dec_transformer.blocks.", "decoder.blocks.", dec_depth, adaln=True))
    return load_converted(model, converted, "FlexTok checkpoint")


def convert_flextok_checkpoint(checkpoint: str | os.PathLike, vae_config: str | os.PathLike | dict | None = None,
                               num_heads: int | None = None, image_size: int | None = None) -> FlexTok:
    """`model.safetensors` of an official FlexTok release (or its folder) -> `FlexTok`. `vae_config`: the
    VAE's `config.json` (path or dict); `num_heads` overrides head_dim = width / num_heads (official: 64).
    Safetensors only: nothing pickled is ever loaded."""
    from safetensors.torch import load_file

    path = Path(checkpoint)
    weights = path / "model.safetensors" if path.is_dir() else path
    if weights.suffix != ".safetensors" or not weights.is_file():
        raise ValueError(f"{checkpoint} is not a FlexTok safetensors file or a folder holding model.safetensors.")
    if isinstance(vae_config, (str, os.PathLike)):
        vae_config = json.loads(Path(vae_config).read_text())
    if vae_config is not None:
        vae_config = {k: v for k, v in vae_config.items() if not k.startswith("_")}
    state_dict = load_file(weights)
    head_dim = 64
    if num_heads is not None:
        head_dim = state_dict[f"{ENC}enc_patch_emb.patch_proj.weight"].shape[0] // num_heads
    model = convert_flextok(state_dict, vae_config, head_dim=head_dim)
    if image_size is not None and image_size != model.config.image_size:
        raise ValueError(f"image_size={image_size} does not match the checkpoint's {model.config.image_size}.")
    return model
