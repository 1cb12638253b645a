"""Image and shape tokenizers: LlamaGen's 2D VQ today; multi-scale residual VQ, FlexTok, KARL and VAT
arrive with their issues."""

from .vq import VQModel

__all__ = ["VQModel"]
