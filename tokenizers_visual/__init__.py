"""Image and shape tokenizers: LlamaGen's 2D VQ, the code clusters of coarse-to-fine prediction,
FlexTok's 1D tokens; KARL, multi-scale residual VQ and VAT arrive with their issues."""

from .clusters import CodeClusters
from .flextok import FlexTok
from .vq import VQModel

__all__ = ["CodeClusters", "FlexTok", "VQModel"]
