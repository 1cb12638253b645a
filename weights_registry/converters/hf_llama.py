"""HF transformers `LlamaForCausalLM` <-> `ARTransformer` (1D RoPE layout).

Used to prove the engine against transformers (same logits) and to benchmark both on the same weights.
HF's Llama rotates "halves" of each head (rotate_half); zoo rotates interleaved pairs (Meta Llama,
LlamaGen). The q and k rows are permuted between the two conventions, exactly as transformers'
own `convert_llama_weights_to_hf.py` does in the other direction.
"""

from __future__ import annotations

import torch

from zoo.ar.transformer import ARTransformer

from .common import check_keys


def _halves_to_pairs(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Rows [h, (2, Dh/2)] (HF) -> [h, (Dh/2, 2)] (interleaved pairs)."""
    out_features, in_features = w.shape
    head_dim = out_features // num_heads
    return w.view(num_heads, 2, head_dim // 2, in_features).transpose(1, 2).reshape(out_features, in_features)


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    if params.get("rope_type", "default") != "default":
        raise ValueError(f"only plain RoPE converts (rope_type 'default'), got {params.get('rope_type')!r}.")
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def hf_llama_to_zoo(hf_model, num_prefix_tokens: int = 0) -> ARTransformer:
    """Convert a `LlamaForCausalLM` into an `ARTransformer` with 1D RoPE over all positions.

    num_prefix_tokens: how many leading positions `generate` treats as the prompt (prefix_ids).
    """
    c = hf_model.config
    if getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False):
        raise ValueError("Llama checkpoints with attention or MLP biases are not supported.")
    if c.hidden_act != "silu":
        raise ValueError(f"only SwiGLU (hidden_act='silu') converts, got {c.hidden_act!r}.")
    H, Hkv, L = c.num_attention_heads, c.num_key_value_heads, c.num_hidden_layers
    model = ARTransformer(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_layers=L, num_heads=H, num_kv_heads=Hkv,
        intermediate_size=c.intermediate_size, norm_eps=c.rms_norm_eps, num_classes=0,
        num_prefix_tokens=num_prefix_tokens, seq_len=c.max_position_embeddings - num_prefix_tokens,
        position_embedding="rope_1d", rope_prefix="positions", rope_base=_rope_theta(c),
    )
    sd = hf_model.state_dict()
    expected = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    for i in range(L):
        p = f"model.layers.{i}."
        expected += [p + f"self_attn.{x}_proj.weight" for x in "qkvo"]
        expected += [p + f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")]
        expected += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
    if c.tie_word_embeddings:
        sd.setdefault("lm_head.weight", sd["model.embed_tokens.weight"])
    check_keys(sd, expected, ignore=[k for k in sd if k.endswith("rotary_emb.inv_freq")], what="HF Llama model")
    new = {
        "token_embedding.weight": sd["model.embed_tokens.weight"],
        "norm.weight": sd["model.norm.weight"],
        "head.weight": sd["lm_head.weight"],
    }
    for i in range(L):
        p = f"model.layers.{i}."
        q = _halves_to_pairs(sd[p + "self_attn.q_proj.weight"], H)
        k = _halves_to_pairs(sd[p + "self_attn.k_proj.weight"], Hkv)
        new[f"blocks.{i}.attn.qkv.weight"] = torch.cat([q, k, sd[p + "self_attn.v_proj.weight"]])
        new[f"blocks.{i}.attn.proj.weight"] = sd[p + "self_attn.o_proj.weight"]
        new[f"blocks.{i}.mlp.gate_up.weight"] = torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]])
        new[f"blocks.{i}.mlp.down.weight"] = sd[p + "mlp.down_proj.weight"]
        new[f"blocks.{i}.attn_norm.weight"] = sd[p + "input_layernorm.weight"]
        new[f"blocks.{i}.mlp_norm.weight"] = sd[p + "post_attention_layernorm.weight"]
    model.load_state_dict(new, strict=True)
    return (model if hf_model.dtype == model.dtype else model.to(hf_model.dtype)).eval()
