"""`ShapesClassifier`: what a Shapes image shows, and the feature space of Shapes-FID / Shapes-IS.

No ImageNet Inception network can be downloaded here, so zoo trains its own judge on Shapes
(`zoo train shapes-classifier`): a small CNN whose heads read every attribute of a Shapes image
(shape class, colour, size, position, count, background colour, texture) and whose penultimate
layer is the feature space of zoo's FID, IS and precision/recall. Numbers computed with it are
Shapes-FID / Shapes-IS: comparable with each other, not with ImageNet figures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from zoo.data import shapes
from zoo.utils.io import AtomicSaveMixin

# head name -> the attribute values it predicts, in label order
ATTRIBUTES = {
    "shape": shapes.CLASSES, "color": list(shapes.COLORS), "size": list(shapes.SIZES),
    "position": list(shapes.POSITIONS), "count": [1, 2, 3], "background": list(shapes.COLORS),
    "texture": shapes.TEXTURES,
}
INPUT_SIZE = 64


def attribute_labels(spec: shapes.ShapeSpec) -> dict[str, int]:
    """The label of every head for a Shapes spec."""
    return {name: values.index(getattr(spec, name)) for name, values in ATTRIBUTES.items()}


def _conv(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ShapesClassifier(AtomicSaveMixin, ModelMixin, ConfigMixin):
    """CNN over 64x64 inputs (other sizes are resized): 4 stages of two 3x3 convolutions, then a
    flattened 4x4 map (positions matter) to a `feature_dim` feature, then one linear head per attribute.

    Examples:
        >>> import torch, zoo
        >>> from zoo.data.shapes import ShapesDataset
        >>> judge = zoo.load("shapes-classifier")
        >>> item = ShapesDataset("test")[0]
        >>> sorted(judge.predict(item["image"][None])[0])    # what the image shows, per attribute
        ['background', 'color', 'count', 'position', 'shape', 'size', 'texture']
    """

    @register_to_config
    def __init__(self, widths: list[int] = (16, 32, 64, 128), feature_dim: int = 256):
        super().__init__()
        stages, cin = [], 3
        for w in widths:
            stages += [_conv(cin, w), _conv(w, w), nn.MaxPool2d(2)]
            cin = w
        self.backbone = nn.Sequential(*stages)
        side = INPUT_SIZE // 2 ** len(widths)
        self.to_feature = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, feature_dim), nn.ReLU())
        self.heads = nn.ModuleDict({name: nn.Linear(feature_dim, len(values)) for name, values in ATTRIBUTES.items()})

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W] in [-1, 1], got {tuple(images.shape)}.")
        if images.dtype == torch.uint8:  # torchmetrics hands over uint8 images
            images = images.float() / 127.5 - 1
        images = images.to(self.dtype)
        if images.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            images = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True,
                                   align_corners=False)
        return images

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """The last convolutional map [B, widths[-1], 4, 4], before the flatten: spatial features of what
        the image shows (the teacher of REPA in `zoo train flextok-shapes --repa-weight`)."""
        return self.backbone(self._prepare(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The feature space of Shapes-FID and precision/recall: [B, feature_dim]."""
        return self.to_feature(self.feature_map(images))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per attribute head: {name: [B, num_values]}."""
        feature = self.features(images)
        return {name: head(feature) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> list[dict]:
        """The attribute values each image shows, e.g. {"shape": "star", "color": "red", ...}."""
        logits = self(images)
        return [{name: ATTRIBUTES[name][int(logits[name][i].argmax())] for name in ATTRIBUTES}
                for i in range(images.shape[0])]
