"""Text for text-to-image models without a pretrained text encoder: a word-level tokenizer of the
Shapes caption language, and prompt batches laid out as an AR prefix.

    tokenizer = caption_tokenizer()                        # transformers.PreTrainedTokenizerFast
    ids, mask = encode_prompts(tokenizer, ["a red star at the top"], max_length=24)

Prompts are left-padded to `max_length` and end in the start-of-image token `[SOI]`, so the image
follows the prompt directly; the empty prompt (just `[SOI]`) is the unconditional row of CFG.
Words outside the caption language become `[UNK]`.
"""

from __future__ import annotations

from itertools import product

import torch

PAD, UNK, SOI, EOI = "[PAD]", "[UNK]", "[SOI]", "[EOI]"
SPECIAL_TOKENS = [PAD, UNK, SOI, EOI]


def caption_words() -> list[str]:
    """Every word a Shapes caption can hold, sorted."""
    from .shapes import CLASSES, COLORS, COUNT_WORDS, POSITIONS, SIZES, TEXTURES, ShapeSpec

    words = set(COLORS) | set(SIZES) | set(TEXTURES)
    for shape, count, position, background in product(CLASSES, COUNT_WORDS, POSITIONS, COLORS):
        spec = ShapeSpec(shape=shape, color="red", size="small", position=position, count=count,
                         background=background, texture="plain", rotation=0.0, arrangement=0.0)
        words.update(spec.caption.split())
    return sorted(words)


def caption_tokenizer():
    """A word-level tokenizer (lower-cased, split on whitespace and punctuation) of the caption language,
    as a `transformers.PreTrainedTokenizerFast` (saved and loaded with the pipeline)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + caption_words())}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, unk_token=UNK,
                                   additional_special_tokens=[SOI, EOI], padding_side="left")


def encode_prompts(tokenizer, prompts, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> (ids [B, max_length], mask [B, max_length]): left padding, then the words, then [SOI].

    An empty string is the unconditional prompt. Raises ValueError for non-strings and for prompts
    longer than max_length - 1 words.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompts!r}.")
    pad, soi = tokenizer.convert_tokens_to_ids([PAD, SOI])
    rows = []
    for prompt in prompts:
        words = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(words) > max_length - 1:
            raise ValueError(f"the prompt {prompt!r} has {len(words)} tokens; this model reads at most "
                             f"{max_length - 1}. Shorten it.")
        rows.append([pad] * (max_length - 1 - len(words)) + words + [soi])
    ids = torch.tensor(rows)
    return ids, ids != pad
