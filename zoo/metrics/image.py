"""Image metrics: reconstruction (PSNR, SSIM, codebook usage, pFID) and generation (Shapes-FID,
Shapes-IS, precision/recall, attribute accuracy), computed in the `ShapesClassifier` feature space.

Protocols:
- PSNR / SSIM (torchmetrics) on images in [-1, 1] (data range 2), averaged over images.
- Shapes-FID: Frechet distance between Gaussian fits of classifier features (torchmetrics' FID with
  zoo's classifier as the feature network). Shapes-IS: exp E[KL(p(y|x) || p(y))] over the shape
  head, 10 splits (torchmetrics). Not comparable with ImageNet Inception numbers.
- Precision / recall: k-nearest-neighbour manifolds in the same features, k = 3 (Kynkaanniemi et al. 2019).
- pFID (RobustTok): FID of reconstructions whose tokens were each swapped, with probability alpha,
  for one of the delta nearest other codewords.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(images.clamp(-1, 1), reference, data_range=2.0, reduction="elementwise_mean",
                                   dim=(1, 2, 3)).item()


def ssim(images: torch.Tensor, reference: torch.Tensor) -> float:
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(images.clamp(-1, 1), reference, data_range=2.0).item()


def codebook_stats(ids: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Share of the codebook used by `ids`, and the perplexity of their distribution."""
    counts = torch.bincount(ids.flatten(), minlength=codebook_size).double()
    probs = counts / counts.sum()
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    return {"codebook_usage": (counts > 0).double().mean().item(), "perplexity": entropy.exp().item()}


def perturb_tokens(ids: torch.Tensor, codebook: torch.Tensor, alpha: float, delta: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """RobustTok's perturbation: each token, with probability alpha, becomes one of the `delta`
    codewords nearest to its own (itself excluded), chosen uniformly."""
    if not 0 <= alpha <= 1 or not 1 <= delta < len(codebook):
        raise ValueError(f"need 0 <= alpha <= 1 and 1 <= delta < codebook size, got alpha={alpha}, delta={delta}.")
    distances = torch.cdist(codebook, codebook)
    distances.fill_diagonal_(float("inf"))
    neighbours = distances.topk(delta, largest=False).indices  # [K, delta]
    flat = ids.flatten()
    swap = torch.rand(flat.shape, generator=generator) < alpha
    choice = torch.randint(delta, flat.shape, generator=generator)
    return torch.where(swap, neighbours[flat, choice], flat).view(ids.shape)


class _Features(nn.Module):
    def __init__(self, classifier):
        super().__init__()
        self.classifier, self.num_features = classifier, classifier.config.feature_dim

    def forward(self, images):
        return self.classifier.features(images)


class _ShapeLogits(nn.Module):
    """The shape head as log-probabilities floored at LOG_PROB_FLOOR: a confident classifier puts
    probabilities below float32's range (its logits can span thousands), and a class whose mean
    probability in a split is exactly 0 makes torchmetrics' KL 0 * inf = nan. The floor (1e-26) moves
    the score by far less than its printed precision."""

    LOG_PROB_FLOOR = -60.0

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, images):
        return self.classifier(images)["shape"].float().log_softmax(-1).clamp(min=self.LOG_PROB_FLOOR)


@torch.no_grad()
def shapes_fid(classifier, real: Iterable[torch.Tensor], fake: Iterable[torch.Tensor]) -> float:
    """Shapes-FID between two streams of image batches ([B, 3, H, W] in [-1, 1])."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=_Features(classifier.eval()))
    for batch in real:
        fid.update(batch, real=True)
    for batch in fake:
        fid.update(batch, real=False)
    return fid.compute().item()


@torch.no_grad()
def shapes_inception_score(classifier, images: Iterable[torch.Tensor], splits: int = 10) -> tuple[float, float]:
    """Shapes-IS (mean, std over splits) from the shape head."""
    from torchmetrics.image.inception import InceptionScore

    import warnings

    with warnings.catch_warnings():  # "will save all extracted features": logits of 10 classes are small
        warnings.simplefilter("ignore", UserWarning)
        score = InceptionScore(feature=_ShapeLogits(classifier.eval()), splits=splits)
    for batch in images:
        score.update(batch)
    with torch.random.fork_rng(devices=[]):  # the splits are a random permutation: make them the same every call
        torch.manual_seed(0)
        mean, std = score.compute()
    return mean.item(), std.item()


def precision_recall(real_features: torch.Tensor, fake_features: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision (fake inside the real manifold) and recall (real inside the fake manifold)."""

    def coverage(support, queries):
        radii = torch.cdist(support, support).kthvalue(k + 1, dim=1).values  # k-th neighbour, self excluded
        return (torch.cdist(queries, support) <= radii[None]).any(1).float().mean().item()

    return coverage(real_features, fake_features), coverage(fake_features, real_features)


@torch.no_grad()
def attribute_accuracy(classifier, images: torch.Tensor, expected: dict[str, list],
                       batch_size: int = 100) -> dict[str, float]:
    """Share of images whose predicted attribute equals the expected one, per attribute given
    (e.g. {"shape": ["star", ...]}); the classifier sees `batch_size` images at a time."""
    classifier.eval()
    predictions = [p for batch in images.split(batch_size) for p in classifier.predict(batch)]
    return {name: sum(p[name] == e for p, e in zip(predictions, values)) / len(values)
            for name, values in expected.items()}
