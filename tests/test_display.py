"""Outputs show themselves in notebooks: audio players, image grids, mesh previews."""

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image


def test_speech_output_is_an_audio_player():
    from scipy.io import wavfile

    from pipelines import SpeechPipelineOutput

    out = SpeechPipelineOutput(audios=[np.zeros(2400, np.float32), torch.full((1200,), 0.5)], sample_rate=24000,
                               codes=[None, None])
    html = out._repr_html_()
    assert html.count("<audio controls") == 2 and "(0.10 s)" in html and "(0.05 s)" in html
    data = base64.b64decode(html.split("base64,")[2].split('"')[0])
    rate, samples = wavfile.read(io.BytesIO(data))
    assert rate == 24000 and len(samples) == 1200 and abs(int(samples[0]) - 16383) <= 1


def test_image_and_mesh_outputs_are_pngs():
    import trimesh
    from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

    from pipelines import FlexTokPipelineOutput, VAT3DPipelineOutput
    from pipelines.base import ZooImagePipelineOutput

    images = [Image.new("RGB", (8, 8), (255, 0, 0))] * 3
    out = ZooImagePipelineOutput(images=images)  # what every class / prompt image pipeline returns
    assert isinstance(out, ImagePipelineOutput) and out.images is images and out[0] is images
    assert Image.open(io.BytesIO(out._repr_png_())).size == (16, 16)
    png = FlexTokPipelineOutput(images=images, tokens=[])._repr_png_()
    assert Image.open(io.BytesIO(png)).size == (16, 16)  # 2 x 2 grid
    assert FlexTokPipelineOutput(images=np.zeros((1, 8, 8, 3)), tokens=[])._repr_png_() is None
    from zoo.display import image_grid

    assert image_grid(images, columns=3).size == (24, 8) and image_grid(images, columns=1).size == (8, 24)
    with pytest.raises(ValueError, match="columns"):
        image_grid(images, columns=0)
    meshes = VAT3DPipelineOutput(meshes=[trimesh.creation.box(extents=(1, 1, 1))], tokens=[])
    assert Image.open(io.BytesIO(meshes._repr_png_())).size == (192, 192)


def test_token_images_and_tokenization_grid():
    import pytest

    from tests.conftest import tiny_vq
    from zoo.display import token_image, tokenization_grid

    grid = token_image(torch.tensor([[0, 1], [2, 3]]), vocab_size=4, cell=3)
    assert grid.size == (6, 6)
    pixels = np.asarray(grid)
    assert len({tuple(pixels[r, c]) for r in (0, 3) for c in (0, 3)}) == 4  # one colour per id
    assert token_image(torch.arange(5), vocab_size=5).size == (20, 4)  # a 1D strip
    with pytest.raises(ValueError, match="vocab_size"):
        token_image(torch.tensor([[4]]), vocab_size=4)
    with pytest.raises(ValueError, match="non-empty"):
        token_image(torch.zeros(2, 2, 2, dtype=torch.long), vocab_size=4)

    vq = tiny_vq()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    picture = tokenization_grid(vq, images)
    assert picture.size == (96, 64)  # original | tokens | reconstruction, one row per image
