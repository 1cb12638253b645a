"""ARImagePipeline with tiny random components: conventions, round trips, errors."""

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from PIL import Image

import zoo
from pipelines import ARImagePipeline
from tests.conftest import tiny_transformer, tiny_vq, trace_compiled_path
from zoo.cli import main as zoo_main

NAMES = [f"class{i}" for i in range(10)]


@pytest.fixture(scope="module")
def pipe():
    vq = tiny_vq()
    pipe = ARImagePipeline(transformer=tiny_transformer(), vqvae=vq, class_names=NAMES)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_outputs_and_seeds(pipe):
    out = pipe(class_labels=["class3", 5], num_images_per_prompt=2, generator=torch.Generator().manual_seed(0))
    assert len(out.images) == 4 and isinstance(out.images[0], Image.Image) and out.images[0].size == (8, 8)
    arr = pipe(class_labels=[3], output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert arr.shape == (1, 8, 8, 3) and 0 <= arr.min() and arr.max() <= 1
    again = pipe(class_labels=[3], output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert np.array_equal(arr, again)
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    batch = pipe(class_labels=[3, 4], output_type="pt", generator=gens).images
    assert torch.allclose(batch[:1], torch.from_numpy(arr).permute(0, 3, 1, 2), atol=1e-6)


def test_compiled_decoding_gives_the_eager_images(pipe, monkeypatch):
    trace_compiled_path(monkeypatch, pipe.transformer)
    kwargs = dict(class_labels=[3, 4], guidance_scale=2.0, output_type="pt")
    eager = pipe(**kwargs, generator=[torch.Generator().manual_seed(s) for s in (0, 1)]).images
    compiled = pipe(**kwargs, generator=[torch.Generator().manual_seed(s) for s in (0, 1)], compile=True).images
    assert torch.equal(eager, compiled) and pipe.transformer._compiled_decode is not None


@pytest.mark.parametrize("kwargs,message", [
    (dict(class_labels=["dog"]), "unknown class name 'dog'"),
    (dict(class_labels=[1], compile=1), "compile must be True or False"),
    (dict(class_labels=[10]), r"out of range; pass ids in \[0, 10\)"),
    (dict(class_labels=[]), "at least one class label"),
    (dict(class_labels=[1], guidance_scale=-1.0), "guidance_scale must be"),
    (dict(class_labels=[1], output_type="latent"), "output_type='latent'"),
    (dict(class_labels=[1], num_images_per_prompt=0), "num_images_per_prompt"),
])
def test_bad_inputs(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(**kwargs)


def test_mismatched_components_are_rejected(pipe):
    with pytest.raises(ValueError, match="vocabulary"):
        ARImagePipeline(transformer=tiny_transformer(vocab_size=32), vqvae=pipe.vqvae)
    with pytest.raises(ValueError, match="class names"):
        ARImagePipeline(transformer=pipe.transformer, vqvae=pipe.vqvae, class_names=["a"])


def test_save_load_and_cli(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    expected = pipe(class_labels=["class2"], output_type="np", generator=torch.Generator().manual_seed(1)).images
    for loaded in (ARImagePipeline.from_pretrained(tmp_path / "p"), DiffusionPipeline.from_pretrained(tmp_path / "p"),
                   zoo.load(tmp_path / "p")):
        assert type(loaded) is ARImagePipeline and loaded.config.class_names == NAMES
        loaded.set_progress_bar_config(disable=True)
        got = loaded(class_labels=["class2"], output_type="np", generator=torch.Generator().manual_seed(1)).images
        assert np.array_equal(got, expected)
    assert zoo_main(["generate", str(tmp_path / "p"), "--class", "class1", "--class", "4", "--num", "2",
                     "--out", str(tmp_path / "grid.png")]) == 0
    assert Image.open(tmp_path / "grid.png").size == (16, 16)


def test_builtin_llamagen_shapes_generates_offline(offline):
    from weights_registry import get_entry

    entry = get_entry("llamagen-shapes")
    assert entry.kind == "builtin" and (entry.path / "README.md").is_file()
    pipe = zoo.load("llamagen-shapes")
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe) is ARImagePipeline and pipe.transformer.dtype == torch.float32
    assert pipe.config.class_names[0] == "circle" and pipe.vqvae.config.codebook_size == 4096
    image = pipe(class_labels=["circle"], generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)
