"""Recipe `shapes-classifier`: the judge behind Shapes-FID / Shapes-IS and prompt checks.

    zoo train shapes-classifier --out runs/shapes-classifier --steps 3000

Multi-task cross-entropy over every attribute head, on freshly drawn Shapes training images at a
random resolution from 32 to 96 pixels (the classifier resizes to 64, so it must not depend on the
resolution it is shown). At the end it reports per-head accuracy on 2,000 validation images.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from zoo.data.shapes import ShapesDataset, render, to_tensor
from zoo.metrics.classifier import ATTRIBUTES, ShapesClassifier, attribute_labels
from zoo.train.loop import TrainConfig, add_mixed_precision, train


class LabelledShapes(torch.utils.data.Dataset):
    """Shapes images at a per-item random size, with the label of every attribute."""

    def __init__(self, split: str, length: int | None = None, sizes=(32, 96), fixed_size: int | None = None):
        self.base = ShapesDataset(split, length=length)
        self.sizes, self.fixed_size = sizes, fixed_size

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        spec = self.base.spec(index)
        size = self.fixed_size or int(np.random.default_rng(index).integers(*self.sizes))
        image = to_tensor(render(spec, size))
        image = F.interpolate(image[None], size=(64, 64), mode="bilinear", antialias=True)[0]
        return {"image": image, **attribute_labels(spec)}


def classifier_loss(model, batch):
    logits = model(batch["image"])
    losses = {name: F.cross_entropy(logits[name], batch[name]) for name in ATTRIBUTES}
    accuracy = {f"acc_{name}": (logits[name].argmax(-1) == batch[name]).float().mean().item() for name in ATTRIBUTES}
    return sum(losses.values()), accuracy


@torch.no_grad()
def evaluate(model, num_images: int = 2000, batch_size: int = 200, size: int = 64) -> dict[str, float]:
    """Accuracy of every head on the first `num_images` validation images at `size` pixels."""
    data = torch.utils.data.DataLoader(LabelledShapes("validation", length=num_images, fixed_size=size),
                                       batch_size=batch_size)
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
    p.add_argument("--seed", type=int, default=0)
    add_mixed_precision(p)
    args = p.parse_args(argv)
    config = TrainConfig(output_dir=args.out, max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=1e-4, warmup_steps=min(200, args.steps // 10), lr_schedule="cosine",
                         log_every=min(100, args.steps),
                         checkpoint_every=min(1000, args.steps), seed=args.seed,
                         mixed_precision=args.mixed_precision, extra=vars(args))
    model = train(ShapesClassifier(), LabelledShapes("train"), classifier_loss, config)
    from accelerate import PartialState

    if PartialState().is_main_process:
        model.save_pretrained(f"{args.out}/model")
        accuracy = {size: evaluate(model, args.eval_images, size=size) for size in (32, 64, 128)}
        with open(f"{args.out}/validation.json", "w") as f:
            json.dump({"validation_accuracy_by_size": accuracy, "images": args.eval_images}, f, indent=2)
        print(json.dumps(accuracy, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
