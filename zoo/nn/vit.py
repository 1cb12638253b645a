"""Bidirectional transformer blocks for tokenizers (FlexTok's trunk), with optional adaLN-zero.

FlexTok's `FlexBlock` / `FlexBlockAdaLN` (apple/ml-flextok, model/layers/transformer_blocks.py):
pre-norm with a parameter-free float32 LayerNorm, attention with QK-norm and no biases, a SwiGLU MLP
whose hidden size is int(2 * mlp_ratio * dim / 3). The adaLN-zero variant turns a condition vector
(the time embedding) into shift / scale / gate for both sub-layers; with `adaln_segments` = S the
projection is S times wider and each contiguous segment of the sequence (FlexTok's decoder: the noised
patches, then the registers) gets its own modulation. The projection starts at zero, so every block
starts as the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention
from .mlp import SwiGLU


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """FlexTok's Fp32LayerNorm(bias=False, elementwise_affine=False): normalise in float32."""
    return F.layer_norm(x.float(), (x.shape[-1],)).to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def expand_segments(modulation: torch.Tensor, segment_lengths: list[int]) -> torch.Tensor:
    """[B, S * W] per-segment modulation -> [B, sum(segment_lengths), W], segment s repeated over its tokens."""
    B, S = modulation.shape[0], len(segment_lengths)
    per_segment = modulation.view(B, S, -1)
    lengths = torch.tensor(segment_lengths, device=modulation.device)
    return per_segment.repeat_interleave(lengths, dim=1, output_size=sum(segment_lengths))


def sincos_2d(height: int, width: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding [height, width, dim] (MoCo v3), laid out as FlexTok's:
    [sin(row w), cos(row w), sin(col w), cos(col w)] with dim / 4 frequencies w each."""
    if dim % 4:
        raise ValueError(f"a 2D sin-cos embedding needs dim divisible by 4, got {dim}.")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    rows = torch.arange(height, dtype=torch.float32)[:, None] * omega  # [H, dim/4]
    cols = torch.arange(width, dtype=torch.float32)[:, None] * omega  # [W, dim/4]
    rows = torch.cat([rows.sin(), rows.cos()], -1)[:, None].expand(height, width, dim // 2)
    cols = torch.cat([cols.sin(), cols.cos()], -1)[None].expand(height, width, dim // 2)
    return torch.cat([rows, cols], dim=-1)


class ViTBlock(nn.Module):
    """Pre-norm block: x + gate * attn(modulate(norm(x))), then the same for the MLP (gates are 1 and
    modulation is off without adaLN)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True,
                 scale: float | None = None, adaln_segments: int = 0):
        super().__init__()
        self.dim, self.adaln_segments = dim, adaln_segments
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, scale=scale)
        self.mlp = SwiGLU(dim, int(2 * mlp_ratio * dim / 3))
        if adaln_segments:
            self.adaln = nn.Linear(dim, adaln_segments * 6 * dim)
            nn.init.zeros_(self.adaln.weight)
            nn.init.zeros_(self.adaln.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, condition: torch.Tensor | None = None,
                segment_lengths: list[int] | None = None) -> torch.Tensor:
        """x [B, T, D]; mask: bool [T, T] or [B, 1, T, T] (True = attend); condition [B, D] with
        segment_lengths summing to T for the adaLN variant."""
        if not self.adaln_segments:
            x = x + self.attn(layer_norm(x), None, mask)
            return x + self.mlp(layer_norm(x))
        modulation = expand_segments(self.adaln(F.silu(condition)), segment_lengths)
        gate_attn, gate_mlp, shift_attn, scale_attn, shift_mlp, scale_mlp = modulation.chunk(6, dim=-1)
        x = x + gate_attn * self.attn(modulate(layer_norm(x), shift_attn, scale_attn), None, mask)
        return x + gate_mlp * self.mlp(modulate(layer_norm(x), shift_mlp, scale_mlp))


class AdaLNHead(nn.Module):
    """Output head: parameter-free LayerNorm, optional adaLN shift/scale from the condition, linear."""

    def __init__(self, dim: int, out_dim: int, adaln: bool = False):
        super().__init__()
        self.proj = nn.Linear(dim, out_dim)
        self.adaln = nn.Linear(dim, 2 * dim) if adaln else None
        if adaln:
            nn.init.zeros_(self.adaln.weight)
            nn.init.zeros_(self.adaln.bias)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        x = layer_norm(x)
        if self.adaln is not None:
            shift, scale = self.adaln(F.silu(condition))[:, None].chunk(2, dim=-1)
            x = modulate(x, shift, scale)
        return self.proj(x)


def mup_attention_scale(head_dim: int) -> float:
    """FlexTok's muP attention scale, 8 / head_dim (= 1 / sqrt(head_dim) at head_dim 64)."""
    return 8.0 / head_dim
