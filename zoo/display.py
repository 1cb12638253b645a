"""Rich display of pipeline outputs in Jupyter: audio players, image grids, mesh previews.

Notebooks call `_repr_html_` / `_repr_png_` on the last value of a cell; zoo's output classes delegate to
these helpers, which need no IPython import (the HTML and PNG bytes are built here).
"""

from __future__ import annotations

import base64
import io
import math


def wav_bytes(audio, sample_rate: int) -> bytes:
    """A mono waveform (numpy or torch, floats in [-1, 1]) as the bytes of a 16-bit WAV file."""
    import numpy as np
    from scipy.io import wavfile

    samples = np.asarray(audio.detach().cpu() if hasattr(audio, "detach") else audio, dtype=np.float32)
    buffer = io.BytesIO()
    wavfile.write(buffer, sample_rate, (np.clip(samples, -1, 1) * 32767).astype(np.int16))
    return buffer.getvalue()


def audio_html(audios, sample_rate: int) -> str:
    """One HTML audio player per waveform (embedded as base64 WAV)."""
    players = []
    for i, audio in enumerate(audios):
        data = base64.b64encode(wav_bytes(audio, sample_rate)).decode()
        seconds = len(audio) / sample_rate
        player = f'<audio controls src="data:audio/wav;base64,{data}"></audio>'
        players.append(f"<div>#{i} ({seconds:.2f} s) {player}</div>")
    return "\n".join(players)


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_grid(images, background=(255, 255, 255)):
    """PIL images (of one size) in an about-square grid, row by row; the last row may be short."""
    from PIL import Image

    images = list(images)
    if not images:
        raise ValueError("pass at least one image.")
    columns = math.ceil(math.sqrt(len(images)))
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width, math.ceil(len(images) / columns) * height), background)
    for i, image in enumerate(images):
        grid.paste(image.convert("RGB"), ((i % columns) * width, (i // columns) * height))
    return grid
