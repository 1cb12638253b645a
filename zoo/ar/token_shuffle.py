"""Token-Shuffle text-to-image transformer: one AR step per s x s window of image tokens.

Sequence: [text prompt, left-padded, ending in <soi>] [window 0] [window 1] ... ; one transformer
(1D RoPE, Llama-style) reads text and images, with no separate text encoder (as the paper). Text ids
and image ids share one embedding table (image id i is row text_vocab_size + i, as visual tokens
appended to an LLM vocabulary); the output head covers the image codebook. `WindowStep` runs the
shared decode loop with s^2 tokens per step.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from zoo.ar.transformer import ARTransformer
from zoo.nn.token_shuffle import TokenShuffle, TokenUnshuffle, from_windows, to_windows
from zoo.utils.io import AtomicSaveMixin


class TokenShuffleTransformer(AtomicSaveMixin, ModelMixin, ConfigMixin):
    """Args:
        text_vocab_size: ids of the text tokenizer (including its special tokens).
        codebook_size: image tokens (the VQ codebook).
        grid_size: (h, w) image tokens at the training resolution; multiples of `window`.
        window: s; s = 1 is the plain AR baseline with the same layers.
        max_text_tokens: the prompt prefix length (prompts are left-padded to it, <soi> last).
        hidden_size, num_layers, num_heads, ...: the transformer (`ARTransformer`).
        shuffle_blocks: residual MLP blocks on each side of the transformer.

    Examples:
        >>> import torch
        >>> from zoo import TokenShuffleTransformer
        >>> model = TokenShuffleTransformer(text_vocab_size=32, codebook_size=64, grid_size=(8, 8), window=2,
        ...                                 max_text_tokens=6, hidden_size=64, num_layers=2, num_heads=4).eval()
        >>> model.num_windows                       # 64 tokens in 16 AR steps of 2 x 2
        16
        >>> grid = torch.randint(0, 64, (1, 8, 8))
        >>> windows = model.grid_to_windows(grid)      # window order: the 4 tokens of window 0, then window 1...
        >>> windows.shape, bool((model.windows_to_grid(windows, (8, 8)) == grid).all())
        (torch.Size([1, 64]), True)
    """

    @register_to_config
    def __init__(self, text_vocab_size: int = 64, codebook_size: int = 4096, grid_size: tuple[int, int] | list[int] = (32, 32),
                 window: int = 2, max_text_tokens: int = 24, hidden_size: int = 256, num_layers: int = 8,
                 num_heads: int = 8, shuffle_blocks: int = 2, dropout: float = 0.0):
        super().__init__()
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}.")
        h, w = grid_size
        if h % window or w % window:
            raise ValueError(f"grid_size {tuple(grid_size)} must be multiples of the window {window}.")
        self.backbone = ARTransformer(
            vocab_size=codebook_size, input_vocab_size=text_vocab_size + codebook_size, hidden_size=hidden_size,
            num_layers=num_layers, num_heads=num_heads, num_prefix_tokens=max_text_tokens,
            seq_len=h * w // (window * window), position_embedding="rope_1d", rope_prefix="positions",
            token_dropout=dropout, resid_dropout=dropout, ffn_dropout=dropout, zero_init_head=False)
        self.shuffle = TokenShuffle(hidden_size, window, shuffle_blocks)
        self.unshuffle = TokenUnshuffle(hidden_size, window, shuffle_blocks)

    @property
    def window(self) -> int:
        return self.config.window

    @property
    def num_windows(self) -> int:
        return self.backbone.seq_len

    def embed_windows(self, window_ids: torch.Tensor) -> torch.Tensor:
        """Image ids in window order [B, n * s^2] -> one input per window [B, n, d]."""
        s2 = self.window ** 2
        embeddings = self.backbone.token_embedding(window_ids + self.config.text_vocab_size)
        return self.shuffle(embeddings.unflatten(1, (-1, s2)))

    def window_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Transformer outputs [B, n, d] -> logits of the s^2 tokens of the next n windows [B, n * s^2, V]."""
        return self.backbone.logits(self.unshuffle(hidden)).flatten(1, 2)

    def grid_to_windows(self, ids: torch.Tensor) -> torch.Tensor:
        """Image ids [B, h, w] (raster) -> [B, n * s^2] (window order)."""
        return to_windows(ids, self.window).flatten(1)

    def windows_to_grid(self, ids: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        """Image ids [B, n * s^2] (window order) -> [B, h, w] (raster)."""
        return from_windows(ids.unflatten(1, (-1, self.window ** 2)), self.window, grid_size)

    def forward(self, text_ids: torch.Tensor, text_mask: torch.Tensor, image_ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, h * w, V] in window order for image ids [B, h, w] after the prompt.

        text_ids / text_mask [B, max_text_tokens]: the left-padded prompt ending in <soi> (mask False on
        padding). The output after <soi> predicts window 0, the output after window j predicts j + 1.
        """
        windows = self.grid_to_windows(image_ids)  # [B, n * s^2]
        prefix = self.backbone.embed_condition(prefix_ids=text_ids)  # [B, P, d]
        x = torch.cat([prefix, self.embed_windows(windows)[:, :-1]], dim=1)
        hidden = self.backbone.forward_hidden(x, prefix_mask=text_mask)
        return self.window_logits(hidden[:, self.config.max_text_tokens - 1:])


class WindowStep:
    """A decode step of the shared engine that emits the s^2 tokens of one window (Token-Shuffle)."""

    def __init__(self, model: TokenShuffleTransformer):
        self.model = model

    def num_steps(self, num_tokens: int) -> int:
        s2 = self.model.window ** 2
        if num_tokens % s2:
            raise ValueError(f"{num_tokens} tokens do not fill whole {self.model.window}x{self.model.window} windows.")
        return num_tokens // s2

    def cache_length(self, num_prefix: int, num_tokens: int) -> int:
        return num_prefix + self.num_steps(num_tokens) - 1

    def sample(self, backbone, hidden: torch.Tensor, sample_fn) -> torch.Tensor:
        return sample_fn(self.model.window_logits(hidden[:, -1:]))  # [R, s^2, V] -> [B, s^2]

    def embed(self, backbone, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.embed_windows(tokens)  # [R, s^2] -> [R, 1, d]

