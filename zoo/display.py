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


def image_grid(images, background=(255, 255, 255), columns: int | None = None):
    """PIL images (of one size) in a grid, row by row, `columns` wide (default: about square); the last
    row may be short."""
    from PIL import Image

    images = list(images)
    if not images:
        raise ValueError("pass at least one image.")
    if columns is None:
        columns = math.ceil(math.sqrt(len(images)))
    elif isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive int (or None for an about-square grid), got {columns!r}.")
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width, math.ceil(len(images) / columns) * height), background)
    for i, image in enumerate(images):
        grid.paste(image.convert("RGB"), ((i % columns) * width, (i // columns) * height))
    return grid


class ImageGridDisplay:
    """For output dataclasses with `images`: notebooks show a list of PIL images as one grid.

    >>> out = pipe(class_labels=[0, 1, 2, 3])   # doctest: +SKIP
    >>> out                                      # in Jupyter: the four images in a 2 x 2 grid  # doctest: +SKIP
    """

    def _repr_png_(self) -> bytes | None:
        import PIL.Image

        images = getattr(self, "images", None)
        if isinstance(images, list) and images and all(isinstance(i, PIL.Image.Image) for i in images):
            return png_bytes(image_grid(images))
        return None  # arrays and tensors ("np", "pt") show as text


def token_image(ids, vocab_size: int, cell: int = 4):
    """Token ids as a picture: each id a fixed colour (hues spread by the golden ratio, so neighbouring
    ids differ), [h, w] ids as a grid of cell x cell squares, [k] ids as a strip of k squares.

    >>> ids = vq.encode(images)[0]              # [16, 16]  # doctest: +SKIP
    >>> token_image(ids, vq.config.codebook_size)  # a 64 x 64 PIL image  # doctest: +SKIP
    """
    import colorsys

    import numpy as np
    from PIL import Image

    ids = np.asarray(ids.detach().cpu() if hasattr(ids, "detach") else ids)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.size == 0:
        raise ValueError(f"ids must be a non-empty [h, w] grid or [k] sequence, got shape {ids.shape}.")
    if not isinstance(vocab_size, int) or vocab_size < 1 or ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"ids must lie in [0, vocab_size) with vocab_size a positive int; got ids in "
                         f"[{ids.min()}, {ids.max()}] and vocab_size={vocab_size!r}.")
    hues = (np.arange(vocab_size) * 0.6180339887) % 1.0
    palette = np.array([colorsys.hsv_to_rgb(h, 0.55 + 0.45 * (i % 3) / 2, 0.95 - 0.35 * (i % 2))
                        for i, h in enumerate(hues)])
    pixels = (palette[ids] * 255).astype(np.uint8).repeat(cell, axis=0).repeat(cell, axis=1)
    return Image.fromarray(pixels)


def tokenization_grid(tokenizer, images, num_tokens: int | None = None):
    """Each image beside its tokens and its reconstruction from them (rows: original | tokens |
    reconstruction), for a 2D VQ tokenizer (`encode` / `decode`) or a 1D FlexTok-style one
    (`tokenize` / `detokenize`, the first `num_tokens` tokens).

    >>> tokenization_grid(zoo.load("vq-shapes"), images[:4])   # a PIL image  # doctest: +SKIP
    """
    import torch
    from diffusers.image_processor import VaeImageProcessor
    from PIL import Image

    with torch.no_grad():
        if hasattr(tokenizer, "tokenize"):
            ids = tokenizer.tokenize(images)[:, :num_tokens]
            recon, vocab = tokenizer.detokenize(ids), tokenizer.codebook_size
        else:
            ids = tokenizer.encode(images)
            recon, vocab = tokenizer.decode(ids), tokenizer.config.codebook_size
    size = images.shape[-1]
    pil, recon_pil = (VaeImageProcessor().postprocess(x.detach().float().clamp(-1, 1), output_type="pil")
                      for x in (images, recon))
    grid = Image.new("RGB", (3 * size, len(pil) * size), (255, 255, 255))
    for row, (original, tokens, rebuilt) in enumerate(zip(pil, ids, recon_pil)):
        picture = token_image(tokens, vocab, cell=1)
        scale = size / max(picture.size)
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                 Image.NEAREST)
        grid.paste(original, (0, row * size))
        grid.paste(picture, (size, row * size + (size - picture.height) // 2))
        grid.paste(rebuilt, (2 * size, row * size))
    return grid

