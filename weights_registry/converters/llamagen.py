"""LlamaGen checkpoints -> zoo: GPT (`c2i_*.pt`) -> `ARTransformer`, tokenizer (`vq_ds*.pt`) -> `VQModel`.

LlamaGen (FoundationVision/LlamaGen, autoregressive/models/gpt.py) keys, for layer i:
`layers.i.attention.wqkv`, `layers.i.attention.wo`, `layers.i.feed_forward.{w1,w2,w3}`,
`layers.i.{attention_norm,ffn_norm}`, plus `cls_embedding.embedding_table`, `tok_embeddings`, `norm`
and `output`. zoo fuses w1 (gate) and w3 (up) into one `gate_up` projection; everything else maps
one-to-one. RoPE tables are not stored; zoo rebuilds LlamaGen's 2D table from the config.
"""

from __future__ import annotations

import os
import re

import torch

from zoo.ar.transformer import LLAMAGEN_SIZES, ARTransformer

from .common import check_keys, load_converted, load_torch_checkpoint, pick_state_dict

# dim -> heads of LlamaGen's GPT sizes (the checkpoint stores no head count)
HEADS_BY_DIM = {dim: heads for _, heads, dim in LLAMAGEN_SIZES.values()}


def llamagen_gpt_keys(num_layers: int) -> list[str]:
    keys = ["cls_embedding.embedding_table.weight", "tok_embeddings.weight", "norm.weight", "output.weight"]
    for i in range(num_layers):
        keys += [f"layers.{i}.attention.wqkv.weight", f"layers.{i}.attention.wo.weight",
                 f"layers.{i}.attention_norm.weight", f"layers.{i}.ffn_norm.weight"]
        keys += [f"layers.{i}.feed_forward.{w}.weight" for w in ("w1", "w2", "w3")]
    return keys


def convert_llamagen_gpt(
    checkpoint: str | os.PathLike | dict,
    *,
    num_heads: int | None = None,
    grid_size: int | None = None,
    image_size: int | None = None,
    downsample: int = 16,
    norm_eps: float = 1e-5,
    rope_base: float = 10000.0,
) -> ARTransformer:
    """Build an `ARTransformer` from a LlamaGen class-conditional GPT checkpoint.

    Args:
        checkpoint: a path to the `.pt` file, the loaded checkpoint, or its state dict. The weights are
            read from `ckpt["ema"]` if present, else `ckpt["model"]`, else the dict itself (FSDP).
        num_heads: attention heads; default LlamaGen's for the checkpoint's width (B 12, L 16, XL 20, ...).
        grid_size / image_size: the token grid side (image_size // downsample); default 16 (256 px).
    """
    if not isinstance(checkpoint, dict):
        checkpoint = load_torch_checkpoint(checkpoint)
    sd = pick_state_dict(checkpoint, ("ema", "model"))
    if any(k.startswith("cls_embedding.cap_proj") for k in sd):
        raise ValueError("this is a text-to-image LlamaGen checkpoint (cls_embedding.cap_proj.*); "
                         "convert_llamagen_gpt handles the class-conditional c2i_*.pt checkpoints.")
    sd.pop("freqs_cis", None)
    num_layers = len({int(k.split(".")[1]) for k in sd if k.startswith("layers.")})
    check_keys(sd, llamagen_gpt_keys(num_layers), what="LlamaGen GPT checkpoint")
    model = ARTransformer(**_gpt_config(sd, num_layers, num_heads, grid_size, image_size, downsample, norm_eps,
                                        rope_base), class_dropout_prob=0.1)
    new = {"token_embedding.weight": sd["tok_embeddings.weight"], **_gpt_body(sd, num_layers)}
    return load_converted(model, new, "converted LlamaGen GPT")


def _gpt_config(sd, num_layers, num_heads, grid_size, image_size, downsample, norm_eps, rope_base) -> dict:
    """ARTransformer settings read off a LlamaGen GPT state dict (the output head fixes vocab and width)."""
    vocab_size, dim = sd["output.weight"].shape
    if num_heads is None:
        if dim not in HEADS_BY_DIM:
            raise ValueError(f"width {dim} is not a LlamaGen size; pass num_heads explicitly.")
        num_heads = HEADS_BY_DIM[dim]
    head_dim = dim // num_heads
    qkv_rows = sd["layers.0.attention.wqkv.weight"].shape[0]
    if grid_size is None:
        grid_size = image_size // downsample if image_size else 16
    return dict(vocab_size=vocab_size, hidden_size=dim, num_layers=num_layers, num_heads=num_heads,
                num_kv_heads=(qkv_rows // head_dim - num_heads) // 2,
                intermediate_size=sd["layers.0.feed_forward.w1.weight"].shape[0], norm_eps=norm_eps,
                num_classes=sd["cls_embedding.embedding_table.weight"].shape[0] - 1, num_prefix_tokens=1,
                grid_size=(grid_size, grid_size), position_embedding="rope_2d", rope_base=rope_base,
                rope_prefix="zero")


def _gpt_body(sd, num_layers) -> dict:
    """zoo names for the class embedding, the blocks, the final norm and the logits head."""
    new = {"class_embedding.weight": sd["cls_embedding.embedding_table.weight"], "norm.weight": sd["norm.weight"],
           "head.weight": sd["output.weight"]}
    for i in range(num_layers):
        old = f"layers.{i}."
        new[f"blocks.{i}.attn.qkv.weight"] = sd[old + "attention.wqkv.weight"]
        new[f"blocks.{i}.attn.proj.weight"] = sd[old + "attention.wo.weight"]
        new[f"blocks.{i}.attn_norm.weight"] = sd[old + "attention_norm.weight"]
        new[f"blocks.{i}.mlp_norm.weight"] = sd[old + "ffn_norm.weight"]
        new[f"blocks.{i}.mlp.gate_up.weight"] = torch.cat(
            [sd[old + "feed_forward.w1.weight"], sd[old + "feed_forward.w3.weight"]])
        new[f"blocks.{i}.mlp.down.weight"] = sd[old + "feed_forward.w2.weight"]
    return new


def llamagen_dd_keys(num_layers: int) -> list[str]:
    """The keys of an official LlamaGen-DD checkpoint (microsoft/distilled_decoding, `DDTransformer`)."""
    keys = [k for k in llamagen_gpt_keys(num_layers) if k != "tok_embeddings.weight"]
    return keys + ["tok_embeddings.weight", "tok_embeddings.bias", "n_d_embed.weight",
                   "final_layer_conti.linear.weight", "final_layer_conti.linear.bias",
                   "final_layer_conti.scale_shift_table"]


def convert_llamagen_dd(
    checkpoint: str | os.PathLike | dict,
    *,
    num_heads: int | None = None,
    grid_size: int | None = None,
    image_size: int | None = None,
    downsample: int = 16,
    norm_eps: float = 1e-5,
    rope_base: float = 10000.0,
):
    """Build a `DDTransformer` from an official LlamaGen-DD checkpoint (`llamagen-B.pt`, `llamagen-L.pt`).

    The weights are read from `ckpt["ema"]` if present, else `ckpt["model"]`, else the dict itself. The
    official loader uses strict=False; here every key is mapped and a missing one is an error.
    """
    from zoo.ar.distilled import DDTransformer

    if not isinstance(checkpoint, dict):
        checkpoint = load_torch_checkpoint(checkpoint)
    sd = pick_state_dict(checkpoint, ("ema", "model"))
    sd.pop("freqs_cis", None)
    num_layers = len({int(k.split(".")[1]) for k in sd if k.startswith("layers.")})
    check_keys(sd, llamagen_dd_keys(num_layers), what="LlamaGen-DD checkpoint")
    codebook_dim = sd["tok_embeddings.weight"].shape[1]
    config = _gpt_config(sd, num_layers, num_heads, grid_size, image_size, downsample, norm_eps, rope_base)
    model = DDTransformer(backbone_config=config, codebook_dim=codebook_dim)
    new = {f"backbone.{k}": v for k, v in _gpt_body(sd, num_layers).items()}
    new.update({
        "backbone.input_proj.weight": sd["tok_embeddings.weight"], "backbone.input_proj.bias": sd["tok_embeddings.bias"],
        "data_noise_embedding.weight": sd["n_d_embed.weight"],
        "continuous_head.linear.weight": sd["final_layer_conti.linear.weight"],
        "continuous_head.linear.bias": sd["final_layer_conti.linear.bias"],
        "continuous_head.scale_shift_table": sd["final_layer_conti.scale_shift_table"],
    })
    return load_converted(model, new, "converted LlamaGen-DD")


# ----------------------------------------------------------------------------------------- VQ tokenizer
# LlamaGen's VQModel names -> zoo's (tokenizers_visual/vq.py); the rest of each key is unchanged.
_VQ_RENAMES = [
    (r"\.conv_blocks\.", ".levels."), (r"\.nin_shortcut\.", ".shortcut."), (r"\.proj_out\.", ".proj."),
    (r"\.(downsample|upsample)\.", ".resample."), (r"\.mid\.0\.", ".mid.res1."), (r"\.mid\.1\.", ".mid.attn."),
    (r"\.mid\.2\.", ".mid.res2."), (r"^quantize\.embedding\.", "quantizer.embedding."),
]


def llamagen_vq_key(key: str) -> str:
    for pattern, replacement in _VQ_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def convert_llamagen_vq(checkpoint: str | os.PathLike | dict, *, norm_groups: int = 32):
    """Build a `VQModel` from a LlamaGen tokenizer checkpoint (`vq_ds16_c2i.pt`, `vq_ds8_c2i.pt`, ...).

    The weights are read from `ckpt["model"]` (the discriminator and optimizer entries are ignored);
    widths, levels, block counts and the codebook are read off the tensor shapes.
    """
    from tokenizers_visual.vq import VQModel

    if not isinstance(checkpoint, dict):
        checkpoint = load_torch_checkpoint(checkpoint)
    sd = pick_state_dict(checkpoint, ("ema", "model"))
    sd.pop("quantize.codebook_used", None)  # a usage counter, not a weight
    if "quantize.embedding.weight" not in sd or "encoder.conv_in.weight" not in sd:
        raise ValueError("not a LlamaGen VQ checkpoint: quantize.embedding.weight / encoder.conv_in.weight missing.")
    codebook_size, codebook_dim = sd["quantize.embedding.weight"].shape
    encoder_ch, in_channels = sd["encoder.conv_in.weight"].shape[:2]
    levels = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.conv_blocks."))
    widths = [sd[f"encoder.conv_blocks.{i}.res.0.conv1.weight"].shape[0] for i in range(levels)]
    ch_mult = [w // encoder_ch for w in widths]
    num_res_blocks = 1 + max(int(k.split(".")[4]) for k in sd if k.startswith("encoder.conv_blocks.0.res."))
    decoder_ch = sd[f"decoder.conv_blocks.{levels - 1}.res.0.conv1.weight"].shape[0] // ch_mult[0]
    model = VQModel(in_channels=in_channels, codebook_size=codebook_size, codebook_dim=codebook_dim,
                    codebook_l2_norm=True, encoder_ch=encoder_ch, decoder_ch=decoder_ch, encoder_ch_mult=ch_mult,
                    decoder_ch_mult=ch_mult, num_res_blocks=num_res_blocks,
                    z_channels=sd["quant_conv.weight"].shape[1], norm_groups=norm_groups)
    return load_converted(model, {llamagen_vq_key(k): v for k, v in sd.items()},
                          "LlamaGen VQ checkpoint (after renaming)")
