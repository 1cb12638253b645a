"""Next-scale prediction (VAR, Tian et al., arXiv 2404.02905) as a step of the shared engine.

The token maps of a `MultiScaleResidualVQ` (L_1 < L_2 < ... < L_S tokens) are generated one scale per
step: the condition prefix predicts scale 1 (VAR: L_1 = 1 token from the class token); then the
accumulated reconstruction f_hat of the scales so far, area-resized to L_{s+1} tokens, is the input
of the next L_{s+1} positions, whose outputs predict scale s+1 all at once. Attention is block-causal
(`ARTransformer(attention="block_causal", block_sizes=scales[1:], input_dim=C)`): a scale sees itself,
the earlier scales and the prefix. Training reads the same inputs from
`MultiScaleResidualVQ.teacher_forcing_inputs`.
"""

from __future__ import annotations

import torch

from zoo.nn.quantizers import MultiScaleResidualVQ


def next_scale_config(quantizer: MultiScaleResidualVQ, **config) -> dict:
    """The ARTransformer arguments of a next-scale model over `quantizer` (plus any of yours)."""
    scales = quantizer.scales
    if scales[0] != 1:
        raise ValueError(f"next-scale models predict the first scale from the one class token: it must hold 1 "
                         f"token, got scales {scales}.")
    return {"vocab_size": quantizer.num_codes, "input_dim": quantizer.dim, "seq_len": sum(scales[1:]),
            "attention": "block_causal", "block_sizes": scales[1:], "position_embedding": "rope_1d",
            "num_prefix_tokens": 1, **config}


class NextScaleStep:
    """Emits one whole scale per step; feeds back the next scale's input built from f_hat."""

    def __init__(self, quantizer: MultiScaleResidualVQ):
        self.quantizer = quantizer
        self.scales = quantizer.scales
        self.vocab_size = quantizer.num_codes
        self.f_hat, self.done = None, 0

    def _num_scales(self, num_tokens: int) -> int:
        total = 0
        for k, length in enumerate(self.scales, 1):
            total += length
            if total == num_tokens:
                return k
        sums = [sum(self.scales[:k]) for k in range(1, len(self.scales) + 1)]
        raise ValueError(f"{num_tokens} tokens are not whole scales; pass one of {sums}.")

    def num_steps(self, num_tokens: int) -> int:
        return self._num_scales(num_tokens)

    def cache_length(self, num_prefix: int, num_tokens: int) -> int:
        """The prefix and the inputs of scales 2..k (the last scale's tokens are never fed back)."""
        return num_prefix + num_tokens - self.scales[0]

    def positions(self, num_prefix: int, num_tokens: int) -> int:
        return self.cache_length(num_prefix, num_tokens)

    def reset(self, num_tokens: int, num_given: int, batch_size: int):
        if num_given:
            raise ValueError("next-scale generation does not take prompt tokens.")
        self.f_hat, self.done = None, 0

    def sample(self, model, hidden: torch.Tensor, sample_fn) -> torch.Tensor:
        """The newest positions' hidden states [R, L_s, D] (the prefix's last for scale 1) -> [B, L_s]."""
        return sample_fn(model.logits(hidden[:, -self.scales[self.done]:]))

    def embed(self, model, tokens: torch.Tensor) -> torch.Tensor:
        """Scale s's ids [R, L_s] -> the inputs of scale s+1 [R, L_{s+1}, D]."""
        q, s = self.quantizer, self.done
        codes = q.refine(q.codebook(s).embed(tokens), s)
        self.f_hat = codes if self.f_hat is None else self.f_hat + codes
        self.done += 1
        return model.embed_inputs(q.resize(self.f_hat, self.scales[self.done], "area"))
