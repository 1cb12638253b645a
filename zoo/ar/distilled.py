"""The DD1 student: an AR transformer that maps a noise sequence to its tokens in one or two passes.

Distilled Decoding (Liu et al., arXiv 2412.17153; microsoft/distilled_decoding, `DDTransformer`).
The student is the teacher's GPT with three changes: continuous inputs (codeword or noise vectors,
`codebook_dim` wide) through a linear layer instead of the token embedding; a learned data/noise flag
added to every position (the class token and the first t tokens are data, the rest noise); and a
second, continuous head (PixArt's adaLN final layer modulated by the class embedding) next to the
teacher's logits head. Attention stays causal: the output at token j sees the class, the data
before j and the noise up to j, which is all the flow map needs to place token j.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from zoo.ar.transformer import ARTransformer
from zoo.utils.io import AtomicSaveMixin

# teacher config keys the student does not inherit: it reads vectors, and never drops the class
_NOT_INHERITED = ("input_dim", "input_vocab_size", "class_dropout_prob")


class AdaLNFinalLayer(nn.Module):
    """PixArt's final layer: LayerNorm (no affine), shift/scale from a learned table plus the condition."""

    def __init__(self, hidden_size: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, out_dim)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size) / hidden_size ** 0.5)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """x [B, T, D], condition [B, 1, D] -> [B, T, out_dim]."""
        shift, scale = (self.scale_shift_table[None] + condition).chunk(2, dim=1)  # [B, 1, D] each
        return self.linear(self.norm(x) * (1 + scale) + shift)


class DDTransformer(AtomicSaveMixin, ModelMixin, ConfigMixin):
    """DD1's generator over an `ARTransformer` backbone (the teacher's configuration).

    Args:
        backbone_config: the ARTransformer configuration (that of the teacher; `from_teacher` fills it).
        codebook_dim: width of the codeword / noise vectors (8 for LlamaGen's VQ).

    Examples:
        >>> import torch, zoo
        >>> teacher = zoo.load("llamagen-shapes").transformer
        >>> student = zoo.DDTransformer.from_teacher(teacher, codebook_dim=8)   # the DD1 student layout
        >>> student.num_tokens
        256
        >>> # train: zoo train dd-shapes --teacher llamagen-shapes; sample: zoo.DistilledPipeline
    """

    @register_to_config
    def __init__(self, backbone_config: dict | None = None, codebook_dim: int = 8):
        super().__init__()
        config = {k: v for k, v in (backbone_config or {}).items() if not k.startswith("_") and k not in _NOT_INHERITED}
        if config.get("num_classes", 0) < 1:
            raise ValueError("DDTransformer distils class-conditional models: the backbone needs num_classes >= 1.")
        if config.get("attention", "causal") != "causal":
            raise ValueError("DDTransformer keeps the teacher's causal attention; pass a causal backbone.")
        self.backbone = ARTransformer(**config, input_dim=codebook_dim)
        hidden = self.backbone.config.hidden_size
        self.data_noise_embedding = nn.Embedding(2, hidden)
        self.continuous_head = AdaLNFinalLayer(hidden, codebook_dim)
        std = self.backbone.config.initializer_range
        nn.init.normal_(self.data_noise_embedding.weight, std=std)
        nn.init.normal_(self.continuous_head.linear.weight, std=std)
        nn.init.zeros_(self.continuous_head.linear.bias)

    @classmethod
    def from_teacher(cls, teacher: ARTransformer, codebook_dim: int) -> "DDTransformer":
        """A student whose class embedding, blocks, final norm and logits head are the teacher's."""
        if teacher.config.input_dim is not None:
            raise ValueError("the teacher must be a token model (input_dim=None).")
        backbone_config = {k: v for k, v in teacher.config.items() if not k.startswith("_")}  # no class/path keys
        student = cls(backbone_config=backbone_config, codebook_dim=codebook_dim)
        own = student.backbone
        own.class_embedding.load_state_dict(teacher.class_embedding.state_dict())
        own.blocks.load_state_dict(teacher.blocks.state_dict())
        own.norm.load_state_dict(teacher.norm.state_dict())
        own.head.load_state_dict(teacher.head.state_dict())
        return student.to(teacher.device, teacher.dtype)

    @property
    def num_tokens(self) -> int:
        return self.backbone.seq_len

    def forward(self, x: torch.Tensor, class_labels: torch.Tensor, num_data: torch.Tensor | int = 0):
        """x [B, T, codebook_dim]: data vectors for the first `num_data` tokens of each row, noise after.

        Returns (codes [B, T, codebook_dim], logits [B, T, vocab]) in float32: the continuous and the
        token prediction of every token (the output at token j predicts token j itself).
        """
        B, T, C = x.shape
        if C != self.config.codebook_dim or T > self.num_tokens:
            raise ValueError(f"x must be [B, <= {self.num_tokens}, {self.config.codebook_dim}], got {tuple(x.shape)}.")
        num_data = torch.as_tensor(num_data, device=x.device).expand(B)
        prefix = self.backbone.embed_condition(class_labels=class_labels)  # [B, P, D]
        P = prefix.shape[1]
        h = torch.cat([prefix, self.backbone.embed_inputs(x)], dim=1)
        is_data = torch.arange(P + T, device=x.device)[None] < P + num_data[:, None]  # the prefix is data
        h = h + self.data_noise_embedding(is_data.long())
        hidden = self.backbone.forward_hidden(h, final_norm=False)
        logits = self.backbone.logits(self.backbone.norm(hidden))[:, P:]
        codes = self.continuous_head(hidden, prefix[:, :1])[:, P:]
        return codes.float(), logits
