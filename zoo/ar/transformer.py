"""`ARTransformer`: the one decoder-only transformer behind every zoo AR model.

A Llama-style decoder (pre-RMSNorm, SwiGLU, fused QKV, optional grouped KV heads, SDPA), laid out
like LlamaGen's GPT so that its checkpoints convert one-to-one. What differs between methods is
declared in the config, not copied:

- inputs: token ids through an embedding, or continuous vectors through a linear layer (`input_dim`);
- condition prefix: a class token (with a null class for CFG), prompt token ids, or any embeddings;
- positions: 1D RoPE, LlamaGen's 2D axial RoPE over a grid (zeros on the prefix rows), or none;
- attention: causal, block-causal (`block_sizes`) or bidirectional.

Sequence layout: [prefix (num_prefix_tokens positions)] + [seq_len positions]. The KV cache for
decoding is set up by `setup_cache` (see `zoo.ar.generate`).
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..nn.attention import Attention, KVCache
from ..nn.linear import Linear
from ..nn.mlp import SwiGLU, find_multiple, llama_ffn_dim
from ..nn.norm import RMSNorm
from ..nn.rope import rope_1d, rope_2d, rope_rotation
from ..utils.io import AtomicSaveMixin

# compiled decode steps (models x batch sizes x step widths x dtypes) one process may run; see compiled_decode
RECOMPILE_LIMIT = 64

# LlamaGen's GPT sizes: (layers, heads, dim) (autoregressive/models/gpt.py).
LLAMAGEN_SIZES = {
    "B": (12, 12, 768), "L": (24, 16, 1024), "XL": (36, 20, 1280), "XXL": (48, 24, 1536),
    "XXXL": (48, 40, 2560), "1B": (22, 32, 2048), "3B": (24, 32, 3200), "7B": (32, 32, 4096),
}
POSITION_EMBEDDINGS = ("rope_1d", "rope_2d", "none")
ATTENTION_MODES = ("causal", "block_causal", "bidirectional")


class TransformerBlock(nn.Module):
    def __init__(self, dim, num_heads, num_kv_heads, ffn_dim, norm_eps, attn_dropout, resid_dropout, ffn_dropout):
        super().__init__()
        self.attn_norm = RMSNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, num_kv_heads, dropout=attn_dropout)
        self.mlp_norm = RMSNorm(dim, eps=norm_eps)
        self.mlp = SwiGLU(dim, ffn_dim, dropout=ffn_dropout)
        self.resid_dropout = resid_dropout

    def forward(self, x, rope, mask, input_pos=None, is_causal=False, kv_len=None):
        h = self.attn(self.attn_norm(x), rope, mask, input_pos, is_causal, kv_len)
        if self.training and self.resid_dropout:
            h = nn.functional.dropout(h, self.resid_dropout)
        x = x + h
        return x + self.mlp(self.mlp_norm(x))


class ARTransformer(AtomicSaveMixin, ModelMixin, ConfigMixin):
    """Decoder-only transformer for token (or continuous-vector) sequences with a condition prefix.

    Args:
        vocab_size: size of the output head (and of the token embedding unless `input_dim` is set); 0 builds
            no head (a backbone whose states another module reads: the speech LM's depth transformer).
        input_vocab_size: size of the token embedding when it differs from the head (CTF's stage 2 reads
            coarse cluster labels and predicts fine codebook ids); default vocab_size.
        hidden_size, num_layers, num_heads, num_kv_heads: width, depth, query heads, KV heads (GQA).
        intermediate_size: SwiGLU hidden size; default Llama's rule, int(8 * hidden / 3) rounded up to 256.
        num_classes: class-conditional models embed a label as the prefix; index `num_classes` is the
            null class used for classifier-free guidance. 0 means no class embedding.
        num_prefix_tokens: length of the condition prefix (1 for a class token).
        seq_len / grid_size: positions after the prefix; `grid_size=(h, w)` sets seq_len = h * w.
        position_embedding: "rope_2d" (LlamaGen), "rope_1d" or "none".
        rope_prefix: "zero" gives prefix positions a zero RoPE table (LlamaGen: their q and k vanish);
            "positions" numbers the prefix 0..P-1 and the sequence after it (1D only, as HF Llama).
        attention: "causal", "block_causal" (with `block_sizes` summing to seq_len: all positions of a
            block see each other and earlier blocks) or "bidirectional".
        input_dim: if set, inputs are continuous vectors of this size, embedded by a linear layer.
        zero_init_head: LlamaGen initialises the output head to zero.

    Examples:
        >>> import torch
        >>> from zoo import ARTransformer
        >>> model = ARTransformer(vocab_size=64, hidden_size=64, num_layers=2, num_heads=4, num_classes=10,
        ...                       grid_size=(4, 4)).eval()       # LlamaGen's layout, tiny
        >>> model(torch.randint(0, 64, (2, 16)), class_labels=torch.tensor([1, 2])).shape
        torch.Size([2, 17, 64])
        >>> round(sum(p.numel() for p in ARTransformer.llamagen("B").parameters()) / 1e6)   # LlamaGen GPT-B
        111
    """

    @register_to_config
    def __init__(
        self,
        vocab_size: int = 16384,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        num_kv_heads: int | None = None,
        intermediate_size: int | None = None,
        norm_eps: float = 1e-5,
        num_classes: int = 0,
        num_prefix_tokens: int = 1,
        seq_len: int | None = None,
        grid_size: tuple[int, int] | list[int] | None = None,
        position_embedding: str = "rope_2d",
        rope_base: float = 10000.0,
        rope_prefix: str = "zero",
        attention: str = "causal",
        block_sizes: list[int] | None = None,
        input_dim: int | None = None,
        class_dropout_prob: float = 0.0,
        token_dropout: float = 0.0,
        attn_dropout: float = 0.0,
        resid_dropout: float = 0.0,
        ffn_dropout: float = 0.0,
        initializer_range: float = 0.02,
        zero_init_head: bool = False,
        input_vocab_size: int | None = None,
    ):
        super().__init__()
        self.seq_len = self._validate_config()
        num_kv_heads = num_kv_heads or num_heads
        ffn_dim = intermediate_size or llama_ffn_dim(hidden_size)
        self.head_dim = hidden_size // num_heads
        self.max_positions = num_prefix_tokens + self.seq_len

        if input_dim is None:
            self.token_embedding = nn.Embedding(self.input_vocab_size, hidden_size)
        else:
            self.input_proj = Linear(input_dim, hidden_size)
        if num_classes > 0:
            self.class_embedding = nn.Embedding(num_classes + 1, hidden_size)  # last row: null class
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, num_heads, num_kv_heads, ffn_dim, norm_eps, attn_dropout, resid_dropout,
                             ffn_dropout)
            for _ in range(num_layers)
        )
        self.norm = RMSNorm(hidden_size, eps=norm_eps)
        self.head = Linear(hidden_size, vocab_size, bias=False) if vocab_size > 0 else None
        self._init_weights()

        # Position tables are plain float32 tensors, not buffers: casting the model to bf16 must not
        # round them, and they are rebuilt from the config, never saved.
        self._rope = self._rope_table()  # [max_positions, head_dim // 2, 2] or None
        self._blocks = self._block_ids()  # [max_positions]
        self._cache_mask: torch.Tensor | None = None
        self._compiled_decode = None

    # ----------------------------------------------------------------- construction
    def _validate_config(self) -> int:
        c = self.config
        if not isinstance(c.vocab_size, int) or c.vocab_size < 0:
            raise ValueError(f"vocab_size={c.vocab_size!r}; pass the output vocabulary (an int >= 1), or 0 for no head.")
        if c.vocab_size == 0 and c.input_dim is None and not c.input_vocab_size:
            raise ValueError("a model without a head (vocab_size=0) needs input_vocab_size or input_dim for its inputs.")
        if c.hidden_size % c.num_heads:
            raise ValueError(f"hidden_size={c.hidden_size} is not divisible by num_heads={c.num_heads}; "
                             "pass a num_heads that divides it.")
        if c.num_kv_heads and c.num_heads % c.num_kv_heads:
            raise ValueError(f"num_heads={c.num_heads} is not a multiple of num_kv_heads={c.num_kv_heads}.")
        if c.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(f"position_embedding={c.position_embedding!r}; pass one of {POSITION_EMBEDDINGS}.")
        if c.attention not in ATTENTION_MODES:
            raise ValueError(f"attention={c.attention!r}; pass one of {ATTENTION_MODES}.")
        if c.rope_prefix not in ("zero", "positions"):
            raise ValueError(f"rope_prefix={c.rope_prefix!r}; pass 'zero' or 'positions'.")
        if c.num_prefix_tokens < 0 or c.num_classes < 0:
            raise ValueError("num_prefix_tokens and num_classes must be >= 0.")
        if c.num_classes > 0 and c.num_prefix_tokens < 1:
            raise ValueError("a class-conditional model (num_classes > 0) needs num_prefix_tokens >= 1.")
        if c.grid_size is not None:
            if not (isinstance(c.grid_size, (tuple, list)) and len(c.grid_size) == 2):
                raise ValueError(f"grid_size={c.grid_size!r}; pass a pair (h, w), e.g. (16, 16).")
            h, w = c.grid_size
            if c.seq_len is not None and c.seq_len != h * w:
                raise ValueError(f"seq_len={c.seq_len} disagrees with grid_size={c.grid_size}; pass one of them.")
            seq_len = h * w
        elif c.seq_len is not None:
            seq_len = c.seq_len
        else:
            raise ValueError("pass seq_len (positions after the prefix) or grid_size=(h, w).")
        if c.position_embedding == "rope_2d":
            if c.grid_size is None:
                raise ValueError("position_embedding='rope_2d' needs grid_size=(h, w).")
            if c.rope_prefix != "zero":
                raise ValueError("2D RoPE numbers only the grid: use rope_prefix='zero' (LlamaGen's layout).")
        if c.attention == "block_causal":
            if not c.block_sizes or sum(c.block_sizes) != seq_len or min(c.block_sizes) < 1:
                raise ValueError(f"attention='block_causal' needs positive block_sizes summing to seq_len={seq_len}, "
                                 f"got {c.block_sizes}.")
        return seq_len

    def _init_weights(self):
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        if self.config.zero_init_head and self.head is not None:
            nn.init.zeros_(self.head.weight)

    def _rope_table(self) -> torch.Tensor | None:
        c = self.config
        P = c.num_prefix_tokens
        if c.position_embedding == "none":
            return None
        if c.position_embedding == "rope_2d":
            table = rope_2d(*c.grid_size, self.head_dim, c.rope_base)
        elif c.rope_prefix == "positions":
            return rope_1d(P + self.seq_len, self.head_dim, c.rope_base)
        else:
            table = rope_1d(self.seq_len, self.head_dim, c.rope_base)
        return torch.cat([torch.zeros(P, *table.shape[1:]), table])

    def _block_ids(self) -> torch.Tensor:
        """Block index per position: position i attends to j iff block[j] <= block[i]."""
        c = self.config
        P = c.num_prefix_tokens
        if c.attention == "bidirectional":
            return torch.zeros(self.max_positions, dtype=torch.long)
        if c.attention == "causal":
            return torch.arange(self.max_positions)
        sizes = torch.tensor(c.block_sizes)
        return torch.cat([torch.arange(P), P + torch.repeat_interleave(torch.arange(len(sizes)), sizes)])

    @classmethod
    def llamagen(cls, size: str = "B", *, vocab_size: int = 16384, num_classes: int = 1000, grid_size: int = 16,
                 **overrides) -> "ARTransformer":
        """LlamaGen's class-conditional GPT (B, L, XL, XXL, XXXL, 1B, 3B, 7B) with its training defaults."""
        if size not in LLAMAGEN_SIZES:
            raise ValueError(f"unknown LlamaGen size {size!r}; pass one of {sorted(LLAMAGEN_SIZES)}.")
        layers, heads, dim = LLAMAGEN_SIZES[size]
        config = dict(
            vocab_size=vocab_size, hidden_size=dim, num_layers=layers, num_heads=heads,
            intermediate_size=llama_ffn_dim(dim), num_classes=num_classes, num_prefix_tokens=1,
            grid_size=(grid_size, grid_size), position_embedding="rope_2d", rope_prefix="zero",
            class_dropout_prob=0.1, token_dropout=0.1, resid_dropout=0.1, ffn_dropout=0.1, zero_init_head=True,
        )
        return cls(**{**config, **overrides})

    # ----------------------------------------------------------------- embedding and head
    @property
    def input_vocab_size(self) -> int:
        """Number of token ids the embedding reads (input and prefix ids)."""
        return self.config.input_vocab_size or self.config.vocab_size

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def embed_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """Token ids [B, T] or continuous vectors [B, T, input_dim] -> [B, T, hidden]."""
        if self.config.input_dim is None:
            return self.token_embedding(inputs)
        return self.input_proj(inputs.to(self.input_proj.weight.dtype))

    def embed_condition(self, class_labels=None, prefix_ids=None, prefix_embeds=None) -> torch.Tensor:
        """The condition prefix [B, num_prefix_tokens, hidden] from exactly one kind of condition."""
        given = [x is not None for x in (class_labels, prefix_ids, prefix_embeds)]
        if sum(given) != 1:
            raise ValueError("pass exactly one of class_labels, prefix_ids or prefix_embeds.")
        if class_labels is not None:
            if self.config.num_classes == 0:
                raise ValueError("this model has no class embedding (num_classes=0); pass prefix_ids or prefix_embeds.")
            labels = torch.as_tensor(class_labels, device=self.device).long().reshape(-1)
            if labels.numel() and (labels.min() < 0 or labels.max() > self.null_class):
                raise ValueError(f"class labels must lie in [0, {self.config.num_classes}] "
                                 f"({self.config.num_classes} is the null class), got {labels.tolist()}.")
            if self.training and self.config.class_dropout_prob > 0:
                drop = torch.rand(labels.shape, device=labels.device) < self.config.class_dropout_prob
                labels = torch.where(drop, self.null_class, labels)
            prefix = self.class_embedding(labels)[:, None]
        elif prefix_ids is not None:
            self.check_token_ids(prefix_ids, "prefix_ids")
            prefix = self.token_embedding(prefix_ids)
        else:
            if prefix_embeds.dim() != 3 or prefix_embeds.shape[-1] != self.config.hidden_size:
                raise ValueError(f"prefix_embeds must be [B, P, {self.config.hidden_size}], got "
                                 f"{tuple(prefix_embeds.shape)}.")
            prefix = prefix_embeds.to(self.dtype)
        if prefix.shape[1] != self.config.num_prefix_tokens:
            raise ValueError(f"the condition prefix has {prefix.shape[1]} positions but the model's context "
                             f"holds num_prefix_tokens={self.config.num_prefix_tokens}; pad it to that length "
                             "(with prefix_mask marking the padding).")
        return prefix

    def check_token_ids(self, ids: torch.Tensor, name: str = "input_ids"):
        if self.config.input_dim is not None and name == "input_ids":
            return
        if ids.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            raise ValueError(f"{name} must be integer token ids, got dtype {ids.dtype}.")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.input_vocab_size):
            raise ValueError(f"{name} out of range: ids must lie in [0, {self.input_vocab_size}), got "
                             f"min {int(ids.min())}, max {int(ids.max())}.")

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final hidden states [..., hidden] (already normed) -> float32 logits [..., vocab]."""
        if self.head is None:
            raise ValueError("this model has no output head (vocab_size=0): read its hidden states with "
                             "forward_hidden instead.")
        return self.head(hidden).float()

    # ----------------------------------------------------------------- transformer body
    def _tables(self, device):
        if self._rope is not None and self._rope.device != device:
            self._rope = self._rope.to(device)
        if self._blocks.device != device:
            self._blocks = self._blocks.to(device)
        return self._rope, self._blocks

    def attention_mask(self, length: int, prefix_mask: torch.Tensor | None = None, device=None) -> torch.Tensor:
        """Bool mask [B|1, 1, length, length]: True where query i may attend key j.

        prefix_mask [B, num_prefix_tokens] marks real (True) and padding (False) prefix positions;
        padding is attended by nobody but itself (LlamaGen's `emb_masks`).
        """
        _, blocks = self._tables(device or self.device)
        blocks = blocks[:length]
        mask = blocks[None, :] <= blocks[:, None]
        if prefix_mask is None:
            return mask[None, None]
        keys = torch.ones(prefix_mask.shape[0], length, dtype=torch.bool, device=mask.device)
        keys[:, : prefix_mask.shape[1]] = prefix_mask.to(mask.device, torch.bool)
        eye = torch.eye(length, dtype=torch.bool, device=mask.device)
        return ((mask[None] & keys[:, None, :]) | eye)[:, None]

    def forward_hidden(self, x: torch.Tensor, input_pos: torch.Tensor | None = None,
                       prefix_mask: torch.Tensor | None = None, kv_len: int | None = None,
                       final_norm: bool = True) -> torch.Tensor:
        """Embedded sequence x [B, T, hidden] -> normed hidden states [B, T, hidden] (before the final
        norm with final_norm=False: DD's continuous head reads those).

        Without input_pos, x is the whole sequence from position 0 (training, or recomputation).
        With input_pos [T], x holds those positions only and reads/writes the KV cache (`setup_cache`);
        kv_len (eager decoding) limits attention to the cache positions written so far. Without it every
        step attends over the whole static cache (fixed shapes for torch.compile / CUDA graphs).
        """
        table, _ = self._tables(x.device)
        if self.training and self.config.token_dropout:
            x = nn.functional.dropout(x, self.config.token_dropout)
        if input_pos is None:
            T = x.shape[1]
            if T > self.max_positions:
                raise ValueError(f"sequence of {T} positions exceeds the context of {self.max_positions} "
                                 f"(num_prefix_tokens + seq_len); pass at most {self.max_positions}.")
            rope = rope_rotation(table[:T]) if table is not None else None
            plain_causal = self.config.attention == "causal" and prefix_mask is None
            mask = None if plain_causal else self.attention_mask(T, prefix_mask, x.device)
            for block in self.blocks:
                x = block(x, rope, mask, is_causal=plain_causal)
        else:
            if self._cache_mask is None:
                raise RuntimeError("no KV cache: call setup_cache(rows, max_len) before decoding with input_pos.")
            rope = rope_rotation(table[input_pos]) if table is not None else None
            allowed = self._cache_mask[:, :, input_pos, :kv_len]  # [B|1, 1, T, kv_len]
            bias = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill_(~allowed, -torch.inf)
            for block in self.blocks:
                x = block(x, rope, bias, input_pos, kv_len=kv_len)
        return self.norm(x) if final_norm else x

    def forward(self, input_ids: torch.Tensor | None = None, class_labels=None, prefix_ids=None, prefix_embeds=None,
                prefix_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Full-sequence (uncached) logits [B, P + T, vocab] for [prefix] + inputs.

        The logits at position P - 1 + t predict input t; training slices `logits[:, P - 1:-1]`.
        input_ids: token ids [B, T] (or vectors [B, T, input_dim] for continuous-input models).
        """
        return self.logits(self.sequence_hidden(input_ids, class_labels, prefix_ids, prefix_embeds, prefix_mask))

    def sequence_hidden(self, input_ids: torch.Tensor | None = None, class_labels=None, prefix_ids=None,
                        prefix_embeds=None, prefix_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`forward` before the output head: normed hidden states [B, P + T, hidden]."""
        parts = []
        if any(c is not None for c in (class_labels, prefix_ids, prefix_embeds)):
            parts.append(self.embed_condition(class_labels, prefix_ids, prefix_embeds))
        elif self.config.num_prefix_tokens:
            raise ValueError(f"this model expects a condition prefix of {self.config.num_prefix_tokens} positions; "
                             "pass class_labels, prefix_ids or prefix_embeds.")
        if input_ids is not None:
            self.check_token_ids(input_ids)
            parts.append(self.embed_inputs(input_ids))
        if not parts:
            raise ValueError("nothing to run: pass input_ids and/or a condition.")
        return self.forward_hidden(torch.cat(parts, dim=1), prefix_mask=prefix_mask)

    # ----------------------------------------------------------------- KV cache
    def setup_cache(self, rows: int, max_len: int, prefix_mask: torch.Tensor | None = None, dtype=None, device=None):
        """Preallocate the static KV cache for `rows` sequences of up to `max_len` positions.

        Buffers are reused (and zeroed) when the shape, dtype and device match the previous call, so
        repeated generation keeps the same addresses (what CUDA graphs need).
        """
        if max_len > self.max_positions:
            raise ValueError(f"{max_len} positions exceed the model's context of {self.max_positions} "
                             "(num_prefix_tokens + seq_len); ask for fewer tokens.")
        dtype, device = dtype or self.dtype, device or self.device
        max_len = min(find_multiple(max_len, 8), self.max_positions)
        for block in self.blocks:
            attn = block.attn
            shape = (rows, attn.num_kv_heads, max_len, attn.head_dim)
            cache = attn.kv_cache
            if cache is not None and cache.k.shape == shape and cache.k.dtype == dtype and cache.k.device == device:
                cache.k.zero_(), cache.v.zero_()
            else:
                attn.kv_cache = KVCache(*shape[:3], attn.head_dim, dtype=dtype, device=device)
        mask = self.attention_mask(max_len, prefix_mask, device)
        if self._cache_mask is not None and self._cache_mask.shape == mask.shape and self._cache_mask.device == device:
            self._cache_mask.copy_(mask)  # same tensor as last time: compiled steps and CUDA graphs keep it
        else:
            self._cache_mask = mask

    def compiled_decode(self):
        """`forward_hidden` through torch.compile for cached decoding, made once per model: CUDA graphs on GPU
        (gpt-fast's `reduce-overhead`), inductor's C++ code on CPU. Call it as `step(x, input_pos)`, without
        kv_len: every step attends over the whole static cache (`setup_cache`), so the shapes stay fixed."""
        if self._compiled_decode is None:
            # torch.compile keeps one cache per code object: every model, batch size, step width and dtype that
            # runs `forward_hidden` compiled is an entry of the same cache (a speech LM alone needs its backbone's
            # one- and multi-frame steps and its depth transformer's), and dynamo's default limit of 8 entries
            # ends in a hard error under fullgraph=True.
            import torch._dynamo  # imported on use: it is slow to import

            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._compiled_decode = torch.compile(self.forward_hidden, mode=mode, fullgraph=True, dynamic=False)
        return self._compiled_decode

    def decode_step(self, compile: bool = False):
        """The cached decode step as `step(x, input_pos, kv_len)` -> hidden states, one calling convention for
        eager and compiled decoding: eager `forward_hidden` attends to the kv_len written positions; the
        compiled one (`compiled_decode`) attends over the whole static cache and does not read kv_len."""
        if compile:
            compiled = self.compiled_decode()
            return lambda x, input_pos, kv_len: compiled(x, input_pos)
        return lambda x, input_pos, kv_len: self.forward_hidden(x, input_pos, kv_len=kv_len)

    def clear_cache(self):
        """Free the KV cache."""
        for block in self.blocks:
            block.attn.kv_cache = None
        self._cache_mask = None

    @property
    def cache_length(self) -> int:
        cache = self.blocks[0].attn.kv_cache
        return 0 if cache is None else cache.k.shape[2]
