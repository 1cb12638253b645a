"""Training speed of zoo's loop on this machine: float32 against bf16 autocast, same model, same batches.

    python benchmarks/train_step.py [--steps 40] [--batch-size 32] [--quick]

The model is `llamagen-shapes`' transformer layout (vocab 4096, 16x16 grid, 6 layers, width 256, 8 heads,
7.2M parameters) trained by `zoo.train.loop.train` (accelerate, AdamW, gradient clipping, EMA off) on real
`vq-shapes` token grids of Shapes training images, from the same initial weights and the same batches in
both precisions. bf16 autocast (`--mixed-precision bf16` of every recipe) runs the matrix products in
bfloat16 while the weights, the optimiser and the loss stay float32. On CPUs with AVX512-BF16 (AMD Zen 4,
Intel Cooper Lake and later) oneDNN has bf16 kernels; elsewhere bf16 can be slower than float32, so this
benchmark is what tells. Speed is the median steps/s of the logged windows after the first (the first
holds start-up); the loss is the mean of the last window, to check that bf16 learns like float32.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import claim, machine_description, report, timed_training, write_results


def shapes_tokens(vq, n: int, path: Path):
    """A token file of the first n Shapes training images at 64 px, as `zoo tokenize vq-shapes` writes it,
    read back as the recipe's dataset."""
    from zoo.data.tokens import TokenDataset, save_tokens, shapes_images, tokenize

    image_at, labels, class_names = shapes_images("train", n, 64)
    save_tokens(path, tokenize(vq.eval(), image_at, n, progress=False), labels, class_names=class_names)
    return TokenDataset(path)


def timed_run(model, data, precision: str, args, folder: Path) -> dict:
    from zoo.train.llamagen_shapes import next_token_loss
    from zoo.train.loop import TrainConfig

    config = TrainConfig(output_dir=str(folder), max_steps=args.steps, batch_size=args.batch_size, lr=1e-3,
                         weight_decay=0.05, warmup_steps=5, mixed_precision=precision, log_every=args.log_every,
                         checkpoint_every=10**9, seed=0)
    timing = timed_training(model, data, next_token_loss, config)
    return {**timing, "sequences_per_s": timing["steps_per_s"] * args.batch_size}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vq", default="vq-shapes", help="the tokenizer whose token grids are trained on")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--sequences", type=int, default=640, help="Shapes training images tokenized for the runs")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="a few steps, results to train_step.quick.json")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.log_every, args.sequences = 4, 2, min(args.sequences, 2 * args.batch_size)
    if args.steps < args.log_every or args.sequences < args.batch_size:
        raise SystemExit("pass --steps >= --log-every and --sequences >= --batch-size.")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    import zoo
    from zoo.train.llamagen_shapes import build_model

    vq = zoo.load(args.vq)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = shapes_tokens(vq, args.sequences, Path(tmp) / "tokens.safetensors")
        # the recipe's model at the size asked for, without dropout (as the built-in was trained)
        model = build_model(data, argparse.Namespace(hidden=args.hidden, layers=args.layers, heads=args.heads,
                                                     dropout=0.0), vq.config.codebook_size)
        for precision in ("no", "bf16"):
            timing = timed_run(model, data, precision, args, Path(tmp) / precision)
            rows.append({"system": "float32" if precision == "no" else "bf16 autocast",
                         "mixed_precision": precision, "batch": args.batch_size, **timing})
    fp32, bf16 = rows
    speedup = bf16["steps_per_s"] / fp32["steps_per_s"]
    bf16["speedup"], fp32["speedup"] = speedup, 1.0
    loss_gap = abs(bf16["final_loss"] - fp32["final_loss"]) / fp32["final_loss"]
    claims = [
        claim("bf16 autocast trains at least 1.5x faster than float32 on this CPU", speedup >= 1.5,
              f"{speedup:.2f}x ({bf16['s_per_step']:.2f} vs {fp32['s_per_step']:.2f} s per step of "
              f"{args.batch_size} sequences)"),
        claim(f"bf16 learns like float32 (loss after {args.steps} steps within 2%)", loss_gap <= 0.02,
              f"{bf16['final_loss']:.4f} vs {fp32['final_loss']:.4f} ({100 * loss_gap:.1f}%)"),
    ]
    grid = "x".join(map(str, data.grid))
    notes = (f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M-parameter `llamagen-shapes` layout, "
             f"{args.steps} steps of {args.batch_size} `{args.vq}` token grids ({grid}) per precision, "
             "same initial weights and batches; steps/s: median of the logged windows after the first.")
    command = "python benchmarks/train_step.py " + " ".join(sys.argv[1:] if argv is None else argv)
    path = write_results("train_step", command.strip(), machine_description(2), rows, claims,
                         ["system", "batch", "steps_per_s", "s_per_step", "sequences_per_s", "speedup", "final_loss"],
                         quick=args.quick, notes=notes)
    report(rows, claims, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
