"""Recipe `dd-shapes`: distil an AR image pipeline into a one/two-step generator (Distilled Decoding, DD1).

    zoo train dd-shapes --teacher llamagen-shapes --out runs/dd --pairs 20000 --guidance 2.0

1. (noise, tokens) pairs: the teacher samples through the flow map (`zoo.flow`), so each token
   sequence is a deterministic function of its noise and distributed as the teacher's samples
   (`<out>/pairs`, resumable, split across processes under accelerate).
2. The student (`DDTransformer.from_teacher`) learns noise -> tokens for t in {0, t2}: the input is
   [codewords of the first t tokens | noise from t on]. Loss split at `--split`: cross-entropy of the
   logits head before it, mean squared error of the continuous head against the codeword after it.
   The official code uses LPIPS on decoded images for the continuous part; no LPIPS network can be
   downloaded here, so the code-space MSE stands in (see the model card).
`--naive` trains the naive one-step baseline on the same pairs: the noise is withheld (zero input),
so the model can only predict every token at once from the class.
The result is a `DistilledPipeline` in `<out>/pipeline`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.train.loop import TrainConfig, add_mixed_precision, is_main_process, train


def dd_loss(codebook: torch.Tensor, split: int, second_step: int, naive: bool):
    def loss_fn(model, batch):
        noise, ids, labels = batch["noise"], batch["ids"], batch["label"]  # [B, T, C], [B, T], [B]
        B, T, _ = noise.shape
        book = codebook.to(noise.device)
        target = book[ids]
        if naive:
            t = torch.zeros(B, dtype=torch.long, device=noise.device)
            x = torch.zeros_like(noise)
        else:
            t = torch.where(torch.rand(B, device=noise.device) < 0.5, 0, second_step)
            position = torch.arange(T, device=noise.device)[None]
            x = torch.where((position < t[:, None])[..., None], target, noise)
        codes, logits = model(x, labels, t)
        position = torch.arange(T, device=noise.device)[None].expand(B, T)
        predicted = position >= t[:, None]  # data tokens are given, not predicted
        by_logits, by_codes = predicted & (position < split), predicted & (position >= split)
        ce = F.cross_entropy(logits[by_logits], ids[by_logits]) if by_logits.any() else logits.sum() * 0
        mse = F.mse_loss(codes[by_codes], target[by_codes]) if by_codes.any() else codes.sum() * 0
        accuracy = (logits.argmax(-1)[by_logits] == ids[by_logits]).float().mean().item() if by_logits.any() else 0.0
        return ce + mse, {"ce": ce.item(), "mse": mse.item(), "accuracy": accuracy}

    return loss_fn


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="zoo train dd-shapes", description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="llamagen-shapes", help="a class-conditional AR image pipeline")
    p.add_argument("--out", required=True)
    p.add_argument("--pairs", type=int, default=20000, help="number of (noise, tokens) pairs")
    p.add_argument("--guidance", type=float, default=2.0, help="the teacher's CFG scale while making pairs")
    p.add_argument("--flow-steps", type=int, default=32)
    p.add_argument("--split", type=int, default=None, help="logits head before it (default 80/256 of the tokens)")
    p.add_argument("--second-step", type=int, default=None, help="t2 of 2-step sampling (default as --split)")
    p.add_argument("--naive", action="store_true", help="the naive one-step baseline (no noise input)")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--ema", type=float, default=None)
    add_mixed_precision(p)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import zoo
    from accelerate import PartialState

    from pipelines import DistilledPipeline
    from zoo.ar.distilled import DDTransformer
    from zoo.flow.pairs import PairDataset, write_pairs
    from zoo.utils.distributed import cpu_processes

    out = Path(args.out)
    teacher = zoo.load(args.teacher)
    teacher.set_progress_bar_config(disable=True)
    state = PartialState(cpu=cpu_processes())
    write_pairs(teacher, out / "pairs", args.pairs, guidance_scale=args.guidance, num_flow_steps=args.flow_steps,
                seed=args.seed, process_index=state.process_index, num_processes=state.num_processes)
    state.wait_for_everyone()
    data = PairDataset(out / "pairs")

    codebook = teacher.vqvae.codebook.detach().float()
    student = DDTransformer.from_teacher(teacher.transformer, codebook_dim=codebook.shape[1])
    num_tokens = student.num_tokens
    split = round(num_tokens * 80 / 256) if args.split is None else args.split
    second_step = split if args.second_step is None else args.second_step
    if not (0 <= split <= num_tokens and 0 < second_step < num_tokens):
        raise SystemExit(f"--split must lie in [0, {num_tokens}] and --second-step in (0, {num_tokens}).")
    config = TrainConfig(output_dir=str(out / "student"), max_steps=args.steps, batch_size=args.batch_size,
                         lr=args.lr, weight_decay=0.05, lr_schedule="cosine", ema_decay=args.ema,
                         warmup_steps=min(500, args.steps // 10) if args.warmup is None else args.warmup,
                         mixed_precision=args.mixed_precision, log_every=min(50, args.steps),
                         checkpoint_every=min(250, args.steps), seed=args.seed, extra=vars(args))
    student = train(student, data, dd_loss(codebook, split, second_step, args.naive), config)
    if is_main_process():
        pipe = DistilledPipeline(student=student, vqvae=teacher.vqvae, class_names=teacher.config.class_names,
                                 split_position=split, second_step_position=second_step, noise_input=not args.naive)
        pipe.save_pretrained(out / "pipeline")
        print(f"saved {out}/pipeline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
