"""Quantizers shared by zoo's tokenizers. This file: the nearest-codeword vector quantizer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VectorQuantizer(nn.Module):
    """VQ-VAE quantizer: each vector goes to its nearest codeword; straight-through gradients.

    With `l2_norm` (LlamaGen, ViT-VQGAN) vectors and codewords are l2-normalised before the search
    and the normalised codeword is returned, so the code space is the unit sphere.

    Args:
        num_codes: codebook size K.  code_dim: codeword size C.
        beta: weight of the commitment loss (encoder towards codes).
    """

    def __init__(self, num_codes: int, code_dim: int, l2_norm: bool = True, beta: float = 0.25):
        super().__init__()
        if num_codes < 1 or code_dim < 1:
            raise ValueError(f"num_codes and code_dim must be >= 1, got {num_codes}, {code_dim}.")
        self.num_codes, self.code_dim, self.l2_norm, self.beta = num_codes, code_dim, l2_norm, beta
        self.embedding = nn.Embedding(num_codes, code_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_codes, 1.0 / num_codes)
        # training statistics for dead-code restarts (not saved): uses per code, and the latest inputs
        self.register_buffer("usage", torch.zeros(num_codes, dtype=torch.long), persistent=False)
        self.recent_inputs: torch.Tensor | None = None

    @property
    def codebook(self) -> torch.Tensor:
        """The codewords as the decoder sees them: [K, C] (unit vectors with l2_norm)."""
        weight = self.embedding.weight
        return F.normalize(weight, dim=-1) if self.l2_norm else weight

    def nearest(self, z: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
        """Index of the nearest codeword for each vector z [..., C] -> [...] (chunked over vectors)."""
        flat = z.reshape(-1, self.code_dim)
        if self.l2_norm:
            flat = F.normalize(flat, dim=-1)
        codebook = self.codebook
        code_sq = codebook.pow(2).sum(-1)
        ids = [
            (part.pow(2).sum(-1, keepdim=True) + code_sq - 2 * part @ codebook.t()).argmin(-1)
            for part in flat.split(chunk)
        ]
        return torch.cat(ids).view(z.shape[:-1])

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Codewords of ids [...] -> [..., C]."""
        return F.embedding(ids, self.codebook)

    def forward(self, z: torch.Tensor):
        """z [B, C, H, W] -> (z_q [B, C, H, W] with straight-through gradients, ids [B, H, W], losses).

        losses: "codebook" (codes towards the encoder) and "commitment" (beta * encoder towards codes),
        computed only in training; LlamaGen's VectorQuantizer.
        """
        z = z.permute(0, 2, 3, 1)  # [B, H, W, C]
        if self.l2_norm:
            z = F.normalize(z, dim=-1)
        ids = self.nearest(z)
        z_q = self.embed(ids)
        losses = {}
        if self.training:
            self.usage += torch.bincount(ids.flatten(), minlength=self.num_codes)
            self.recent_inputs = z.detach().reshape(-1, self.code_dim)
            losses["codebook"] = F.mse_loss(z_q, z.detach())
            losses["commitment"] = self.beta * F.mse_loss(z, z_q.detach())
        z_q = z + (z_q - z).detach()
        return z_q.permute(0, 3, 1, 2), ids, losses

    @torch.no_grad()
    def restart_dead_codes(self, candidates: torch.Tensor, usage: torch.Tensor | None = None,
                           generator: torch.Generator | None = None) -> int:
        """Move every code unused since the last restart onto a random candidate input vector
        (candidates [N, C], e.g. `recent_inputs`); reset the usage counts. Returns the number moved.

        usage: the counts to judge by (pass the sum over processes under data parallelism).
        """
        usage = self.usage if usage is None else usage
        dead = (usage == 0).nonzero().flatten()
        if len(dead) and len(candidates):
            pick = torch.randint(len(candidates), (len(dead),), generator=generator, device=candidates.device)
            vectors = candidates[pick].to(self.embedding.weight)
            self.embedding.weight[dead] = F.normalize(vectors, dim=-1) if self.l2_norm else vectors
        self.usage.zero_()
        return len(dead)

    def usage_stats(self, usage: torch.Tensor | None = None) -> dict:
        """Share of codes used and the perplexity of the code distribution (from the usage counts)."""
        usage = (self.usage if usage is None else usage).float()
        probs = usage / usage.sum().clamp(min=1)
        entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
        return {"codebook_usage": (usage > 0).float().mean().item(), "perplexity": entropy.exp().item()}
