"""The shared autoregressive engine: one transformer, one static KV cache, one decode loop."""

from .generate import GenerationOutput, NextTokenStep, generate, generate_steps
from .sampling import ConstantGuidance, GuidanceSchedule, LinearGuidance, logits_to_probs
from .transformer import LLAMAGEN_SIZES, ARTransformer

__all__ = [
    "ARTransformer", "ConstantGuidance", "GenerationOutput", "GuidanceSchedule", "LLAMAGEN_SIZES",
    "LinearGuidance", "NextTokenStep", "generate", "generate_steps", "logits_to_probs",
]
