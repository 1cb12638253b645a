"""Image tokenizers: 2D VQ, multi-scale residual VQ, FlexTok, KARL, VAT (filled by their issues)."""
