"""zoo: token-based generative models as diffusers pipelines."""
__version__ = "0.1.0"
