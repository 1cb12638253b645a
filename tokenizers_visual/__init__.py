"""Image and shape tokenizers: LlamaGen's 2D VQ, the code clusters of coarse-to-fine prediction,
FlexTok's 1D tokens and KARL's adaptive-length ones, and VAT's multi-scale tokens of 3D shapes."""

from .clusters import CodeClusters
from .flextok import FlexTok
from .karl import KARLTokenizer, KARLTokens
from .vat import VAT
from .vq import VQModel

__all__ = ["CodeClusters", "FlexTok", "KARLTokenizer", "KARLTokens", "VAT", "VQModel"]
