"""Token-Shuffle's layers (Ma et al., arXiv 2504.17789): s x s neighbouring tokens become one.

    shuffle:   [B, n, s*s, d] token embeddings -> compress each d -> d / s^2 -> concatenate the window
               along channels -> residual MLP blocks -> [B, n, d]        (n = windows, s^2x fewer)
    unshuffle: [B, n, d] -> split into s^2 chunks of d / s^2 -> expand each to d -> residual MLP
               blocks -> [B, n, s*s, d], read by the shared output head at every restored position

`to_windows` / `from_windows` are the pure layout changes between a token grid in raster order and
windows (raster over windows, raster inside each window); the paper has no official code, so the
residual blocks are pre-norm SwiGLU blocks (the transformer's own feed-forward), two on each side.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .linear import Linear
from .mlp import SwiGLU
from .norm import RMSNorm


def to_windows(grid: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, ...] -> [B, (H/s)(W/s), s*s, ...]: windows in raster order, tokens in raster order inside."""
    H, W = grid.shape[1:3]
    if H % window or W % window:
        raise ValueError(f"a {H}x{W} token grid does not split into {window}x{window} windows; pass a grid whose "
                         f"sides are multiples of {window}.")
    return rearrange(grid, "b (h s1) (w s2) ... -> b (h w) (s1 s2) ...", s1=window, s2=window)


def from_windows(windows: torch.Tensor, window: int, grid_size: tuple[int, int]) -> torch.Tensor:
    """The inverse of `to_windows`: [B, n, s*s, ...] -> [B, H, W, ...]."""
    H, W = grid_size
    if windows.shape[1] * window * window != H * W or windows.shape[2] != window * window:
        raise ValueError(f"{tuple(windows.shape[:3])} windows do not tile a {H}x{W} grid with window {window}.")
    return rearrange(windows, "b (h w) (s1 s2) ... -> b (h s1) (w s2) ...", h=H // window, s1=window)


class ResidualMLP(nn.Module):
    """x + SwiGLU(RMSNorm(x))."""

    def __init__(self, dim: int, norm_eps: float = 1e-5):
        super().__init__()
        self.norm, self.mlp = RMSNorm(dim, eps=norm_eps), SwiGLU(dim, dim)

    def forward(self, x):
        return x + self.mlp(self.norm(x))


class TokenShuffle(nn.Module):
    """[B, n, s*s, d] embeddings of the tokens of n windows -> [B, n, d], one input per window."""

    def __init__(self, dim: int, window: int, num_blocks: int = 2):
        super().__init__()
        if dim % (window * window):
            raise ValueError(f"hidden size {dim} must be divisible by window^2 = {window * window}.")
        self.window = window
        self.compress = Linear(dim, dim // (window * window))
        self.blocks = nn.Sequential(*(ResidualMLP(dim) for _ in range(num_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.compress(x).flatten(-2))  # [B, n, s*s, d/s^2] -> [B, n, d]


class TokenUnshuffle(nn.Module):
    """[B, n, d] transformer outputs -> [B, n, s*s, d], one output per restored token."""

    def __init__(self, dim: int, window: int, num_blocks: int = 2):
        super().__init__()
        if dim % (window * window):
            raise ValueError(f"hidden size {dim} must be divisible by window^2 = {window * window}.")
        self.window = window
        self.expand = Linear(dim // (window * window), dim)
        self.blocks = nn.Sequential(*(ResidualMLP(dim) for _ in range(num_blocks)))
        self.norm = RMSNorm(dim)  # the output head reads normalised states, as after the transformer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = x.unflatten(-1, (self.window * self.window, -1))  # [B, n, s*s, d/s^2]
        return self.norm(self.blocks(self.expand(chunks)))
