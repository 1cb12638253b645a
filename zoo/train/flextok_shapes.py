"""Recipe `flextok-shapes`: FlexTok on Shapes, over the latents of a `vae-shapes` VAE.

    zoo train vae-shapes --out runs/vae-shapes --steps 2000
    zoo train flextok-shapes --out runs/flextok-shapes --vae runs/vae-shapes/model --steps 4000
    zoo train flextok-shapes --out runs/flextok-dec --init flextok-shapes --decoder-only --steps 3000
    zoo train flextok-shapes --out runs/flextok-v4 --init flextok-shapes --steps 4000 --lr 2e-4 --time-mean 1.0

The official architecture scaled down: 64x64 images -> 4 x 16 x 16 latents -> 8 x 8 = 64 patches of 2x2;
64 registers, one per patch as in the release (256 registers for 16 x 16 patches); FSQ levels [8, 5, 5,
5] (1,000 codes, the FSQ paper's 2^10 setting) instead of the release's [8, 8, 8, 5, 5, 5] (64,000): an
AR model over a 64,000-word vocabulary spends most of its CPU time in the output layer; encoder and
decoder of width 192 (3 heads of 64) and depth 4. Training follows the paper's objective: rectified flow
on the latents with logit-normal times, nested dropout of the registers, 10% null condition for
classifier-free guidance; the VAE is frozen. The kept prefix length is drawn from powers of two
(`--keep-sampling pow2`, one of the official modes) so that the short prefixes, where a small model has
the most to learn, get as many steps as the long ones. `--time-mean` shifts the logit-normal times
towards high noise (versions 2 and 3 of the built-in: 1.0), where a 64 px image can no longer be read through
the noise and the decoder needs the tokens. REPA, the paper's alignment of the decoder's patch tokens
with DINOv2 features of the clean image, needs a pretrained network, and none can be downloaded here:
`--repa-weight` turns it on with the built-in `shapes-classifier`'s last convolutional map as the
teacher (`zoo.flow.repa`; the projector is dropped when the model is saved). The frozen VAE encodes the
`--images` training images once, into `<out>/latents-train-N.safetensors`. `--init` goes on from a
trained FlexTok; `--decoder-only` then trains its flow decoder alone (encoder frozen), so the token ids
stay those of the `--init` model and AR models trained over them (`flextok-ar-shapes`) stay valid.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import torch
from torch import nn

from zoo.data.shapes import ShapesDataset
from zoo.flow.rectified import logit_normal_times
from zoo.flow.repa import REPAProjector, features_on_grid, repa_loss
from zoo.train.loop import add_mixed_precision, cosine_config, load_to_continue, save_on_main, train, train_only


def build_model(args):
    from tokenizers_visual.flextok import FlexTok
    from tokenizers_visual.latents import with_pretrained_vae

    if args.init is not None:
        model = load_to_continue(args.init, FlexTok, wanted={"image_size": args.size},
                                 advice="pass --size to match it.")
        return train_only(model, ("decoder.",)) if args.decoder_only else model
    if args.decoder_only:
        raise SystemExit("--decoder-only goes on training a FlexTok's decoder: pass --init (e.g. flextok-shapes).")
    return with_pretrained_vae(FlexTok, args.vae, image_size=args.size, num_registers=args.registers,
                               fsq_levels=args.fsq_levels, encoder_dim=args.width, encoder_depth=args.depth,
                               decoder_dim=args.width, decoder_depth=args.depth, head_dim=64,
                               keep_k_sampling=args.keep_sampling, null_condition_prob=args.null_prob)


class LatentCache(torch.utils.data.Dataset):
    """Shapes training images with their VAE latents, encoded once (the VAE is frozen, and encoding every
    batch again costs a quarter of a FlexTok step on a CPU): items {"image": [3, S, S] in [-1, 1],
    "latents": [C, h, w]}, stored in `path` (images uint8, latents float16)."""

    def __init__(self, model, size: int, count: int, path: Path, batch_size: int = 64):
        from safetensors.torch import load_file, save_file

        from zoo.utils.io import atomic_path

        fingerprint = f"{sum(float(p.double().sum()) for p in model.vae.parameters()):.9e}"  # which VAE
        if not path.is_file():
            data, images, latents = ShapesDataset("train", size=size, length=count), [], []
            with torch.no_grad():
                for start in range(0, count, batch_size):
                    batch = torch.stack([data[i]["image"] for i in range(start, min(start + batch_size, count))])
                    images.append(((batch + 1) * 127.5).round().to(torch.uint8))
                    latents.append(model.encode_latents(batch).half())
            with atomic_path(path) as tmp:
                tensors = {"images": torch.cat(images).contiguous(), "latents": torch.cat(latents).contiguous()}
                save_file(tensors, tmp, metadata={"size": str(size), "count": str(count), "vae": fingerprint})
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            if (f.metadata() or {}).get("vae") != fingerprint:
                raise ValueError(f"{path} was encoded with another VAE; delete it (or pass another folder) to encode "
                                 "the images with this one.")
        tensors = load_file(path)
        self.images, self.latents = tensors["images"], tensors["latents"]
        if len(self.images) != count or self.images.shape[-1] != size:
            raise ValueError(f"{path} holds {len(self.images)} images of {self.images.shape[-1]} px, not {count} of "
                             f"{size} px; delete it to encode again.")

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"image": self.images[index].float() / 127.5 - 1, "latents": self.latents[index].float()}


def flextok_loss(model, batch, time_mean: float = 0.0):
    latents = batch["latents"]
    t = logit_normal_times(latents.shape[0], mean=time_mean, device=latents.device)
    out = model(latents, t, torch.randn_like(latents))
    return out.loss, {"mse": out.loss.item()}


class FlexTokWithREPA(nn.Module):
    """Training wrapper: a FlexTok plus REPA's projector on its decoder's patch tokens after block `depth`,
    pulled towards a frozen `teacher`'s `feature_map` of the clean image (`zoo.flow.repa`). The loss is the
    flow-matching MSE + `weight` x the alignment loss; only `flextok` is saved. The projector is 512 wide
    (REPA's is 2048 for SiT-XL's 1152-wide blocks; the built-in decoder is 192 wide)."""

    def __init__(self, flextok, teacher, depth: int, weight: float, projector_dim: int = 512):
        super().__init__()
        blocks = len(flextok.decoder.blocks)
        if not 1 <= depth <= blocks:
            raise SystemExit(f"--repa-depth {depth} is not a decoder block of this FlexTok; pass 1..{blocks}.")
        if not hasattr(teacher, "feature_map"):
            raise SystemExit(f"the REPA teacher is a {type(teacher).__name__}, which has no feature_map(images); "
                             "pass a ShapesClassifier (e.g. the built-in shapes-classifier).")
        self.flextok, self.teacher, self.depth, self.weight = flextok, teacher.requires_grad_(False), depth, weight
        size = flextok.config.image_size
        with torch.no_grad():
            channels = teacher.eval().feature_map(torch.zeros(1, 3, size, size)).shape[1]
        self.projector = REPAProjector(flextok.config.decoder_dim, channels, hidden_dim=projector_dim)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen, BatchNorm statistics included
        return self

    def forward(self, latents, images, t, noise):
        """-> (loss, flow-matching MSE, alignment loss)."""
        captured = []
        hook = self.flextok.decoder.blocks[self.depth - 1].register_forward_hook(
            lambda module, inputs, output: captured.append(output))
        try:
            out = self.flextok(latents, t, noise)
        finally:
            hook.remove()
        grid = self.flextok.grid
        with torch.no_grad():
            target = features_on_grid(self.teacher.feature_map(images), grid)
        patches = captured[0][:, : grid[0] * grid[1]]  # [B, N, D]; the registers follow
        align = repa_loss(self.projector(patches), target)
        return out.loss + self.weight * align, out.loss, align


def flextok_repa_loss(model, batch, time_mean: float = 0.0):
    latents = batch["latents"]
    t = logit_normal_times(latents.shape[0], mean=time_mean, device=latents.device)
    loss, mse, align = model(latents, batch["image"], t, torch.randn_like(latents))
    return loss, {"mse": mse.item(), "repa": align.item()}


def add_latent_arguments(p: argparse.ArgumentParser, steps: int, lr: float, vae_required: bool = True):
    """The arguments every recipe over the `vae-shapes` latents shares (FlexTok, KARL)."""
    p.add_argument("--out", required=True, help="output folder (checkpoints, logs, model/)")
    p.add_argument("--vae", required=vae_required, help="the AutoencoderKL: built-in vae-shapes, a folder (zoo "
                   "train vae-shapes ... /model) or a Hub id")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--size", type=int, default=64, help="image size in pixels")
    p.add_argument("--images", type=int, default=20000, help="training images (their latents are encoded once)")
    p.add_argument("--seed", type=int, default=0)
    add_mixed_precision(p)


def parse(argv):
    p = argparse.ArgumentParser(prog="zoo train flextok-shapes", description=__doc__.splitlines()[0])
    add_latent_arguments(p, steps=4000, lr=5e-4, vae_required=False)
    p.add_argument("--registers", type=int, default=64, help="1D tokens per image")
    p.add_argument("--fsq-levels", type=int, nargs="+", default=[8, 5, 5, 5], help="FSQ levels (official: 8 8 8 5 5 5)")
    p.add_argument("--width", type=int, default=192, help="encoder and decoder width (a multiple of 64)")
    p.add_argument("--depth", type=int, default=4, help="encoder and decoder depth")
    p.add_argument("--keep-sampling", default="pow2", choices=["uniform", "pow2"])
    p.add_argument("--null-prob", type=float, default=0.1, help="probability of the null condition (CFG)")
    p.add_argument("--init", help="a trained FlexTok to go on from (built-in name or folder), instead of --vae; "
                                  "its architecture wins over the flags above")
    p.add_argument("--decoder-only", action="store_true",
                   help="with --init: train the flow decoder alone, keeping the encoder and so the token ids")
    p.add_argument("--time-mean", type=float, default=0.0, help="mean of the logit-normal training times (FlexTok: "
                   "0); above 0 trains more at high noise, where the decoder needs the tokens")
    p.add_argument("--repa-weight", type=float, default=0.0,
                   help="weight of REPA's alignment loss (REPA's default: 0.5); 0 turns REPA off")
    p.add_argument("--repa-teacher", default="shapes-classifier",
                   help="the frozen network whose feature_map the decoder aligns with (built-in name or folder)")
    p.add_argument("--repa-depth", type=int, default=2, help="the decoder block whose patch tokens are aligned "
                   "(1-based; REPA: about a third of the depth)")
    args = p.parse_args(argv)
    if (args.vae is None) == (args.init is None):
        p.error("pass --vae for a new FlexTok, or --init to go on from a trained one (which holds its VAE).")
    if args.repa_weight < 0:
        p.error(f"--repa-weight must be >= 0 (0 turns REPA off), got {args.repa_weight}.")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    config = cosine_config(args)
    model = build_model(args)
    data = LatentCache(model, args.size, args.images, Path(args.out) / f"latents-train-{args.images}.safetensors")
    if args.repa_weight > 0:
        import zoo

        repa = FlexTokWithREPA(model, zoo.load(args.repa_teacher).float(), args.repa_depth, args.repa_weight)
        model = train(repa, data, partial(flextok_repa_loss, time_mean=args.time_mean), config).flextok
    else:
        model = train(model, data, partial(flextok_loss, time_mean=args.time_mean), config)
    save_on_main(model, f"{args.out}/model")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
