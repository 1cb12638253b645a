"""Image and shape tokenizers: LlamaGen's 2D VQ and the code clusters of
coarse-to-fine prediction today; multi-scale residual VQ, FlexTok, KARL and VAT
arrive with their issues."""

from .clusters import CodeClusters
from .vq import VQModel

__all__ = ["CodeClusters", "VQModel"]
