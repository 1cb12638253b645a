"""Feed-forward layers."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .linear import Linear


def find_multiple(n: int, k: int) -> int:
    """The smallest multiple of k that is >= n."""
    return n if n % k == 0 else n + k - n % k


def llama_ffn_dim(dim: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None) -> int:
    """Llama's / LlamaGen's SwiGLU hidden size: int(2 * 4 * dim / 3), scaled, rounded up to multiple_of."""
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return find_multiple(hidden, multiple_of)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), with gate and up fused into one projection (one matmul per step)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.gate_up = Linear(dim, 2 * hidden_dim, bias=False)
        self.down = Linear(hidden_dim, dim, bias=False)
        self.dropout = dropout

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        out = self.down(F.silu(gate) * up)
        return F.dropout(out, self.dropout, training=True) if self.training and self.dropout else out
