"""Recipe `shapes-classifier`: the judge behind Shapes-FID / Shapes-IS and prompt checks.

    zoo train shapes-classifier --out runs/shapes-classifier --steps 3000

Multi-task cross-entropy over every attribute head, on freshly drawn Shapes training images at a
random resolution from 32 to 96 pixels (the classifier resizes to 64, so it must not depend on the
resolution it is shown). With `--corrupt P` (default 0.75) that share of the images is degraded the way a
tokenizer's or a generator's output can be (blur, JPEG, colour shift, noise: `corrupt`), so that the judge
reads what an image shows rather than its clean-render statistics. At the end it reports per-head accuracy
on 2,000 validation images at 32, 64 and 128 px, and at 64 px under fixed corruptions.
"""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from zoo.data.shapes import ShapesDataset, render, to_tensor
from zoo.metrics.classifier import ATTRIBUTES, ShapesClassifier, attribute_labels
from zoo.train.loop import TrainConfig, add_mixed_precision, train
from zoo.utils.io import atomic_file


def blur(image: torch.Tensor, size: int) -> torch.Tensor:
    """image [3, S, S] down to `size` pixels (anti-aliased) and back up (bilinear)."""
    small = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)
    return F.interpolate(small, size=image.shape[-2:], mode="bilinear", align_corners=False)[0]


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """image [3, S, S] in [-1, 1] through a JPEG encode/decode at `quality` (1..95)."""
    pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(quality))
    return to_tensor(Image.open(buffer).convert("RGB"))


def corrupt(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A degraded copy of image [3, S, S] in [-1, 1]: each of blur (down to 16..S px and back), JPEG
    (quality 10..90), a per-channel colour shift (std 0.05) and Gaussian noise (std 0..0.15) applied with
    probability 1/2, in that order."""
    def chance() -> bool:
        return torch.rand((), generator=generator).item() < 0.5

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=generator).item()

    side = image.shape[-1]
    if chance():
        image = blur(image, round(uniform(16, side)))
    if chance():
        image = jpeg(image, round(uniform(10, 90)))
    if chance():
        image = image + 0.05 * torch.randn(3, 1, 1, generator=generator)
    if chance():
        image = image + uniform(0, 0.15) * torch.randn(image.shape, generator=generator)
    return image.clamp(-1, 1)


FIXED_CORRUPTIONS = {  # the robustness columns of `evaluate`: (image, index) -> image
    "blur 32 px": lambda image, index: blur(image, 32),
    "JPEG q30": lambda image, index: jpeg(image, 30),
    "noise 0.1": lambda image, index: (image + 0.1 * torch.randn(image.shape, generator=torch.Generator()
                                                                 .manual_seed(index))).clamp(-1, 1),
}


class LabelledShapes(torch.utils.data.Dataset):
    """Shapes images at a per-item random size, with the label of every attribute. `corrupt_share` of the
    items (drawn afresh at each access, from torch's global RNG) are degraded by `corrupt`; `transform`
    (image, index) -> image applies one fixed degradation to every item instead."""

    def __init__(self, split: str, length: int | None = None, sizes=(32, 96), fixed_size: int | None = None,
                 corrupt_share: float = 0.0, transform=None):
        if not 0 <= corrupt_share <= 1:
            raise ValueError(f"corrupt_share must be in [0, 1], got {corrupt_share}.")
        self.base = ShapesDataset(split, length=length)
        self.sizes, self.fixed_size = sizes, fixed_size
        self.corrupt_share, self.transform = corrupt_share, transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        spec = self.base.spec(index)
        size = self.fixed_size or int(np.random.default_rng(index).integers(*self.sizes))
        image = to_tensor(render(spec, size))
        image = F.interpolate(image[None], size=(64, 64), mode="bilinear", antialias=True)[0]
        if self.transform is not None:
            image = self.transform(image, index)
        elif self.corrupt_share and torch.rand(()).item() < self.corrupt_share:
            image = corrupt(image)
        return {"image": image, **attribute_labels(spec)}


def classifier_loss(model, batch):
    logits = model(batch["image"])
    losses = {name: F.cross_entropy(logits[name], batch[name]) for name in ATTRIBUTES}
    accuracy = {f"acc_{name}": (logits[name].argmax(-1) == batch[name]).float().mean().item() for name in ATTRIBUTES}
    return sum(losses.values()), accuracy


@torch.no_grad()
def evaluate(model, num_images: int = 2000, batch_size: int = 200, size: int = 64, transform=None) -> dict[str, float]:
    """Accuracy of every head on the first `num_images` validation images drawn at `size` pixels (then
    resized to 64), each passed through `transform` if given."""
    dataset = LabelledShapes("validation", length=num_images, fixed_size=size, transform=transform)
    data = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    correct = {name: 0 for name in ATTRIBUTES}
    model.eval()
    for batch in data:
        logits = model(batch["image"])
        for name in ATTRIBUTES:
            correct[name] += (logits[name].argmax(-1) == batch[name]).sum().item()
    return {name: correct[name] / num_images for name in ATTRIBUTES}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="zoo train shapes-classifier", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=3500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eval-images", type=int, default=2000)
    p.add_argument("--corrupt", type=float, default=0.75, help="share of training images degraded by `corrupt`")
    p.add_argument("--seed", type=int, default=0)
    add_mixed_precision(p)
    args = p.parse_args(argv)
    config = TrainConfig(output_dir=args.out, max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=1e-4, warmup_steps=min(200, args.steps // 10), lr_schedule="cosine",
                         log_every=min(100, args.steps),
                         checkpoint_every=min(1000, args.steps), seed=args.seed,
                         mixed_precision=args.mixed_precision, extra=vars(args))
    model = train(ShapesClassifier(), LabelledShapes("train", corrupt_share=args.corrupt), classifier_loss, config)
    from accelerate import PartialState

    if PartialState().is_main_process:
        model.save_pretrained(f"{args.out}/model")
        accuracy = {f"{size} px": evaluate(model, args.eval_images, size=size) for size in (32, 64, 128)}
        accuracy |= {f"64 px, {name}": evaluate(model, args.eval_images, transform=transform)
                     for name, transform in FIXED_CORRUPTIONS.items()}
        with atomic_file(f"{args.out}/validation.json", "w") as f:
            json.dump({"validation_accuracy": accuracy, "images": args.eval_images}, f, indent=2)
        print(json.dumps(accuracy, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
