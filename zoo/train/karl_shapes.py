"""Recipe `karl-shapes`: KARL's adaptive-length tokenizer on Shapes, over the `vae-shapes` latents.

    zoo train vae-shapes --out runs/vae-shapes --steps 2000
    zoo train karl-shapes --out runs/karl-shapes --vae runs/vae-shapes/model --steps 3000

KARL scaled down to 64x64 Shapes: a budget of 64 tokens (one per 2x2 latent patch, as FlexTok's built-
in), estimation budgets 4, 8, ..., 64 (KARL: 16, 32, ..., 368 of 256), an l2-normalised VQ of 1024 x 12
(KARL: 4096 x 12) with dead-code restarts, encoder and decoder ViTs of width 128 and depth 4 (every step
runs both phases, so half the width of the FlexTok built-in keeps the CPU cost alike). Each step runs
KARL's two phases on the batch (estimate the error of a random budget, then learn to halt at it); the
loss is the sum of both phases' latent MSE and VQ losses and the halting BCE. KARL's second stage (pixel
L1, LPIPS and a GAN per budget) is left out: its networks cannot be downloaded. The frozen VAE encodes
the `--images` training images once (`--latent-cache` can point at flextok-shapes' folder to reuse its
cache: the same VAE, the same images).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.train.flextok_shapes import LatentCache, add_latent_arguments
from zoo.train.loop import cosine_config, load_to_continue, save_on_main, train
from zoo.train.vq_shapes import dead_code_restarts


def build_model(args):
    from tokenizers_visual.karl import KARLTokenizer
    from tokenizers_visual.latents import with_pretrained_vae

    return with_pretrained_vae(KARLTokenizer, args.vae, image_size=args.size, max_tokens=args.max_tokens,
                               token_counts=list(range(args.count_step, args.max_tokens + 1, args.count_step)),
                               codebook_size=args.codebook_size, dim=args.width, encoder_depth=args.depth,
                               decoder_depth=args.depth, head_dim=64)


def karl_loss(model, batch):
    losses = model.training_losses(batch["image"], batch["latents"])
    loss = losses["estimate"] + losses["learn"] + losses["halt"]
    return loss, {k: float(v) for k, v in losses.items()}


def parse(argv):
    p = argparse.ArgumentParser(prog="zoo train karl-shapes", description=__doc__.splitlines()[0])
    add_latent_arguments(p, steps=3000, lr=4e-4)
    p.add_argument("--latent-cache", default=None, help="folder of a latents-train-N cache to share (e.g. "
                                                        "flextok-shapes' --out: the same VAE), default --out")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--count-step", type=int, default=4, help="estimation budgets: count-step, 2 x count-step, ...")
    p.add_argument("--codebook-size", type=int, default=1024)
    p.add_argument("--width", type=int, default=128, help="a multiple of 64 (two phases a step: half FlexTok's width)")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--restart-every", type=int, default=250)
    p.add_argument("--init", default=None, help="a trained KARL (folder or built-in name) to fine-tune from; its "
                                                "architecture replaces the size arguments")
    return p.parse_args(argv)


def initial_model(args):
    """A fresh model from the size arguments, or the trained KARL that --init names."""
    if args.init is None:
        return build_model(args)
    from tokenizers_visual.karl import KARLTokenizer

    return load_to_continue(args.init, KARLTokenizer)


def main(argv=None) -> int:
    args = parse(argv)
    config = cosine_config(args)
    model = initial_model(args)
    cache = Path(args.latent_cache or args.out) / f"latents-train-{args.images}.safetensors"
    model = train(model, LatentCache(model, args.size, args.images, cache), karl_loss, config,
                  hooks=[dead_code_restarts(args.restart_every)])
    save_on_main(model, f"{args.out}/model")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
