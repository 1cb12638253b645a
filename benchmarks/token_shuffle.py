"""Token-Shuffle: windows s = 1, 2, 4 on the same data and training budget.

    python benchmarks/token_shuffle.py --pipelines s1=runs/ts1/pipeline s2=token-shuffle-shapes \\
        s4=runs/ts4/pipeline [--images 500] [--cost-size 256] [--quick]

Prompts are the captions of Shapes test images; the same images (at the pipelines' resolution) are
the reference set of Shapes-FID. Prompt alignment is a GenEval in miniature: the share of images
whose shape, colour and position, as `shapes-classifier` reads them, all match the prompt (and each
attribute alone). Also AR steps per image, images/s, and the training step time read from the run's
`metrics.jsonl` beside the pipeline folder when there is one. Two reference rows per resolution: the
real test images (how well the classifier reads the prompts) and their tokenizer reconstructions
(the ceiling of any generator over the tokenizer). The claim: about s^2 fewer AR steps and
at least 3x faster sampling at s = 2, with alignment close to s = 1.

`--cost-size 256` adds what a higher resolution costs each window (64x64 tokens with `vq-shapes`):
the architecture of the first pipeline's transformer with untrained weights, for s = 1, 2 and 4:
AR steps, seconds per image at batch 1 and seconds per training step. Its quality is not measured
(no model is trained at that size); the rows show where s = 1 stops being practical.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import claim, machine_description, report, run_launched, write_results
from benchmarks.images import add_sampling_arguments, batches, latency_seconds, num_images, reconstructions
from zoo.data.shapes import ShapesDataset
from zoo.metrics.image import shapes_fid
from zoo.metrics.sampling import sample_images

ALIGNED = ("shape", "color", "position")


def training_step_seconds(pipeline_source: str) -> float | None:
    """Mean seconds per training step from <run>/metrics.jsonl, for a pipeline saved in <run>/pipeline."""
    metrics = Path(pipeline_source).parent / "metrics.jsonl"
    if not metrics.is_file():
        return None
    rates = [json.loads(line)["steps_per_s"] for line in metrics.read_text().splitlines() if "steps_per_s" in line]
    return 1 / (sum(rates) / len(rates)) if rates else None


def training_step_at(transformer, batch_size: int) -> float:
    """Seconds for one forward + backward + AdamW step of the recipe's loss on random tokens (after one
    warm-up step)."""
    from zoo.train.token_shuffle_shapes import window_loss

    config = transformer.config
    batch = {"text_ids": torch.randint(4, config.text_vocab_size, (batch_size, config.max_text_tokens)),
             "ids": torch.randint(0, config.codebook_size, (batch_size, *config.grid_size))}
    batch["text_mask"] = torch.ones_like(batch["text_ids"], dtype=torch.bool)
    optimizer = torch.optim.AdamW(transformer.parameters())
    transformer.train()
    with torch.enable_grad():
        for _ in range(2):
            start = time.perf_counter()
            window_loss(transformer, batch)[0].backward()
            optimizer.step()
            optimizer.zero_grad()
    return time.perf_counter() - start


def cost_rows(pipe, size: int, windows, batch_size: int, **call_kwargs) -> list[dict]:
    """Sampling (one image at batch 1, `call_kwargs` to the pipeline) and training cost of `pipe`'s
    architecture at size x size pixels for each window, with untrained weights."""
    from pipelines import TokenShufflePipeline
    from zoo.ar.token_shuffle import TokenShuffleTransformer

    grid = size // pipe.vqvae.downsample_factor
    rows = []
    for window in windows:
        torch.manual_seed(0)
        transformer = TokenShuffleTransformer.from_config({**pipe.transformer.config, "window": window,
                                                           "grid_size": [grid, grid]}).eval()
        untrained = TokenShufflePipeline(transformer=transformer, tokenizer=pipe.tokenizer, vqvae=pipe.vqvae)
        latency = latency_seconds(untrained, 1, height=size, width=size, **call_kwargs)
        rows.append({"system": f"s{window} (untrained, cost only)", "window": window, "resolution": f"{size}x{size}",
                     "ar_steps": transformer.num_windows, "latency_s": latency,
                     "train_step_s": training_step_at(transformer, batch_size)})
    return rows


def reference_rows(classifier, vq, real: torch.Tensor, specs) -> list[dict]:
    """The metrics on the real test images and on their reconstructions by the tokenizer: how well the
    classifier reads the prompts at this size, and the ceiling of any generator over this tokenizer."""
    reconstructed = reconstructions(vq, real)
    resolution = f"{real.shape[-2]}x{real.shape[-1]}"
    return [{"system": "real test images", "resolution": resolution, **alignment(classifier, real, specs)},
            {"system": "vq reconstructions", "resolution": resolution,
             "shapes_fid": shapes_fid(classifier, batches(real), batches(reconstructed)),
             **alignment(classifier, reconstructed, specs)}]


MEASURABLE_ALIGNMENT = 0.1  # chance is about 0.001 (10 shapes x 10 colours x 9 positions)


def alignment_claim(s1: dict, s2: dict) -> dict:
    """The paper's quality claim, judged only when s = 1 follows the prompts measurably: two models that
    both miss every prompt are not "close" in any sense that the claim means."""
    evidence = f"{s2['alignment']:.3f} vs {s1['alignment']:.3f}"
    if s1["alignment"] < MEASURABLE_ALIGNMENT:
        evidence += f" (not measurable: s=1 follows under {MEASURABLE_ALIGNMENT:.0%} of the prompts)"
    return claim("s=2 prompt alignment is close to s=1 (within 0.05)",
                 s1["alignment"] >= MEASURABLE_ALIGNMENT and s2["alignment"] >= s1["alignment"] - 0.05, evidence)


def alignment(classifier, images: torch.Tensor, specs) -> dict[str, float]:
    predictions = [p for b in batches(images) for p in classifier.predict(b)]
    hits = {name: [p[name] == getattr(s, name) for p, s in zip(predictions, specs)] for name in ALIGNED}
    result = {f"{name}_accuracy": sum(v) / len(v) for name, v in hits.items()}
    result["alignment"] = sum(all(h) for h in zip(*hits.values())) / len(specs)
    return result


@torch.no_grad()
def main(argv=None) -> int:
    import zoo

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipelines", nargs="+", metavar="NAME=PIPELINE", default=["s2=token-shuffle-shapes"])
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--cfg-schedule", default="half-linear")
    p.add_argument("--latency-repeats", type=int, default=3, help="batch-1 images timed per row (median)")
    p.add_argument("--cost-size", type=int, default=0, help="also the cost of s = 1, 2, 4 at this size (pixels)")
    p.add_argument("--cost-batch-size", type=int, default=4, help="training batch of the cost rows")
    add_sampling_arguments(p, "token_shuffle", images=500, batch_size=25, quick_images=50)
    args = p.parse_args(argv)
    n = num_images(args)
    if any("=" not in spec for spec in args.pipelines):
        raise SystemExit("--pipelines takes NAME=PIPELINE pairs, e.g. s2=token-shuffle-shapes.")
    torch.set_num_threads(2)
    classifier = zoo.load(args.classifier).eval()
    reference, references, measured, first = {}, [], [], None
    for spec in args.pipelines:
        name, source = spec.split("=", 1)
        pipe = zoo.load(source)
        if first is None:
            first = pipe
        height, width = pipe.default_size
        if (height, width) not in reference:
            data = ShapesDataset("test", size=height, length=n)
            reference[height, width] = (torch.stack([data[i]["image"] for i in range(n)]),
                                        [data.spec(i) for i in range(n)])
            references += reference_rows(classifier, pipe.vqvae, *reference[height, width])
        real, specs = reference[height, width]
        start = time.perf_counter()
        images = sample_images(pipe, [s.caption for s in specs], args.batch_size, args.seed, condition="prompt",
                               guidance_scale=args.cfg, cfg_schedule=args.cfg_schedule)
        seconds = time.perf_counter() - start
        latency = latency_seconds(pipe, args.latency_repeats, prompt=specs[0].caption, guidance_scale=args.cfg,
                                  cfg_schedule=args.cfg_schedule)
        measured.append({"system": name, "window": pipe.transformer.window, "resolution": f"{height}x{width}",
                         "ar_steps": pipe.transformer.num_windows, "images_per_s": n / seconds, "latency_s": latency,
                         "train_step_s": training_step_seconds(source),
                         "shapes_fid": shapes_fid(classifier, batches(real), batches(images)),
                         **alignment(classifier, images, specs)})
    costs = cost_rows(first, args.cost_size, (1, 2, 4), args.cost_batch_size, prompt=specs[0].caption,
                      guidance_scale=args.cfg, cfg_schedule=args.cfg_schedule) if args.cost_size else []

    claims = []
    by_window = {row["window"]: row for row in measured}
    if 1 in by_window and 2 in by_window:
        s1, s2 = by_window[1], by_window[2]
        claims += [
            claim("s=2 needs about 4x fewer AR steps than s=1", s1["ar_steps"] / s2["ar_steps"] >= 3.9,
                  f"{s1['ar_steps']} vs {s2['ar_steps']}"),
            claim("s=2 samples at least 3x faster than s=1", s2["images_per_s"] >= 3 * s1["images_per_s"],
                  f"{s2['images_per_s'] / s1['images_per_s']:.2f}x images/s at batch {args.batch_size}, "
                  f"{s1['latency_s'] / s2['latency_s']:.2f}x at batch 1"),
            alignment_claim(s1, s2)]
    cost = {row["window"]: row for row in costs}
    if cost:
        claims.append(claim(f"at {args.cost_size} px s=2 samples at least 3x faster than s=1 (batch 1)",
                            cost[1]["latency_s"] >= 3 * cost[2]["latency_s"],
                            f"{cost[1]['latency_s']:.1f} s vs {cost[2]['latency_s']:.1f} s per image, "
                            f"{cost[1]['train_step_s']:.1f} s vs {cost[2]['train_step_s']:.1f} s per training step"))
    rows = references + measured + costs
    command = " ".join(["python benchmarks/token_shuffle.py", *(sys.argv[1:] if argv is None else argv)])
    path = write_results("token_shuffle", command, machine_description(2), rows, claims, quick=bool(args.quick),
                         columns=["system", "window", "resolution", "ar_steps", "images_per_s", "latency_s",
                                  "train_step_s", "shapes_fid", "alignment", "shape_accuracy", "color_accuracy",
                                  "position_accuracy"],
                         notes=f"{n} Shapes test captions per row; CFG {args.cfg} ({args.cfg_schedule}); batch "
                               f"{args.batch_size}; latency_s: one image at batch 1 (median of "
                               f"{args.latency_repeats}); features and attributes read by `{args.classifier}`."
                               + (f" Cost rows: training steps of {args.cost_batch_size} sequences."
                                  if args.cost_size else ""))
    report(rows, claims, path)
    return 0


if __name__ == "__main__":
    run_launched(main)
