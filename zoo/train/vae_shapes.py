"""Recipe `vae-shapes`: a small diffusers `AutoencoderKL` on Shapes, the latent space of zoo's FlexTok.

    zoo train vae-shapes --out runs/vae-shapes --steps 2000

FlexTok's official tokenizers sit on a 16-channel f8 SDXL-layout VAE trained on ImageNet; none can be
downloaded here, so zoo trains the same diffusers class, scaled down: 64x64 Shapes -> 4 x 16 x 16
latents (f4), block_out_channels (32, 64, 128), one ResNet layer per block, GroupNorm with 8 groups.

Loss: L1 + L2 reconstruction + `--kl-weight` x KL (Stable Diffusion's VAE uses 1e-6 with LPIPS and a
GAN; neither pretrained network can be downloaded, and a GAN does not fit a CPU budget). After training
the recipe sets `scaling_factor` = 1 / std of the latent means over 1,024 training images, as Stable
Diffusion does, so that scaled latents have unit variance for the flow decoder.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from zoo.data.shapes import ShapesDataset
from zoo.train.loop import add_mixed_precision, cosine_config, save_on_main, train


def vae_config(width: int, latent_channels: int, levels: int, size: int, norm_groups: int) -> dict:
    channels = [width * 2 ** i for i in range(levels)]
    return {"in_channels": 3, "out_channels": 3, "latent_channels": latent_channels, "layers_per_block": 1,
            "norm_num_groups": norm_groups, "block_out_channels": channels,
            "down_block_types": ["DownEncoderBlock2D"] * levels, "up_block_types": ["UpDecoderBlock2D"] * levels,
            "sample_size": size, "scaling_factor": 1.0}


def make_loss(kl_weight: float):
    def loss(model, batch):
        images = batch["image"]
        posterior = model.encode(images).latent_dist
        recon = model.decode(posterior.sample()).sample
        l1, l2, kl = F.l1_loss(recon, images), F.mse_loss(recon, images), posterior.kl().mean()
        return l1 + l2 + kl_weight * kl, {"l1": l1.item(), "l2": l2.item(), "kl": kl.item()}
    return loss


@torch.no_grad()
def latent_scaling_factor(vae, size: int, num_images: int = 1024, batch_size: int = 64) -> float:
    """1 / std of the posterior means over `num_images` training images."""
    data = ShapesDataset("train", size=size, length=num_images)
    means = [vae.encode(torch.stack([data[j]["image"] for j in range(i, min(i + batch_size, num_images))]))
             .latent_dist.mode() for i in range(0, num_images, batch_size)]
    return float(1.0 / torch.cat(means).std())


def parse(argv):
    p = argparse.ArgumentParser(prog="zoo train vae-shapes", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (checkpoints, logs, model/)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=16, help="per process")
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--size", type=int, default=64, help="image size in pixels")
    p.add_argument("--width", type=int, default=32, help="channels of the first level (doubling per level)")
    p.add_argument("--levels", type=int, default=3, help="resolution levels: downsampling 2 ** (levels - 1)")
    p.add_argument("--latent-channels", type=int, default=4)
    p.add_argument("--norm-groups", type=int, default=8)
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    add_mixed_precision(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    from diffusers import AutoencoderKL

    args = parse(argv)
    if args.width % args.norm_groups:
        raise SystemExit(f"--width {args.width} must be a multiple of --norm-groups {args.norm_groups}.")
    config = cosine_config(args, warmup=200)
    vae = AutoencoderKL(**vae_config(args.width, args.latent_channels, args.levels, args.size, args.norm_groups))
    vae = train(vae, ShapesDataset("train", size=args.size), make_loss(args.kl_weight), config)
    vae.register_to_config(scaling_factor=latent_scaling_factor(vae, args.size))
    save_on_main(vae, f"{args.out}/model")
    print(f"latent scaling factor {vae.config.scaling_factor:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
