"""Coarse labels for a VQ codebook: the code-to-cluster table of coarse-to-fine prediction (CTF).

CTF (Guo et al., arXiv 2503.16194) runs k-means over the codebook vectors; a token's coarse label is
its codeword's cluster and its fine label the codebook index itself. The clustering step is not public,
so this follows the closest public code (IAR, `sjtuplayer/IAR`): k-means on the l2-normalised
codewords. `method="random"` assigns codes to clusters at random (balanced): the paper's ablation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from zoo.utils.io import AtomicSaveMixin

METHODS = ("kmeans", "random")


def kmeans(points: torch.Tensor, k: int, iterations: int = 50, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding; the cluster of every point [N] (long).

    An emptied cluster is re-seeded with the point farthest from its centroid, so all k are used.
    """
    generator = torch.Generator().manual_seed(seed)
    points = points.double()
    N = points.shape[0]
    centroids = points[torch.randint(N, (1,), generator=generator)]
    nearest = torch.cdist(points, centroids).squeeze(1) ** 2  # [N]
    for _ in range(1, k):  # k-means++: next centre drawn with probability proportional to squared distance
        pick = torch.multinomial(nearest / nearest.sum(), 1, generator=generator) if nearest.sum() > 0 else \
            torch.randint(N, (1,), generator=generator)
        centroids = torch.cat([centroids, points[pick]])
        nearest = torch.minimum(nearest, torch.cdist(points, points[pick]).squeeze(1) ** 2)
    assignment = torch.cdist(points, centroids).argmin(1)
    for _ in range(iterations):
        counts = torch.bincount(assignment, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
        distances = torch.cdist(points, centroids)  # [N, k]
        new = distances.argmin(1)
        for empty in torch.nonzero(torch.bincount(new, minlength=k) == 0).flatten().tolist():
            far = distances.gather(1, new[:, None]).squeeze(1).argmax()
            new[far], centroids[empty] = empty, points[far]
            distances[far] = 0
        if torch.equal(new, assignment):
            break
        assignment = new
    return assignment


class CodeClusters(AtomicSaveMixin, ModelMixin, ConfigMixin):
    """The code-to-cluster table of a VQ codebook, saved as a pipeline component (safetensors).

    >>> clusters = CodeClusters.fit(vq.codebook, num_clusters=512)      # doctest: +SKIP
    >>> coarse = clusters.coarse(ids)                                   # fine ids -> coarse labels
    >>> logits = clusters.restrict_logits(fine_logits, coarse)          # -inf outside each cluster
    >>> logits, ids = clusters.member_logits(hidden, head.weight, coarse)  # the same, members only
    """

    @register_to_config
    def __init__(self, codebook_size: int = 16384, num_clusters: int = 512, method: str = "kmeans", seed: int = 0):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method={method!r}; pass one of {METHODS}.")
        if not 1 <= num_clusters <= codebook_size:
            raise ValueError(f"num_clusters must lie in [1, codebook_size={codebook_size}], got {num_clusters}.")
        self.register_buffer("cluster_of_code", torch.arange(codebook_size) % num_clusters)

    @classmethod
    def fit(cls, codebook: torch.Tensor, num_clusters: int, method: str = "kmeans", seed: int = 0,
            iterations: int = 50) -> "CodeClusters":
        """Cluster the codewords [codebook_size, dim] (l2-normalised first) into `num_clusters`."""
        if codebook.dim() != 2:
            raise ValueError(f"codebook must be [codebook_size, dim], got {tuple(codebook.shape)}.")
        clusters = cls(codebook_size=codebook.shape[0], num_clusters=num_clusters, method=method, seed=seed)
        if method == "kmeans":
            table = kmeans(F.normalize(codebook.detach().float().cpu(), dim=-1), num_clusters, iterations, seed)
        else:  # balanced random assignment
            order = torch.randperm(codebook.shape[0], generator=torch.Generator().manual_seed(seed))
            table = torch.empty_like(order)
            table[order] = torch.arange(codebook.shape[0]) % num_clusters
        clusters.cluster_of_code.copy_(table)
        return clusters

    @property
    def member_mask(self) -> torch.Tensor:
        """[num_clusters, codebook_size] bool: True where the code belongs to the cluster."""
        clusters = torch.arange(self.config.num_clusters, device=self.cluster_of_code.device)
        return clusters[:, None] == self.cluster_of_code[None, :]

    def cluster_sizes(self) -> torch.Tensor:
        return torch.bincount(self.cluster_of_code, minlength=self.config.num_clusters)

    def coarse(self, ids: torch.Tensor) -> torch.Tensor:
        """Fine (codebook) ids of any shape -> coarse (cluster) labels of the same shape."""
        if ids.dtype.is_floating_point or (ids.numel() and (ids.min() < 0 or ids.max() >= self.config.codebook_size)):
            raise ValueError(f"ids must be integer codebook ids in [0, {self.config.codebook_size}).")
        return self.cluster_of_code[ids.long()]

    def members(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The codes of every cluster in ascending order, padded to the largest cluster's size M:
        ids [num_clusters, M] (long, 0 at padding) and valid [num_clusters, M] (bool)."""
        table, C = self.cluster_of_code, self.config.num_clusters
        order = torch.argsort(table * table.numel() + torch.arange(table.numel(), device=table.device))
        sizes = self.cluster_sizes()
        cluster = table[order]  # the clusters of the sorted codes, non-decreasing
        slot = torch.arange(table.numel(), device=table.device) - (sizes.cumsum(0) - sizes)[cluster]
        ids = torch.zeros(C, int(sizes.max()), dtype=torch.long, device=table.device)
        valid = torch.zeros(ids.shape, dtype=torch.bool, device=table.device)
        ids[cluster, slot], valid[cluster, slot] = order, True
        return ids, valid

    def member_logits(self, hidden: torch.Tensor, head_weight: torch.Tensor,
                      coarse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fine logits over the members of each position's cluster only: `restrict_logits` without the
        [..., codebook_size] tensor. hidden [..., H] (normed), head_weight [codebook_size, H] and
        coarse [...] -> float32 logits [..., M] (-inf at padding) and their code ids [..., M]
        (`members()` order, ascending). Each position costs H x (its cluster's size) instead of
        H x codebook_size, and softmax / sampling run over M entries instead of codebook_size."""
        if head_weight.shape[0] != self.config.codebook_size or hidden.shape[-1] != head_weight.shape[1]:
            raise ValueError(f"head_weight must be [{self.config.codebook_size}, hidden] matching hidden [..., "
                             f"{hidden.shape[-1]}]; got {tuple(head_weight.shape)}.")
        if hidden.shape[:-1] != coarse.shape:
            raise ValueError(f"coarse labels must have shape hidden.shape[:-1] = {tuple(hidden.shape[:-1])}, "
                             f"got {tuple(coarse.shape)}.")
        if coarse.numel() and (coarse.min() < 0 or coarse.max() >= self.config.num_clusters):
            raise ValueError(f"coarse labels must lie in [0, {self.config.num_clusters}).")
        ids, valid = self.members()
        flat_hidden, flat_coarse = hidden.reshape(-1, hidden.shape[-1]), coarse.reshape(-1).long()
        logits = torch.full((flat_coarse.numel(), ids.shape[1]), float("-inf"), device=hidden.device)
        sizes = valid.sum(1).tolist()
        order = torch.argsort(flat_coarse)  # positions grouped by cluster: one matmul per cluster
        counts = torch.bincount(flat_coarse, minlength=self.config.num_clusters).tolist()
        for c, rows in enumerate(torch.split(order, counts)):
            if len(rows):
                logits[rows, : sizes[c]] = (flat_hidden[rows] @ head_weight[ids[c, : sizes[c]]].T).float()
        return logits.view(*coarse.shape, -1), ids[flat_coarse].view(*coarse.shape, -1)

    def restrict_logits(self, logits: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """Fine logits [..., codebook_size] with -inf outside the cluster given per position [...]."""
        if logits.shape[-1] != self.config.codebook_size or logits.shape[:-1] != coarse.shape:
            raise ValueError(f"logits must be [..., {self.config.codebook_size}] with coarse labels of shape "
                             f"logits.shape[:-1]; got {tuple(logits.shape)} and {tuple(coarse.shape)}.")
        inside = self.member_mask[coarse.long()]
        return logits.masked_fill(~inside, float("-inf"))
