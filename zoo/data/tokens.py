"""Token datasets: images encoded once by a tokenizer, stored as safetensors, read by AR training.

A token file holds `ids` [N, h, w] (int32), `labels` [N] (int64) and metadata (the tokenizer, the data,
the class names). `zoo tokenize` writes one from Shapes or from a folder of your own images.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def image_folder(folder: str | Path, size: int) -> tuple[list[Path], list[int], list[str]]:
    """Image files under `folder`; the first-level subfolder names are the classes (like ImageFolder)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}.")
    classes = sorted({p.relative_to(folder).parts[0] for p in files if len(p.relative_to(folder).parts) > 1})
    labels = [classes.index(p.relative_to(folder).parts[0]) if len(p.relative_to(folder).parts) > 1 else 0
              for p in files]
    return files, labels, classes


def load_image(path: Path, size: int) -> torch.Tensor:
    """An image file, centre-cropped to a square and resized to size x size: [3, size, size] in [-1, 1]."""
    from PIL import Image

    from .shapes import to_tensor

    image = Image.open(path).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return to_tensor(image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC))


@torch.no_grad()
def tokenize(vq, images, batch_size: int = 64, progress: bool = True) -> torch.Tensor:
    """Encode a sequence of [3, H, W] images with a VQModel: ids [N, h, w] int32."""
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc="tokenize", disable=not progress):
        batch = torch.stack([images[i] for i in range(start, min(start + batch_size, len(images)))])
        out.append(vq.encode(batch.to(vq.device)).int().cpu())
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

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        return {"ids": self.ids[index].flatten(), "label": self.labels[index]}


def shapes_images(split: str, num: int, size: int):
    """The first `num` Shapes images of a split (drawn lazily) and their labels."""
    from .shapes import ShapesDataset

    data = ShapesDataset(split, size=size, length=num)

    class _Images:
        def __len__(self):
            return num

        def __getitem__(self, i):
            return data[i]["image"]

    return _Images(), torch.tensor([data.spec(i).label for i in range(num)])
