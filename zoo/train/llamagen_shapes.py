"""Recipe `llamagen-shapes`: LlamaGen's class-conditional AR model over a tokenizer's token grids.

    zoo tokenize vq-shapes --num 24000 --out runs/shapes-train.tokens.safetensors
    zoo train llamagen-shapes --tokens runs/shapes-train.tokens.safetensors --vq vq-shapes --out runs/llamagen
    zoo train llamagen-shapes ... --init llamagen-shapes --mixed-precision bf16   # go on from the built-in

LlamaGen's GPT (pre-RMSNorm, SwiGLU, 2D RoPE, a class token with 10% class dropout for CFG, dropout
0.1, zero-initialised head), sized down; next-token cross-entropy over all grid tokens, AdamW
(beta 0.9 / 0.95, weight decay 0.05, gradient clipping 1.0) as train_c2i.py. The result is saved
as an `ARImagePipeline` (the transformer, the tokenizer and the class names) in `<out>/pipeline`.
"""

from __future__ import annotations

import argparse

import torch.nn.functional as F

from zoo.ar import ARTransformer
from zoo.data.tokens import TokenDataset
from zoo.train.loop import TrainConfig, add_mixed_precision, is_main_process, load_to_continue, train


def next_token_loss(model, batch):
    ids = batch["ids"]  # [B, T]
    logits = model(ids[:, :-1], class_labels=batch["label"])  # [B, T, V]: position t predicts token t
    loss = F.cross_entropy(logits.flatten(0, 1), ids.flatten())
    return loss, {"accuracy": (logits.argmax(-1) == ids).float().mean().item()}


def num_classes(data: TokenDataset) -> int:
    return len(data.metadata.get("class_names") or [None] * (int(data.labels.max()) + 1))


def build_model(data: TokenDataset, args, vocab_size: int, **overrides) -> ARTransformer:
    """LlamaGen's GPT layout at the size given by --hidden/--layers/--heads (overrides win)."""
    config = dict(
        vocab_size=vocab_size, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
        num_classes=num_classes(data), num_prefix_tokens=1, grid_size=data.grid, position_embedding="rope_2d",
        class_dropout_prob=0.1, token_dropout=args.dropout, resid_dropout=args.dropout, ffn_dropout=args.dropout,
        zero_init_head=True)
    return ARTransformer(**{**config, **overrides})


def initial_model(data: TokenDataset, args, vocab_size: int) -> ARTransformer:
    """A fresh model from the size arguments, or the trained one --init names, checked against the tokens."""
    if args.init is None:
        return build_model(data, args, vocab_size)
    return load_to_continue(
        args.init, ARTransformer, component="transformer",
        wanted={"vocab_size": vocab_size, "num_classes": num_classes(data), "grid_size": data.grid},
        against="these tokens (its value, theirs)",
        advice="pass tokens made by the tokenizer it was trained on, with the same classes.")


def add_arguments(p: argparse.ArgumentParser, default_steps: int = 20000):
    """The arguments every recipe over token files shares: data, size and optimisation."""
    p.add_argument("--tokens", required=True, help="token file from `zoo tokenize`")
    p.add_argument("--vq", required=True, help="the tokenizer that made the tokens (name, folder or Hub id)")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=default_steps)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--lr-schedule", default="cosine", choices=["constant", "cosine"])
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: 10%% of --steps, at most 1000)")
    p.add_argument("--dropout", type=float, default=0.1, help="token/residual/FFN dropout (class dropout stays 0.1)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--ema", type=float, default=None)
    add_mixed_precision(p)
    p.add_argument("--seed", type=int, default=0)


def train_config(args, output_dir: str, steps: int) -> TrainConfig:
    return TrainConfig(output_dir=output_dir, max_steps=steps, batch_size=args.batch_size, lr=args.lr,
                       weight_decay=0.05, lr_schedule=args.lr_schedule, ema_decay=args.ema,
                       warmup_steps=min(1000, steps // 10) if args.warmup is None else args.warmup,
                       mixed_precision=args.mixed_precision, log_every=min(50, steps),
                       checkpoint_every=min(250, steps), seed=args.seed, extra=vars(args))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="zoo train llamagen-shapes", description=__doc__.splitlines()[0])
    add_arguments(p)
    p.add_argument("--init", default=None, help="a trained ARImagePipeline or ARTransformer (folder or built-in "
                   "name) to go on training; the size arguments are then ignored")
    args = p.parse_args(argv)

    import zoo
    from pipelines import ARImagePipeline

    vq = zoo.load(args.vq)
    data = TokenDataset(args.tokens)
    model = train(initial_model(data, args, vq.config.codebook_size), data, next_token_loss,
                  train_config(args, args.out, args.steps))
    if is_main_process():
        pipe = ARImagePipeline(transformer=model, vqvae=vq, class_names=data.metadata.get("class_names"))
        pipe.save_pretrained(f"{args.out}/pipeline")
        print(f"saved {args.out}/pipeline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
