import numpy as np
import pytest
import torch

from zoo.data.shapes import CLASSES, ShapesDataset, render


def test_items_are_deterministic_and_splits_differ():
    a, b = ShapesDataset("train", size=32), ShapesDataset("train", size=32)
    assert torch.equal(a[5]["image"], b[5]["image"]) and a[5]["caption"] == b[5]["caption"]
    test = ShapesDataset("test", size=32)
    assert not torch.equal(a[5]["image"], test[5]["image"])


def test_item_contents():
    item = ShapesDataset("validation", size=48)[0]
    assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.float32
    assert -1 <= item["image"].min() and item["image"].max() <= 1
    spec = ShapesDataset("validation", size=48).spec(0)
    assert item["label"] == CLASSES.index(spec.shape)
    assert spec.shape in item["caption"] and spec.color in item["caption"] and spec.texture in item["caption"]


def test_every_class_and_the_resolution_range():
    for shape in CLASSES:
        ds = ShapesDataset("train", size=32, length=3, shape=shape)
        assert {ds[i]["label"] for i in range(3)} == {CLASSES.index(shape)}
    spec = ShapesDataset("train").spec(1)
    small, large = np.asarray(render(spec, 32)), np.asarray(render(spec, 512))
    assert small.shape == (32, 32, 3) and large.shape == (512, 512, 3)


def test_shapes_are_drawn_in_their_colour():
    ds = ShapesDataset("train", size=64, length=50)
    from zoo.data.shapes import COLORS

    for i in range(20):
        spec, pixels = ds.spec(i), np.asarray(render(ds.spec(i), 64)).reshape(-1, 3).astype(int)
        distance = np.abs(pixels - np.array(COLORS[spec.color])).sum(-1)
        assert (distance < 30).sum() >= 4, spec  # some pixels carry the shape's colour


def test_dataloader_batches():
    loader = torch.utils.data.DataLoader(ShapesDataset("train", size=32, length=8), batch_size=4)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["label"].shape == (4,) and len(batch["caption"]) == 4


@pytest.mark.parametrize("kwargs,message", [
    (dict(split="dev"), "unknown split"), (dict(size=16), "from 32 to 512"), (dict(size=600), "from 32 to 512"),
    (dict(shape="blob"), "unknown shape"), (dict(length=0), "length must be"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ShapesDataset(**kwargs)
