"""Text for generative models without a pretrained text encoder: a word-level tokenizer of the
Shapes caption language (text-to-image), a character-level tokenizer of the speech transcripts
(text-to-speech), and prompt batches laid out as an AR prefix.

    tokenizer = caption_tokenizer()                        # transformers.PreTrainedTokenizerFast
    ids, mask = encode_prompts(tokenizer, ["a red star at the top"], max_length=24)
    ids, mask = encode_prompts(character_tokenizer(), ["the cat sat"], max_length=200, end_token=SOA)

Prompts are left-padded to `max_length` and end in a start token (`[SOI]` before an image, `[SOA]`
before audio), so the output follows the prompt directly; the empty prompt (just the start token)
is the unconditional row of CFG. Words outside the caption language become `[UNK]`.
"""

from __future__ import annotations

from itertools import product

import torch

PAD, UNK, SOI, EOI, SOA = "[PAD]", "[UNK]", "[SOI]", "[EOI]", "[SOA]"
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


def character_tokenizer(alphabet: str | None = None):
    """One id per character of `alphabet` (default the speech transcripts' `zoo.data.speech.ALPHABET`)
    after [PAD], [UNK] and [SOA], as a `transformers.PreTrainedTokenizerFast`."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    from .speech import ALPHABET

    alphabet = ALPHABET if alphabet is None else alphabet
    if not alphabet or len(set(alphabet)) != len(alphabet):
        raise ValueError(f"alphabet must be a non-empty string of distinct characters, got {alphabet!r}.")
    vocab = {token: i for i, token in enumerate([PAD, UNK, SOA] + list(alphabet))}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # every character a token
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, unk_token=UNK,
                                   additional_special_tokens=[SOA], padding_side="left")


def token_ids(tokenizer, text: str) -> list[int]:
    """The ids of a text, no special tokens: what a prompt's words and a text stream's script hold."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_prompts(tokenizer, prompts, max_length: int, end_token: str = SOI) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> (ids [B, max_length], mask [B, max_length]): left padding, then the tokens, then
    `end_token` ([SOI] before an image, [SOA] before audio).

    An empty string is the unconditional prompt. Raises ValueError for non-strings and for prompts
    longer than max_length - 1 tokens.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompts!r}.")
    pad, end = tokenizer.convert_tokens_to_ids([PAD, end_token])
    rows = []
    for prompt in prompts:
        words = token_ids(tokenizer, prompt)
        if len(words) > max_length - 1:
            raise ValueError(f"the prompt {prompt!r} has {len(words)} tokens; this model reads at most "
                             f"{max_length - 1}. Shorten it.")
        rows.append([pad] * (max_length - 1 - len(words)) + words + [end])
    ids = torch.tensor(rows)
    return ids, ids != pad
