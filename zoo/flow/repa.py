"""REPA: representation alignment for flow / diffusion transformers (Yu et al., ICLR 2025).

A training-time regulariser: the hidden states of the denoiser's patch tokens at one intermediate layer,
through a small MLP projector, are pulled towards a frozen pretrained network's features of the clean
image at the same spatial positions (negative cosine similarity, averaged over positions). The projector
is thrown away after training. FlexTok trains its rectified-flow decoder with REPA against DINOv2-L
(project page; the loss is not in the released code); zoo's built-ins, which cannot download DINOv2,
align with the last convolutional map of the built-in `shapes-classifier` instead.

    hidden [B, N, D] (patch tokens, layer l) --REPAProjector--> [B, N, C]
    teacher features [B, C, h, w] --resize to the patch grid--> [B, N, C]
    loss = -mean cos(projected, teacher)

REPA's defaults: a 3-layer SiLU MLP of width 2048, weight 0.5, layer 8 of SiT-XL's 28.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class REPAProjector(nn.Module):
    """REPA's projector: Linear -> SiLU -> Linear -> SiLU -> Linear, from the denoiser's width `dim` to the
    teacher's feature dimension `feature_dim`."""

    def __init__(self, dim: int, feature_dim: int, hidden_dim: int = 2048):
        super().__init__()
        for name, value in (("dim", dim), ("feature_dim", feature_dim), ("hidden_dim", hidden_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        self.net = nn.Sequential(nn.Linear(dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim), nn.SiLU(),
                                 nn.Linear(hidden_dim, feature_dim))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden)


def features_on_grid(features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Teacher features [B, C, h, w] -> [B, grid_h * grid_w, C] in raster order, resized (bilinear) to the
    denoiser's patch grid when their sizes differ."""
    if features.dim() != 4:
        raise ValueError(f"teacher features must be a [B, C, h, w] map, got shape {tuple(features.shape)}.")
    if tuple(features.shape[-2:]) != tuple(grid):
        features = F.interpolate(features.float(), size=tuple(grid), mode="bilinear", align_corners=False)
    return features.flatten(2).transpose(1, 2)


def repa_loss(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative cosine similarity between projected hidden states and teacher features, both [B, N, C],
    averaged over batch and positions (in float32). -1 is perfect alignment."""
    if projected.shape != target.shape:
        raise ValueError(f"projected hidden states {tuple(projected.shape)} and teacher features "
                         f"{tuple(target.shape)} must have the same [B, N, C] shape; resize the teacher's map to "
                         "the patch grid (features_on_grid) and project to its channels.")
    return -F.cosine_similarity(projected.float(), target.float(), dim=-1).mean()
