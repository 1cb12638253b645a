"""Outputs show themselves in notebooks: audio players, image grids, mesh previews."""

import base64
import io

import numpy as np
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

    from pipelines import FlexTokPipelineOutput, VAT3DPipelineOutput

    images = [Image.new("RGB", (8, 8), (255, 0, 0))] * 3
    png = FlexTokPipelineOutput(images=images, tokens=[])._repr_png_()
    assert Image.open(io.BytesIO(png)).size == (16, 16)  # 2 x 2 grid
    assert FlexTokPipelineOutput(images=np.zeros((1, 8, 8, 3)), tokens=[])._repr_png_() is None
    meshes = VAT3DPipelineOutput(meshes=[trimesh.creation.box(extents=(1, 1, 1))], tokens=[])
    assert Image.open(io.BytesIO(meshes._repr_png_())).size == (192, 192)
