"""Image and shape tokenizers: LlamaGen's 2D VQ, the code clusters of coarse-to-fine prediction,
FlexTok's 1D tokens and KARL's adaptive-length ones; multi-scale residual VQ and VAT arrive with their
issues."""

from .clusters import CodeClusters
from .flextok import FlexTok
from .karl import KARLTokenizer, KARLTokens
from .vq import VQModel

__all__ = ["CodeClusters", "FlexTok", "KARLTokenizer", "KARLTokens", "VQModel"]
