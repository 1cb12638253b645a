"""Recipe `flextok-shapes`: FlexTok on Shapes, over the latents of a `vae-shapes` VAE.

    zoo train vae-shapes --out runs/vae-shapes --steps 2000
    zoo train flextok-shapes --out runs/flextok-shapes --vae runs/vae-shapes/model --steps 4000

The official architecture scaled down: 64x64 images -> 4 x 16 x 16 latents -> 8 x 8 = 64 patches of
2x2; 64 registers, one per patch as in the release (256 registers for 16 x 16 patches); FSQ levels
[8, 5, 5, 5] (1,000 codes, the FSQ paper's 2^10 setting) instead of the release's [8, 8, 8, 5, 5, 5]
(64,000): an AR model over a 64,000-word vocabulary spends most of its CPU time in the output layer;
encoder and decoder of width 192 (3 heads of 64) and depth 4. Training follows the paper's objective: rectified flow on the latents with logit-normal
times, nested dropout of the registers, 10% null condition for classifier-free guidance; the VAE is
frozen. The kept prefix length is drawn from powers of two (`--keep-sampling pow2`, one of the
official modes) so that the short prefixes, where a small model has the most to learn, get as many
steps as the long ones; REPA (a DINOv2 feature loss in the paper) is left out: no pretrained network
can be downloaded here.
"""

from __future__ import annotations

import argparse

import torch

from zoo.data.shapes import ShapesDataset
from zoo.flow.rectified import logit_normal_times
from zoo.train.loop import cosine_config, save_on_main, train


def build_model(args):
    from tokenizers_visual.flextok import FlexTok
    from tokenizers_visual.latents import with_pretrained_vae

    return with_pretrained_vae(FlexTok, args.vae, image_size=args.size, num_registers=args.registers,
                               fsq_levels=args.fsq_levels, encoder_dim=args.width, encoder_depth=args.depth,
                               decoder_dim=args.width, decoder_depth=args.depth, head_dim=64,
                               keep_k_sampling=args.keep_sampling, null_condition_prob=args.null_prob)


def flextok_loss(model, batch):
    images = batch["image"]
    with torch.no_grad():
        latents = model.encode_latents(images)
    t = logit_normal_times(latents.shape[0], device=latents.device)
    out = model(latents, t, torch.randn_like(latents))
    return out.loss, {"mse": out.loss.item()}


def parse(argv):
    p = argparse.ArgumentParser(prog="zoo train flextok-shapes", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (checkpoints, logs, model/)")
    p.add_argument("--vae", required=True, help="folder of the AutoencoderKL (zoo train vae-shapes ... /model)")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--size", type=int, default=64, help="image size in pixels")
    p.add_argument("--registers", type=int, default=64, help="1D tokens per image")
    p.add_argument("--fsq-levels", type=int, nargs="+", default=[8, 5, 5, 5], help="FSQ levels (official: 8 8 8 5 5 5)")
    p.add_argument("--width", type=int, default=192, help="encoder and decoder width (a multiple of 64)")
    p.add_argument("--depth", type=int, default=4, help="encoder and decoder depth")
    p.add_argument("--keep-sampling", default="pow2", choices=["uniform", "pow2"])
    p.add_argument("--null-prob", type=float, default=0.1, help="probability of the null condition (CFG)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    config = cosine_config(args)
    model = train(build_model(args), ShapesDataset("train", size=args.size), flextok_loss, config)
    save_on_main(model, f"{args.out}/model")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
