"""Token datasets: images encoded once by a tokenizer, stored as safetensors, read by AR training.

A token file holds `ids` [N, h, w] (int32), `labels` [N] (int64) and metadata (the tokenizer, the data,
the class names, and the captions when there are any: Shapes captions, or for a folder the text of
`name.txt` beside each `name.png`). `zoo tokenize` writes one from Shapes or from a folder of images.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def folder_images(folder: str | Path, num: int, size: int):
    """Up to `num` image files under `folder` (loaded lazily, size x size), their labels and class names:
    the first-level subfolder names are the classes (like torchvision's ImageFolder). `folder_captions`
    reads the captions beside the same files."""
    folder = Path(folder)
    files = image_files(folder, num)
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}.")
    parts = [p.relative_to(folder).parts for p in files]
    classes = sorted({q[0] for q in parts if len(q) > 1})
    labels = torch.tensor([classes.index(q[0]) if len(q) > 1 else 0 for q in parts])
    return (lambda i: load_image(files[i], size)), labels, classes


def image_files(folder: str | Path, num: int) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:num]


def folder_captions(folder: str | Path, num: int) -> list[str] | None:
    """The text of `name.txt` beside each image of `folder_images`, or None if any is missing."""
    captions = []
    for path in image_files(folder, num):
        text = path.with_suffix(".txt")
        if not text.is_file():
            return None
        captions.append(text.read_text().strip())
    return captions


def load_image(path: Path, size: int) -> torch.Tensor:
    """An image file, centre-cropped to a square and resized to size x size: [3, size, size] in [-1, 1]."""
    from PIL import Image

    from .shapes import to_tensor

    image = Image.open(path).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return to_tensor(image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC))


@torch.no_grad()
def tokenize(vq, image_at, count: int, batch_size: int = 64, progress: bool = True) -> torch.Tensor:
    """Encode images image_at(0) .. image_at(count - 1) ([3, H, W] each) with a VQModel (ids [N, h, w]) or a
    1D tokenizer with a `tokenize` method such as FlexTok (ids [N, num_tokens]); int32."""
    encode = getattr(vq, "tokenize", vq.encode)
    out = []
    for start in tqdm(range(0, count, batch_size), desc="tokenize", disable=not progress):
        batch = torch.stack([image_at(i) for i in range(start, min(start + batch_size, count))])
        out.append(encode(batch.to(vq.device)).int().cpu())
    return torch.cat(out)


def save_tokens(path: str | Path, ids: torch.Tensor, labels: torch.Tensor, **metadata):
    from safetensors.torch import save_file

    from zoo.utils.io import atomic_path

    with atomic_path(path) as tmp:
        save_file({"ids": ids.int().contiguous(), "labels": labels.long().contiguous()}, tmp,
                  metadata={k: json.dumps(v) for k, v in metadata.items()})


class TokenDataset(torch.utils.data.Dataset):
    """Items {"ids": [h * w] long, "label": int} from a token file."""

    def __init__(self, path: str | Path):
        from safetensors import safe_open
        from safetensors.torch import load_file

        if not Path(path).is_file():
            raise FileNotFoundError(f"token file {path} does not exist; make one with `zoo tokenize`.")
        tensors = load_file(path)
        if set(tensors) != {"ids", "labels"} or len(tensors["ids"]) != len(tensors["labels"]):
            raise ValueError(f"{path} is not a zoo token file (needs matching 'ids' and 'labels').")
        with safe_open(path, "pt") as f:
            self.metadata = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        self.ids, self.labels = tensors["ids"].long(), tensors["labels"]
        self.grid = tuple(self.ids.shape[1:])
        self.captions: list[str] | None = self.metadata.get("captions")

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        return {"ids": self.ids[index].flatten(), "label": self.labels[index]}


def shapes_images(split: str, num: int, size: int):
    """The first `num` Shapes images of a split (drawn lazily), their labels and the class names."""
    from .shapes import CLASSES, ShapesDataset

    data = ShapesDataset(split, size=size, length=num)
    return (lambda i: data[i]["image"]), torch.tensor([data.spec(i).label for i in range(num)]), CLASSES


def shapes_captions(split: str, num: int) -> list[str]:
    from .shapes import ShapesDataset

    data = ShapesDataset(split, length=num)
    return [data.spec(i).caption for i in range(num)]
