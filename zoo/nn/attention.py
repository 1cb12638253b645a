"""Multi-head attention with grouped KV heads, RoPE, and a static (preallocated) KV cache.

The cache follows gpt-fast: fixed-size buffers written in place at `input_pos`, so every decode
step has the same shapes (what `torch.compile` and CUDA graphs need) and nothing is concatenated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import Linear
from .rope import apply_rope


class KVCache(nn.Module):
    """Keys and values of one attention layer: two [rows, kv_heads, max_len, head_dim] buffers."""

    def __init__(self, rows: int, kv_heads: int, max_len: int, head_dim: int, dtype=None, device=None):
        super().__init__()
        shape = (rows, kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Write k, v [rows, kv_heads, T, head_dim] at positions input_pos [T]; return the full buffers."""
        self.k.index_copy_(2, input_pos, k)
        self.v.index_copy_(2, input_pos, v)
        return self.k, self.v


class Attention(nn.Module):
    """Fused-QKV attention. q and k are rotated together (they are adjacent in the QKV output).

    `qk_norm` applies a parameter-free LayerNorm over each head of q and k before RoPE (FlexTok's
    QK-norm); `scale` overrides SDPA's 1 / sqrt(head_dim) (FlexTok's muP scale is 8 / head_dim).
    """

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, dropout: float = 0.0,
                 qk_norm: bool = False, scale: float | None = None):
        super().__init__()
        num_kv_heads = num_kv_heads or num_heads
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_heads={num_heads}; pick a divisor.")
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}.")
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        self.qkv = Linear(dim, (num_heads + 2 * num_kv_heads) * self.head_dim, bias=False)
        self.proj = Linear(num_heads * self.head_dim, dim, bias=False)
        self.dropout, self.qk_norm, self.scale = dropout, qk_norm, scale
        self.kv_cache: KVCache | None = None

    def forward(
        self,
        x: torch.Tensor,  # [B, T, dim]
        rope: torch.Tensor | None,  # rotations from rope_rotation(), or None
        mask: torch.Tensor | None,  # bool or additive float, broadcastable to [B, heads, T, S]
        input_pos: torch.Tensor | None = None,  # [T] cache positions when decoding; None: no cache
        is_causal: bool = False,
        kv_len: int | None = None,  # attend to cache positions [0, kv_len) only (eager decoding)
    ) -> torch.Tensor:
        q, k, v = self.heads(x, rope)
        if input_pos is not None:  # decoding: write the new positions, attend over the cache (up to kv_len)
            k, v = self.kv_cache.update(input_pos, k, v)
            if kv_len is not None:
                k, v = k[:, :, :kv_len], v[:, :, :kv_len]
        return self.attend(q, k, v, mask, is_causal)

    def heads(self, x: torch.Tensor, rope: torch.Tensor | None):
        """x [B, T, dim] -> q [B, H, T, Dh], k and v [B, Hkv, T, Dh], q and k rotated by `rope`."""
        B, T, _ = x.shape
        H, Hkv, Dh = self.num_heads, self.num_kv_heads, self.head_dim
        qk, v = self.qkv(x).split([(H + Hkv) * Dh, Hkv * Dh], dim=-1)
        qk = qk.view(B, T, H + Hkv, Dh)
        if self.qk_norm:  # per head (so q and k can be normalised together), in float32 as FlexTok's
            qk = F.layer_norm(qk.float(), (Dh,)).to(qk.dtype)
        if rope is not None:
            qk = apply_rope(qk, rope)
        q, k = qk.transpose(1, 2).split([H, Hkv], dim=1)
        return q, k, v.view(B, T, Hkv, Dh).transpose(1, 2)

    def attend(self, q, k, v, mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        """Scaled dot-product attention of q over (k, v), then the output projection: [B, T, dim]."""
        B, H, T, Dh = q.shape
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=H != self.num_kv_heads,
            dropout_p=self.dropout if self.training else 0.0, scale=self.scale,
        )
        return self.proj(out.transpose(1, 2).reshape(B, T, H * Dh))
