"""Distilled decoding: the teacher's 256 steps against DD's 1 and 2 steps and the naive one-step baseline.

    python benchmarks/distilled.py [--teacher llamagen-shapes] [--dd dd-shapes] [--naive runs/dd-naive/pipeline]
        [--images 1000] [--quick]

All systems sample the same balanced classes with the same per-image seeds; Shapes-FID, Shapes-IS and
class accuracy against the Shapes test split (features of `shapes-classifier`), images/s and the
speedup over the teacher (with and without the VQ decoding every system shares), and the seconds
one image takes at batch 1, in one run on one machine. The claims in miniature: DD 1-step at least 50x
faster than the teacher (paper: 217.8x for LlamaGen-L) with a bounded quality loss, and the naive
one-step baseline far worse (paper: FID 220.2 against DD's 11.35).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from benchmarks.common import claim, machine_description, report, run_launched, write_results
from benchmarks.images import (add_sampling_arguments, image_metrics, latency_seconds, num_images,
                               reference_set)
from zoo.metrics.sampling import sample_images


@torch.no_grad()
def decode_seconds(vqvae, num_images: int, grid: tuple[int, int], batch_size: int) -> float:
    """Seconds the VQ decoder takes for `num_images` token grids: the share of every system's time
    that is not generation (the same decoder and image size for all of them)."""
    ids = torch.randint(vqvae.config.codebook_size, (num_images, *grid), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for chunk in ids.split(batch_size):
        vqvae.decode(chunk)
    return time.perf_counter() - start


@torch.no_grad()
def main(argv=None) -> int:
    import zoo

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="llamagen-shapes")
    p.add_argument("--dd", default="dd-shapes")
    p.add_argument("--naive", default=None, help="the naive one-step baseline pipeline (zoo train dd-shapes --naive)")
    p.add_argument("--cfg", type=float, default=2.0, help="the teacher's CFG scale (as when the pairs were made)")
    p.add_argument("--latency-repeats", type=int, default=5, help="batch-1 images timed per system (median)")
    add_sampling_arguments(p, "distilled", images=1000, batch_size=50, quick_images=100)
    args = p.parse_args(argv)
    n = num_images(args)
    torch.set_num_threads(2)
    classifier = zoo.load(args.classifier).eval()
    teacher, dd = zoo.load(args.teacher), zoo.load(args.dd)
    size = teacher.transformer.config.grid_size[0] * teacher.vqvae.downsample_factor
    real, real_features = reference_set(classifier, n, size)
    labels = (torch.arange(n) % teacher.transformer.config.num_classes).tolist()

    systems = [(f"{args.teacher} (teacher)", teacher, dict(guidance_scale=args.cfg), teacher.transformer.seq_len),
               (f"{args.dd} 1 step", dd, dict(num_inference_steps=1), 1),
               (f"{args.dd} 2 steps", dd, dict(num_inference_steps=2), 2)]
    if args.naive:
        systems.append(("naive one-step baseline", zoo.load(args.naive), dict(num_inference_steps=1), 1))
    rows = []
    for name, pipe, kwargs, steps in systems:
        start = time.perf_counter()
        images = sample_images(pipe, labels, args.batch_size, args.seed, **kwargs)
        seconds = time.perf_counter() - start
        metrics = image_metrics(classifier, images, torch.tensor(labels), real, real_features)
        latency = latency_seconds(pipe, args.latency_repeats, class_labels=[labels[0]], **kwargs)
        rows.append({"system": name, "steps": steps, **metrics, "images_per_s": n / seconds, "latency_s": latency})
    decoding = decode_seconds(teacher.vqvae, n, tuple(teacher.transformer.config.grid_size), args.batch_size)
    for row in rows:  # rows[0], the teacher, comes first
        row["generation_images_per_s"] = n / max(n / row["images_per_s"] - decoding, 1e-6)
        row["speedup"] = row["images_per_s"] / rows[0]["images_per_s"]
        row["generation_speedup"] = row["generation_images_per_s"] / rows[0]["generation_images_per_s"]
        row["latency_speedup"] = rows[0]["latency_s"] / row["latency_s"]

    teacher_row, one_step = rows[0], rows[1]
    claims = [claim("DD 1-step is at least 50x faster than the teacher (paper: 217.8x)", one_step["speedup"] >= 50,
                    f"{one_step['speedup']:.1f}x"),
              claim("DD 1-step makes one image (batch 1) at least 50x sooner than the teacher",
                    one_step["latency_speedup"] >= 50, f"{one_step['latency_speedup']:.1f}x "
                    f"({one_step['latency_s']:.3f} s vs {teacher_row['latency_s']:.3f} s)"),
              claim("DD 1-step keeps most of the teacher's class accuracy (at least 80% of it)",
                    one_step["class_accuracy"] >= 0.8 * teacher_row["class_accuracy"],
                    f"{100 * one_step['class_accuracy']:.1f}% vs {100 * teacher_row['class_accuracy']:.1f}%")]
    if args.naive:
        naive = rows[-1]
        claims.append(claim("the naive one-step baseline is far worse than DD 1-step (Shapes-FID at least 2x)",
                            naive["shapes_fid"] >= 2 * one_step["shapes_fid"],
                            f"{naive['shapes_fid']:.0f} vs {one_step['shapes_fid']:.0f}"))
    command = " ".join(["python benchmarks/distilled.py", *(sys.argv[1:] if argv is None else argv)])
    path = write_results("distilled", command, machine_description(2), rows, claims, quick=bool(args.quick),
                         columns=["system", "steps", "shapes_fid", "shapes_is", "precision", "recall",
                                  "class_accuracy", "images_per_s", "speedup", "generation_images_per_s",
                                  "generation_speedup", "latency_s", "latency_speedup"],
                         notes=f"{n} images per row at {size}px against {n} Shapes test images; teacher CFG {args.cfg}; "
                               f"batch {args.batch_size}; images/s includes VQ decoding ({decoding:.1f} s for {n} "
                               "images), generation_images_per_s leaves it out; latency_s: median seconds for one "
                               f"image at batch 1 over {args.latency_repeats} runs.")
    report(rows, claims, path)
    return 0


if __name__ == "__main__":
    run_launched(main)
