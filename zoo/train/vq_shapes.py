"""Recipe `vq-shapes`: LlamaGen's VQ tokenizer trained on Shapes, 64x64 images -> 16x16 tokens.

    zoo train vq-shapes --out runs/vq-shapes --steps 5000
    accelerate launch --multi_gpu --num_processes 2 -m zoo train vq-shapes --out runs/vq --steps 10

Cost on the 2-core development CPU (measured): width 32 (1.1M parameters), batch 16 of 64x64 images,
about 1.4 s a step; width 64 (4.2M), 3.5 s a step.

Losses: L1 + L2 pixel reconstruction, codebook and commitment (beta 0.25), as LlamaGen minus its
perceptual (LPIPS/VGG) and adversarial terms: their pretrained networks cannot be downloaded here,
and a GAN does not fit a CPU budget. Dead codes (unused since the last restart) restart on random
recent encoder outputs every `--restart-every` steps, identically on every process.
"""

from __future__ import annotations

import argparse

import torch.nn.functional as F

from zoo.data.shapes import ShapesDataset
from zoo.train.loop import add_mixed_precision, cosine_config, save_on_main, train


def build_model(args):
    from tokenizers_visual import VQModel

    return VQModel(codebook_size=args.codebook_size, codebook_dim=8, codebook_l2_norm=True, encoder_ch=args.width,
                   decoder_ch=args.width, encoder_ch_mult=[1, 2, 2], decoder_ch_mult=[1, 2, 2], num_res_blocks=1,
                   z_channels=64, attention_registers=args.registers, norm_groups=args.norm_groups)


def vq_loss(model, batch):
    images = batch["image"]
    recon, _, losses = model(images)
    l1, l2 = F.l1_loss(recon, images), F.mse_loss(recon, images)
    loss = l1 + l2 + losses["codebook"] + losses["commitment"]
    return loss, {"l1": l1.item(), "l2": l2.item(), "commitment": losses["commitment"].item()}


def dead_code_restarts(every: int):
    def hook(step, model, accelerator, log):
        if step % every:
            return
        quantizer = accelerator.unwrap_model(model).quantizer
        usage = accelerator.reduce(quantizer.usage.clone(), reduction="sum")
        stats = quantizer.usage_stats(usage)
        moved = quantizer.restart_dead_codes(quantizer.recent_inputs, usage)
        if accelerator.num_processes > 1:  # every process keeps rank 0's codebook
            from accelerate.utils import broadcast

            broadcast(quantizer.embedding.weight.data, from_process=0)
        log(f"step {step}: codebook usage {stats['codebook_usage']:.3f}, perplexity {stats['perplexity']:.0f}, "
            f"{moved} dead codes restarted")
    return hook


def parse(argv):
    p = argparse.ArgumentParser(prog="zoo train vq-shapes", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (checkpoints, logs, model/)")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=16, help="per process")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--size", type=int, default=64, help="image size (tokens: size / 4 per side)")
    p.add_argument("--codebook-size", type=int, default=4096)
    p.add_argument("--width", type=int, default=32, help="encoder/decoder base channels (a multiple of 32)")
    p.add_argument("--restart-every", type=int, default=250)
    p.add_argument("--registers", type=int, default=0,
                   help="learned key/value registers per attention block (0 = LlamaGen)")
    p.add_argument("--norm-groups", type=int, default=8,
                   help="GroupNorm groups. LlamaGen uses 32, but at width 32 that is one channel per group (instance "
                        "norm), with which the decoder grows a speck beside every shape; with 8 the 5,000-step vq-shapes has none")
    p.add_argument("--ema", type=float, default=None, help="EMA decay of the weights (off by default)")
    add_mixed_precision(p)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    config = cosine_config(args, warmup=500, ema_decay=args.ema)
    model = build_model(args)
    model = train(model, ShapesDataset("train", size=args.size), vq_loss, config,
                  hooks=[dead_code_restarts(args.restart_every)])
    save_on_main(model, f"{args.out}/model")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
