"""The sample pictures of the docs and the README: one per family, from the built-in models.

    python docs/make_images.py                  # every family whose built-in model exists
    python docs/make_images.py llamagen-shapes  # some of them

Writes docs/images/<name>.png; every picture is drawn with fixed seeds, so rerunning after a model
changes shows the new model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

IMAGES_DIR = Path(__file__).parent / "images"


def _grid(images):
    from zoo.display import image_grid

    return image_grid(images)


def _generators(count: int, seed: int = 0):
    return [torch.Generator().manual_seed(seed + i) for i in range(count)]


def class_samples(name: str, **call_kwargs):
    """Two samples of each of four classes from a class-conditional image pipeline."""
    import zoo

    pipe = zoo.load(name)
    pipe.set_progress_bar_config(disable=True)
    labels = ["circle", "star", "square", "ring"]
    out = pipe(class_labels=labels, num_images_per_prompt=2, generator=_generators(8), **call_kwargs)
    return _grid(out.images)


def token_shuffle_samples():
    import zoo

    pipe = zoo.load("token-shuffle-shapes")
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a large red circle in the center on a blue plain background",
               "two small yellow stars at the top left on a green plain background"]
    out = pipe(prompts, num_images_per_prompt=2, guidance_scale=3.0, generator=_generators(4))
    return _grid(out.images)


def vq_tokens():
    import zoo
    from zoo.data.shapes import ShapesDataset
    from zoo.display import tokenization_grid

    data = ShapesDataset("test", size=64, length=3)
    images = torch.stack([data[i]["image"] for i in range(3)])
    return tokenization_grid(zoo.load("vq-shapes"), images)


def tts_spectrogram():
    """The log-mel spectrogram of one sentence from tts-speech, as a picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    import zoo
    from zoo.metrics.audio import mel_filters

    pipe = zoo.load("tts-speech")
    pipe.set_progress_bar_config(disable=True)
    text = "the small dog ran to the old house"
    out = pipe(text, generator=torch.Generator().manual_seed(0))
    audio = torch.as_tensor(out.audios[0]).float()
    fbanks, window = mel_filters(1024, 80, out.sample_rate)
    power = torch.stft(audio, 1024, 256, window=window, return_complex=True).abs() ** 2  # [513, frames]
    mel = (fbanks.T @ power).clamp(min=1e-8).log10()
    fig, ax = plt.subplots(figsize=(6, 2.4))
    ax.imshow(mel.numpy(), origin="lower", aspect="auto", cmap="magma",
              extent=(0, len(audio) / out.sample_rate, 0, 80))
    ax.set(xlabel="seconds", ylabel="mel bin", title=f'tts-speech: "{text}"')
    fig.tight_layout()
    fig.canvas.draw()
    picture = Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba()).convert("RGB")
    plt.close(fig)
    return picture


def flextok_prefixes():
    """Three test images (columns; the originals on top), then rebuilt from their first 1, 4, 16 and 64
    FlexTok tokens (rows below); decoder guidance 3 without APG, the built-in's best setting."""
    from diffusers.image_processor import VaeImageProcessor

    import zoo
    from zoo.data.shapes import ShapesDataset
    from zoo.display import image_grid

    pipe = zoo.load("flextok-ar-shapes")
    pipe.set_progress_bar_config(disable=True)
    data = ShapesDataset("test", size=pipe.tokenizer.config.image_size, length=3)
    images = torch.stack([data[i]["image"] for i in range(3)])
    rows = VaeImageProcessor().postprocess(images, output_type="pil")
    for k in (1, 4, 16, 64):
        rows += pipe(images=images, num_tokens=k, decoder_guidance_scale=3.0, apg=False,
                     generator=_generators(3)).images
    return image_grid(rows, columns=3)


def vat_samples():
    import zoo

    pipe = zoo.load("vat-ar-primitives")
    pipe.set_progress_bar_config(disable=True)
    out = pipe(class_labels=["box", "sphere", "cylinder", "cone", "capsule", "torus"], generator=_generators(6))
    return out.preview()


def vat_reconstructions():
    """Rows: six test shapes, then their reconstructions from the first 3, 5 and all 7 scales."""
    import torch

    import zoo
    from zoo.data.primitives import PrimitivesDataset
    from zoo.display import image_grid
    from zoo.render import render_mesh

    vat = zoo.load("vat-primitives")
    data = PrimitivesDataset("test", num_points=256, length=6)
    items = [data[i] for i in range(6)]
    ids = vat.encode(*(torch.stack([x[k] for x in items]) for k in ("points", "normals")))
    meshes = [data.spec(i).mesh() for i in range(6)]
    for k in (3, 5, 7):
        meshes += vat.decode_mesh(ids[:k], resolution=129)
    return image_grid([render_mesh(mesh, 128) for mesh in meshes], columns=6)


PICTURES = {
    "llamagen-shapes": lambda: class_samples("llamagen-shapes", guidance_scale=4.0),
    "ctf-shapes": lambda: class_samples("ctf-shapes", guidance_scale=2.0),
    "dd-shapes": lambda: class_samples("dd-shapes", num_inference_steps=1),
    "token-shuffle-shapes": token_shuffle_samples,
    "vq-shapes-tokens": vq_tokens,
    "tts-speech": tts_spectrogram,
    "flextok-shapes": flextok_prefixes,
    "vat-primitives": vat_samples,
    "vat-primitives-reconstructions": vat_reconstructions,
}
MODELS = {"vq-shapes-tokens": "vq-shapes", "flextok-shapes": "flextok-ar-shapes", "vat-primitives": "vat-ar-primitives",
          "vat-primitives-reconstructions": "vat-primitives"}


def main(argv=None) -> int:
    from weights_registry import get_entry
    from zoo.utils.io import atomic_path

    names = (sys.argv[1:] if argv is None else argv) or list(PICTURES)
    unknown = sorted(set(names) - set(PICTURES))
    if unknown:
        raise SystemExit(f"no picture named {unknown}; pass some of {list(PICTURES)}.")
    for name in names:
        model = MODELS.get(name, name)
        if get_entry(model) is None:
            print(f"{name}: the built-in {model} does not exist yet")
            continue
        path = IMAGES_DIR / f"{name}.png"
        with atomic_path(path) as tmp:
            PICTURES[name]().save(tmp, format="PNG")
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
