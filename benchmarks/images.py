"""What the image benchmarks share: the Shapes reference set, the sample metrics and the sampling arguments.

All features come from `shapes-classifier`: the figures are Shapes-FID / Shapes-IS, not ImageNet numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from zoo.data.shapes import CLASSES, SIZES, ShapesDataset
from zoo.metrics.image import attribute_accuracy, precision_recall, shapes_fid, shapes_inception_score


def batches(tensor, size: int = 100) -> list:
    return [tensor[i:i + size] for i in range(0, len(tensor), size)]


def real_images(split: str, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n Shapes images of `split` at `size` pixels [n, 3, size, size] and their class ids [n]."""
    data = ShapesDataset(split, size=size, length=n)
    items = [data[i] for i in range(n)]
    return torch.stack([x["image"] for x in items]), torch.tensor([x["label"] for x in items])


def shape_sizes(split: str, n: int) -> list[str]:
    """The size name ("small", "medium", "large") of the shapes in each of the first n images of `split`."""
    data = ShapesDataset(split, length=n)
    return [data.spec(i).size for i in range(n)]


def size_masks(sizes: list[str]) -> dict[str, torch.Tensor]:
    """For each shape size present in `sizes` (one name per image), in `SIZES` order: a bool mask [N] of
    the images whose shapes have that size."""
    masks = {size: torch.tensor([s == size for s in sizes], dtype=torch.bool) for size in SIZES}
    return {size: keep for size, keep in masks.items() if keep.any()}


@torch.no_grad()
def reconstructions(vq, images: torch.Tensor) -> torch.Tensor:
    """The tokenizer's reconstructions (encode, decode, clamp) of images [N, 3, H, W] in [-1, 1]."""
    return torch.cat([vq.decode(vq.encode(b.to(vq.device))).clamp(-1, 1).cpu() for b in batches(images)])


@torch.no_grad()
def reference_set(classifier, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference of every sample metric: n Shapes test images and their classifier features."""
    real, _ = real_images("test", n, size)
    return real, torch.cat([classifier.features(b) for b in batches(real)])


def class_accuracy(classifier, images: torch.Tensor, labels) -> float:
    """The share of images in which the classifier reads the wanted shape (class ids `labels`)."""
    return attribute_accuracy(classifier, images, {"shape": [CLASSES[int(i)] for i in labels]})["shape"]


@torch.no_grad()
def image_metrics(classifier, images, labels, real, real_features) -> dict:
    """Shapes-FID against `real`, Shapes-IS, precision/recall and the share showing the wanted class."""
    features = torch.cat([classifier.features(b) for b in batches(images)])
    precision, recall = precision_recall(real_features, features)
    is_mean, is_std = shapes_inception_score(classifier, batches(images))
    return {"shapes_fid": shapes_fid(classifier, batches(real), batches(images)), "shapes_is": is_mean,
            "shapes_is_std": is_std, "precision": precision, "recall": recall,
            "class_accuracy": class_accuracy(classifier, images, labels)}


def take_turns(tasks: dict, rounds: int) -> tuple[dict, dict]:
    """Call every task with round 0, then every task with round 1, and so on: each task's results
    and seconds per round, by task name. `tasks` maps names to callables of the round index.

    Timing systems in turn, round by round, spreads the machine's slow spells over all of them, so
    their speed ratio holds while the machine's own speed drifts (5-20% within a run on a shared
    2-core VM); a ratio per round and its median then say how steady the comparison is.
    """
    if not tasks or rounds < 1:
        raise ValueError(f"take_turns needs at least one task and one round, got {len(tasks)} and {rounds}.")
    results = {name: [] for name in tasks}
    seconds = {name: [] for name in tasks}
    for index in range(rounds):
        for name, task in tasks.items():
            start = time.perf_counter()
            results[name].append(task(index))
            seconds[name].append(time.perf_counter() - start)
    return results, seconds


def one_image(pipe, **call_kwargs):
    """A task for `take_turns`: one image at batch 1 with seed = the round, decoding included (the wait
    of one user, where AR decoding is bound by per-step latency rather than by arithmetic).
    `call_kwargs` hold the one condition (class_labels=[3] or prompt="...") and the sampling settings."""
    pipe.set_progress_bar_config(disable=True)

    @torch.no_grad()
    def draw(index: int) -> None:
        pipe(generator=torch.Generator().manual_seed(index), output_type="pt", **call_kwargs)
    return draw


def latency_seconds(pipe, repeats: int, **call_kwargs) -> float:
    """Median seconds for one image at batch 1 over `repeats` seeds (see `one_image`)."""
    _, seconds = take_turns({"pipe": one_image(pipe, **call_kwargs)}, repeats)
    return statistics.median(seconds["pipe"])


def add_sampling_arguments(parser: argparse.ArgumentParser, name: str, images: int, batch_size: int,
                           quick_images: int):
    """--classifier, --images, --batch-size, --seed and --quick (at most `quick_images`, to <name>.quick.json)."""
    parser.add_argument("--classifier", default="shapes-classifier", help="feature network of the metrics")
    parser.add_argument("--images", type=int, default=images, help="images per row (and in the reference set)")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--seed", type=int, default=0, help="image i is drawn with seed + i")
    parser.add_argument("--quick", action="store_const", const=quick_images, default=0,
                        help=f"at most {quick_images} images, results to {name}.quick.json")


def num_images(args: argparse.Namespace) -> int:
    """--images, capped by --quick."""
    return min(args.images, args.quick) if args.quick else args.images
