"""Shared layers: RoPE tables, attention over a static KV cache, SwiGLU."""

from .attention import Attention, KVCache
from .mlp import SwiGLU, find_multiple, llama_ffn_dim
from .rope import apply_rope, rope_1d, rope_2d

__all__ = ["Attention", "KVCache", "SwiGLU", "apply_rope", "find_multiple", "llama_ffn_dim", "rope_1d", "rope_2d"]
