"""Converters from original checkpoint formats into zoo's models."""

from .flextok import convert_flextok, convert_flextok_checkpoint
from .hf_llama import hf_llama_to_zoo
from .llamagen import convert_llamagen_dd, convert_llamagen_gpt, convert_llamagen_vq
from .mimi import convert_mimi, convert_mimi_checkpoint, hf_mimi_to_zoo

__all__ = ["convert_flextok", "convert_flextok_checkpoint", "convert_llamagen_dd", "convert_llamagen_gpt", "convert_llamagen_vq", "convert_mimi", "convert_mimi_checkpoint", "hf_llama_to_zoo",
           "hf_mimi_to_zoo"]
