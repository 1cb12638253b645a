"""Rotary position embeddings (RoPE): 1D and 2D axial tables, and their application.

A table holds (cos, sin) per position and frequency pair: shape [num_positions, head_dim // 2, 2].
Pairs are interleaved (x[2i], x[2i+1]), the convention of Meta's Llama, gpt-fast and LlamaGen.
HF transformers' Llama uses the "rotate half" convention instead; its q/k weights are permuted
into this one when converted (see `weights_registry/converters/hf_llama.py`).
"""

from __future__ import annotations

import torch


def rope_frequencies(num_pairs: int, base: float, denominator: int | None = None) -> torch.Tensor:
    """The inverse frequencies base^(-2i / denominator), i < num_pairs (denominator: 2 * num_pairs)."""
    denominator = denominator or 2 * num_pairs
    return 1.0 / (base ** (torch.arange(0, 2 * num_pairs, 2)[:num_pairs].float() / denominator))


def _cos_sin(angles: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)


def rope_1d(num_positions: int, head_dim: int, base: float = 10000.0, start: int = 0) -> torch.Tensor:
    """Table for positions start .. start + num_positions - 1: [num_positions, head_dim // 2, 2]."""
    if head_dim % 2:
        raise ValueError(f"1D RoPE needs an even head_dim, got {head_dim}; pick hidden_size / num_heads even.")
    positions = torch.arange(start, start + num_positions).float()
    return _cos_sin(torch.outer(positions, rope_frequencies(head_dim // 2, base)))


def rope_2d(height: int, width: int, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """LlamaGen's axial 2D table over an h x w grid in raster order: [h * w, head_dim // 2, 2].

    The first head_dim // 4 pairs rotate with the row index, the last head_dim // 4 with the column
    index; both halves use the frequencies of a 1D RoPE of dimension head_dim // 2
    (`precompute_freqs_cis_2d` in LlamaGen's gpt.py).
    """
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}; change hidden_size or num_heads.")
    freqs = rope_frequencies(head_dim // 4, base, denominator=head_dim // 2)  # [head_dim // 4]
    rows = torch.outer(torch.arange(height).float(), freqs)  # [h, head_dim // 4]
    cols = torch.outer(torch.arange(width).float(), freqs)  # [w, head_dim // 4]
    angles = torch.cat(
        [rows[:, None, :].expand(-1, width, -1), cols[None, :, :].expand(height, -1, -1)], dim=-1
    )  # [h, w, head_dim // 2]
    return _cos_sin(angles).flatten(0, 1)


def rope_rotation(table: torch.Tensor) -> torch.Tensor:
    """A (cos, sin) table [T, head_dim // 2, 2] (or [B, T, ...]) -> [1|B, T, 1, head_dim // 2, 2] float32,
    laid out to broadcast over heads. Computed once per forward pass and shared by every layer."""
    if table.dim() == 3:
        table = table[None]
    return table.float().contiguous()[:, :, None]


def apply_rope(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, T, H, head_dim] by `rope_rotation(table)`: each interleaved pair (x[2i], x[2i+1])
    turns by its angle, in float32 (LlamaGen's `apply_rotary_emb`).

    Eager code multiplies complex numbers (one kernel, 3x faster on CPU than the real-valued form);
    under torch.compile the real-valued form is traced, which inductor fuses (it does not take complex).
    """
    pairs = x.float().unflatten(-1, (-1, 2))  # [B, T, H, head_dim // 2, 2]
    if torch.compiler.is_compiling():
        x0, x1 = pairs.unbind(-1)
        cos, sin = rotation.unbind(-1)
        rotated = torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1)
    else:
        if pairs.stride(-1) != 1 or pairs.storage_offset() % 2:
            pairs = pairs.contiguous()
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * torch.view_as_complex(rotation))
    return rotated.flatten(-2).type_as(x)
