"""Recipe `vat-primitives`: the VAT tokenizer on Primitives shapes.

    zoo train vat-primitives --out runs/vat-primitives --steps 4000
    zoo train vat-primitives --out runs/vat-dec --init vat-primitives --decoder-only --steps 3000

The shapes are drawn once into `<cache-dir>/primitives-train-N.safetensors` (2,048 surface points with
normals and 4,096 occupancy queries, half uniform in [-1, 1]^3 and half within about 0.02 of the
surface, per shape); each step reads `--points` random points (256) and `--queries` random queries
(1,024) of each shape: the encoder attends over latents and points together, so the point count sets
its cost.
Loss: occupancy BCE + `--kl-weight` x KL + the multi-scale quantiser's codebook and commitment terms
(commitment against the final reconstruction, see `MultiScaleResidualVQ`), dead codes restarted on
recent residuals. Sizes (VAT gives none for its released scale): 64 latents of 16 dims in 7 scales
(1, 2, 4, ..., 64: 127 tokens), one shared codebook of 1,024 codes (10 bits: 159 bytes a shape), width
128 with 2 encoder and 4 decoder layers of 4 heads, latent queries on farthest surface points,
triplanes of 32 x 32 x 32 channels from 8 x 8 tokens per plane.

Schedule: the first third of the steps (`--vae-steps`) trains a plain VAE (decoded from the continuous
latents, the codebook following them without pulling on them), then half of the shapes of every batch
are decoded through the quantiser and half from the continuous latents (`--no-quant-rate`, Mimi's
trick). Measured on the way here (4,000 shapes, 2-core CPU): quantising from step 0, with VAR's every-scale
commitment or with last-scale commitment and point queries, the 64 latents of a shape collapsed to about
one vector (std 0.03 across a shape's tokens) and the volume IoU on training shapes stayed at the mean
shape's (0.34 after 1,000 steps, training BCE 0.43). With the VAE phase: IoU 0.53 after 1,750 steps.

`--decoder-only` goes on training a trained VAT's decoder side alone (latent projection, decoder
transformer, triplane head, occupancy MLP) on the quantised latents it reads at inference: the encoder,
the codebook and the quantiser's phi convolutions stay frozen and no dead code is restarted, so the
token ids, and next-scale AR models trained on them, stay valid (as Stable Diffusion's VAE decoder was
fine-tuned alone).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.data.primitives import CachedPrimitives, cache_primitives
from zoo.train.loop import (
    add_mixed_precision,
    cosine_config,
    load_to_continue,
    resumed_step,
    save_on_main,
    train,
    train_only,
)

DECODER_SIDE = ("from_latents.", "latent_posemb", "triplane_tokens", "decoder.", "to_planes.", "occupancy_mlp.")


def build_model(args):
    from tokenizers_visual.vat import VAT

    return VAT(num_latents=args.latents, latent_dim=args.latent_dim, codebook_size=args.codebook_size,
               width=args.width, encoder_depth=args.encoder_depth, decoder_depth=args.decoder_depth,
               head_dim=args.head_dim, point_queries=args.point_queries, commitment=args.commitment,
               triplane_resolution=32, triplane_patch=4, triplane_channels=32, mlp_hidden=128)


def make_loss(kl_weight: float, no_quantization_rate: float = 0.0, vae_steps: int = 0, start_step: int = 0,
              prefix_rate: float = 0.0):
    """The loss, and a hook that tells it the step: for the first `vae_steps` steps the model trains as a
    plain VAE (decoded from the continuous latents, no commitment pull; the codebook follows the latents),
    then with quantisation, a `prefix_rate` share of the quantised shapes decoded from a random prefix of
    the scales. `start_step` is the step a resumed run starts from."""
    phase = {"step": start_step}

    def loss(model, batch):
        warm_up = phase["step"] < vae_steps
        out = model(batch["points"], batch["normals"], batch["queries"], batch["occupancy"],
                    no_quantization_rate=1.0 if warm_up else no_quantization_rate, commit=not warm_up,
                    prefix_rate=prefix_rate)
        total = out["bce"] + kl_weight * out["kl"] + out["vq"]
        return total, {"bce": out["bce"].item(), "kl": out["kl"].item(), "vq": out["vq"].item(),
                       "residual_last": out["residuals"][-1].item()}

    def track_step(step, model, accelerator, log):
        phase["step"] = step
    return loss, track_step


def dead_code_restarts(every: int):
    def hook(step, model, accelerator, log):
        if step % every:
            return
        moved = 0
        for codebook in accelerator.unwrap_model(model).quantizer.codebooks:
            if codebook.recent_inputs is not None:
                moved += codebook.restart_dead_codes(codebook.recent_inputs)
        log(f"step {step}: {moved} dead codes restarted")
    return hook


def parse(argv):
    p = argparse.ArgumentParser(prog="zoo train vat-primitives", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (checkpoints, logs, model/)")
    p.add_argument("--cache-dir", default=None, help="where the drawn shapes are cached (default: --out)")
    p.add_argument("--shapes", type=int, default=4000, help="training shapes to draw")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--points", type=int, default=256, help="surface points read per shape and step")
    p.add_argument("--queries", type=int, default=1024, help="occupancy queries per shape and step")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--latents", type=int, default=64)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--codebook-size", type=int, default=1024)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--encoder-depth", type=int, default=2)
    p.add_argument("--decoder-depth", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=32, help="attention head width (128 / 32 = 4 heads)")
    p.add_argument("--point-queries", action=argparse.BooleanOptionalAction, default=True,
                   help="latent queries = learned tokens + embeddings of farthest-point-sampled surface points")
    p.add_argument("--commitment", choices=["last_scale", "every_scale"], default="last_scale",
                   help="quantiser commitment against the final f_hat only, or after every scale (VAR)")
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--no-quant-rate", type=float, default=None,
                   help="share of shapes decoded from the continuous latents in training (default: Mimi's 0.5; "
                        "0 with --decoder-only, which trains on the quantised latents the decoder reads)")
    p.add_argument("--prefix-rate", type=float, default=0.0,
                   help="share of quantised shapes decoded from a random prefix of the scales, so that small "
                        "token budgets decode well too (0: always all scales, as versions 1-3)")
    p.add_argument("--vae-steps", type=int, default=None,
                   help="first steps trained as a plain VAE, without quantisation (default: a third of --steps)")
    p.add_argument("--restart-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    add_mixed_precision(p)
    p.add_argument("--init", default=None, help="a trained VAT (folder or built-in name) to go on training; its "
                                                "architecture replaces the size arguments and --vae-steps defaults to 0")
    p.add_argument("--decoder-only", action="store_true",
                   help="with --init: train the decoder side alone; the encoder, codebook and quantiser stay frozen, "
                        "so the token ids, and AR models trained on them, stay valid")
    args = p.parse_args(argv)
    if args.decoder_only:
        if args.init is None:
            p.error("--decoder-only goes on training a VAT's decoder: pass --init (e.g. vat-primitives).")
        if args.no_quant_rate or args.vae_steps:
            p.error("--decoder-only trains on the frozen quantiser's latents: drop --no-quant-rate and --vae-steps.")
    if args.no_quant_rate is None:
        args.no_quant_rate = 0.0 if args.decoder_only else 0.5
    return args


def initial_model(args):
    """A fresh model from the size arguments, or the trained VAT that --init names (in float32), with all
    but its decoder side frozen for --decoder-only."""
    if args.init is None:
        return build_model(args)
    from tokenizers_visual.vat import VAT

    model = load_to_continue(args.init, VAT)
    return train_only(model, DECODER_SIDE) if args.decoder_only else model


def main(argv=None) -> int:
    args = parse(argv)
    cache = Path(args.cache_dir or args.out) / f"primitives-train-{args.shapes}.safetensors"
    if not cache.is_file():
        cache_primitives(cache, "train", args.shapes)
    config = cosine_config(args)
    data = CachedPrimitives(cache, num_points=args.points, num_queries=args.queries, seed=args.seed)
    if args.vae_steps is not None:
        vae_steps = args.vae_steps
    else:
        vae_steps = 0 if args.init else args.steps // 3
    loss, track_step = make_loss(args.kl_weight, args.no_quant_rate, vae_steps, start_step=resumed_step(args.out),
                                 prefix_rate=args.prefix_rate)
    hooks = [track_step] if args.decoder_only else [track_step, dead_code_restarts(args.restart_every)]
    model = train(initial_model(args), data, loss, config, hooks=hooks)
    save_on_main(model, f"{args.out}/model")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
