"""The codec's bottleneck transformer (Mimi's `ProjectedTransformer`): causal, with a sliding context.

Pre-norm layers: LayerNorm -> attention (RoPE, each frame sees itself and the `context - 1` frames
before it) -> layer scale, then LayerNorm -> GELU MLP -> layer scale. It works on conv-layout
tensors [B, dim, T]. `step` runs a chunk of frames against an explicit state: per layer the keys and
values of the last `context - 1` frames, plus the number of frames seen (the RoPE offset).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn import Attention, Linear, rope_1d, rope_rotation


class LayerScale(nn.Module):
    """Per-channel learnt scale of a residual branch, started small (CaiT; Mimi uses 0.01)."""

    def __init__(self, dim: int, init: float = 0.01):
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x):
        return self.scale * x


class TransformerLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_dim: int, layer_scale: float | None, norm_eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads)
        self.scale1 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.fc1 = Linear(dim, ffn_dim, bias=False)
        self.fc2 = Linear(ffn_dim, dim, bias=False)
        self.scale2 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()

    def forward(self, x, rope, mask, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x [B, T, dim]; past: (k, v) of earlier frames or None -> (y, (k, v) of past + these frames)."""
        q, k, v = self.attn.heads(self.norm1(x), rope)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        x = x + self.scale1(self.attn.attend(q, k, v, mask))
        x = x + self.scale2(self.fc2(F.gelu(self.fc1(self.norm2(x)))))
        return x, (k, v)


@dataclass
class TransformerState:
    """What a streaming transformer keeps: per layer (k, v) [B, heads, <= context - 1, head_dim], and
    the number of frames seen so far."""

    kv: list
    offset: int


class CodecTransformer(nn.Module):
    def __init__(self, dim: int = 512, num_layers: int = 8, num_heads: int = 8, ffn_dim: int = 2048,
                 context: int = 250, layer_scale: float | None = 0.01, rope_base: float = 10_000.0):
        super().__init__()
        if context < 1:
            raise ValueError(f"context must be >= 1 frame, got {context}.")
        self.layers = nn.ModuleList(TransformerLayer(dim, num_heads, ffn_dim, layer_scale) for _ in range(num_layers))
        self.context, self.rope_base, self.head_dim = context, rope_base, dim // num_heads

    def _mask(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        delta = query_positions[:, None] - key_positions[None, :]
        return (delta >= 0) & (delta < self.context)  # [T, S] bool: True = attend

    def _rope(self, start: int, length: int, device) -> torch.Tensor:
        return rope_rotation(rope_1d(length, self.head_dim, self.rope_base, start=start).to(device))

    def forward(self, x: torch.Tensor, hidden_states: list | None = None) -> torch.Tensor:
        """x [B, dim, T] -> [B, dim, T]. hidden_states: a list to append every layer's output to."""
        positions = torch.arange(x.shape[-1], device=x.device)
        rope, mask = self._rope(0, x.shape[-1], x.device), self._mask(positions, positions)
        x = x.transpose(1, 2)
        for layer in self.layers:
            x, _ = layer(x, rope, mask)
            if hidden_states is not None:
                hidden_states.append(x.transpose(1, 2))
        return x.transpose(1, 2)

    def step(self, x: torch.Tensor, state: TransformerState | None, hidden_states: list | None = None):
        """Run the frames x [B, dim, t] after those already seen; return (y [B, dim, t], new state)."""
        state = state or TransformerState(kv=[None] * len(self.layers), offset=0)
        t = x.shape[-1]
        if t == 0:
            return x, state
        past_len = 0 if state.kv[0] is None else state.kv[0][0].shape[2]
        queries = torch.arange(state.offset, state.offset + t, device=x.device)
        keys = torch.arange(state.offset - past_len, state.offset + t, device=x.device)
        rope, mask = self._rope(state.offset, t, x.device), self._mask(queries, keys)
        x, kv = x.transpose(1, 2), []
        keep = self.context - 1
        for layer, past in zip(self.layers, state.kv):
            x, (k, v) = layer(x, rope, mask, past)
            if hidden_states is not None:
                hidden_states.append(x.transpose(1, 2))
            kv.append((k[:, :, -keep:], v[:, :, -keep:]) if keep else (k[:, :, :0], v[:, :, :0]))
        return x.transpose(1, 2), TransformerState(kv=kv, offset=state.offset + t)
