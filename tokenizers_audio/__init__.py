"""Audio tokenizers: the streaming neural codec and semantic tokenizers (filled by their issues)."""
