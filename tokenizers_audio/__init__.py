"""Audio tokenizers: the streaming neural speech codec (Mimi layout, X-Codec semantic branch)."""

from .codec import SpeechCodec

__all__ = ["SpeechCodec"]
