"""Class-conditional generation on Shapes: Shapes-FID, Shapes-IS, precision/recall, class accuracy, images/s.

    python benchmarks/c2i.py [--pipeline llamagen-shapes] [--images 1000] [--cfg 2.0 4.0] [--top-k 0 20] [--quick]
    accelerate launch --num_processes 2 benchmarks/c2i.py ...   # sampling split across processes

The reference set is the Shapes test split. The same figures are given for held-out real images
(the validation split) and for the tokenizer's reconstructions of them, the ceiling a generator
over that tokenizer can reach. All features come from `shapes-classifier`: these are Shapes-FID /
Shapes-IS, not ImageNet numbers. Classes are balanced (image i has class i mod 10).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from benchmarks.common import claim, machine_description, report, run_launched, write_results
from benchmarks.images import (add_sampling_arguments, image_metrics, num_images, real_images,
                               reconstructions, reference_set)
from zoo.metrics.sampling import sample_images
from zoo.utils.distributed import cpu_processes


@torch.no_grad()
def main(argv=None) -> int:
    import zoo
    from accelerate import PartialState

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", default="llamagen-shapes")
    p.add_argument("--cfg", type=float, nargs="+", default=[2.0], help="guidance scales to measure")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, nargs="+", default=[0], help="top-k values to measure at every scale (0 = off)")
    add_sampling_arguments(p, "c2i", images=1000, batch_size=50, quick_images=100)
    args = p.parse_args(argv)
    n = num_images(args)
    state = PartialState(cpu=cpu_processes())
    torch.set_num_threads(max(1, 2 // state.num_processes))
    pipe, classifier = zoo.load(args.pipeline), zoo.load(args.classifier).eval()
    size = pipe.transformer.config.grid_size[0] * pipe.vqvae.downsample_factor
    num_classes = pipe.transformer.config.num_classes

    real, real_features = reference_set(classifier, n, size)
    held_out, held_out_labels = real_images("validation", n, size)
    recon = reconstructions(pipe.vqvae, held_out)
    rows = [{"system": "real images (validation split)", **image_metrics(classifier, held_out, held_out_labels, real,
                                                                       real_features)},
            {"system": "tokenizer reconstructions", **image_metrics(classifier, recon, held_out_labels, real,
                                                                  real_features)}]
    labels = torch.arange(n) % num_classes
    for top_k in args.top_k:
        for scale in args.cfg:
            start = time.perf_counter()
            samples = sample_images(pipe, labels.tolist(), args.batch_size, args.seed, guidance_scale=scale,
                                    temperature=args.temperature, top_k=top_k)
            seconds = time.perf_counter() - start
            rows.append({"system": f"{args.pipeline} samples", "cfg": scale, "temperature": args.temperature,
                         "top_k": top_k, **image_metrics(classifier, samples, labels, real, real_features),
                         "images_per_s": n / seconds, "processes": state.num_processes})
    if not state.is_main_process:
        return 0

    samples_rows, rfid = rows[2:], rows[1]["shapes_fid"]
    best = min(samples_rows, key=lambda r: r["shapes_fid"])
    surest = max(samples_rows, key=lambda r: r["class_accuracy"])  # each target at its best sampling setting
    claims = [claim("samples show the requested class (class accuracy >= 90%)", surest["class_accuracy"] >= 0.9,
                    f"{100 * surest['class_accuracy']:.1f}% at cfg {surest['cfg']}, top-k {surest['top_k'] or 'off'}"),
              claim("Shapes-FID of samples <= 3x the tokenizer's Shapes-rFID (LlamaGen-B: 5.46 vs 2.19)",
                    best["shapes_fid"] <= 3 * rfid,
                    f"{best['shapes_fid']:.0f} at cfg {best['cfg']}, top-k {best['top_k'] or 'off'} vs 3 x {rfid:.0f}")]
    command = " ".join(["python benchmarks/c2i.py", *(sys.argv[1:] if argv is None else argv)])
    path = write_results("c2i", command, machine_description(2), rows, claims, quick=bool(args.quick),
                         columns=["system", "cfg", "top_k", "shapes_fid", "shapes_is", "precision", "recall",
                                  "class_accuracy", "images_per_s"],
                         notes=f"{n} images per row at {size}px against {n} Shapes test images; features of "
                               f"`{args.classifier}`; samples with temperature {args.temperature} (top-k 0: off), batch "
                               f"{args.batch_size}; images/s includes VQ decoding.")
    report(rows, claims, path)
    return 0


if __name__ == "__main__":
    run_launched(main)
