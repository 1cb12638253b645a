"""The catalogue of named checkpoints and the converters from original formats.

`zoo.load(name)` resolves a name here first (built-in models, pinned Hub entries), then as a local
folder, then as a Hub id. Importing this package loads no model code; converters import lazily.
"""

from .catalogue import CATALOGUE, Entry, get_entry, list_models, register

__all__ = ["CATALOGUE", "Entry", "get_entry", "list_models", "register"]
