"""Shared layers: RoPE tables, attention over a static KV cache, SwiGLU."""

from .attention import Attention, KVCache
from .linear import Linear, cpu_kernel, kernel_table, linear
from .mlp import SwiGLU, find_multiple, llama_ffn_dim
from .norm import RMSNorm
from .rope import apply_rope, rope_1d, rope_2d, rope_rotation

__all__ = ["Attention", "KVCache", "Linear", "cpu_kernel", "kernel_table", "linear", "RMSNorm", "SwiGLU", "apply_rope", "find_multiple", "llama_ffn_dim", "rope_1d", "rope_2d", "rope_rotation"]
