"""Coarse-to-fine prediction (CTF) against the plain AR baseline on the same tokenizer.

    python benchmarks/ctf.py [--baseline llamagen-shapes] [--ctf ctf-shapes] [--cfg 2.0] [--baseline-cfg 2.0 4.0] \\
        [--ablation k32=runs/ctf-k32/pipeline random=runs/ctf-random/pipeline ...] [--images 1000] [--quick]
    python benchmarks/ctf.py --speed-only    # timing rows only (no metrics, no ablations): results/ctf-speed.json

Every system samples the same balanced classes with the same per-image seeds; Shapes-FID, Shapes-IS,
precision/recall and class accuracy are measured against the Shapes test split (features of
`shapes-classifier`), images/s covers stage 1 + stage 2 + VQ decoding for CTF and the 256 steps +
decoding for the baseline, in one run on one machine. The baseline can run at several CFG scales; the
claims take its best Shapes-FID, as papers report a baseline at its best scale. A CTF system whose
refiner was trained without the cluster mask is measured twice: as trained, and with the mask switched
on at inference (the mask on/off ablation). The paper's claim in miniature: CTF has better IS and FID
than the baseline at equal or higher speed (ImageNet: +59 IS on average, 0.93x-1.18x speed).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from benchmarks.common import claim, machine_description, report, run_launched, write_results
from benchmarks.images import (add_sampling_arguments, image_metrics, num_images, one_image, reference_set,
                               take_turns)
from zoo.metrics.sampling import sample_images


def parameters(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def describe(name: str, pipe) -> dict:
    row = {"system": name, "ar_params_m": parameters(pipe.transformer)}
    if hasattr(pipe, "refiner"):
        row.update(aux_params_m=parameters(pipe.refiner), clusters=pipe.clusters.config.num_clusters,
                   cluster_method=pipe.clusters.config.method, mask_fine_logits=pipe.config.mask_fine_logits)
    return row


@torch.no_grad()
def main(argv=None) -> int:
    import zoo

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default="llamagen-shapes")
    p.add_argument("--ctf", default="ctf-shapes")
    p.add_argument("--ablation", nargs="*", default=[], metavar="NAME=PIPELINE", help="more CTF pipelines")
    p.add_argument("--cfg", type=float, default=2.0, help="CFG scale of the CTF systems (the paper's 2.0)")
    p.add_argument("--baseline-cfg", type=float, nargs="+", help="CFG scales of the baseline (default: --cfg); "
                   "the claims compare CTF with the one of best Shapes-FID")
    p.add_argument("--baseline-temperature", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=1.1, help="CTF stage-1 and stage-2 temperature")
    p.add_argument("--latency-repeats", type=int, default=5, help="batch-1 images timed per system (median)")
    p.add_argument("--speed-only", action="store_true", help="time the baseline and --ctf only (same batches and "
                   "seeds, no metrics); results to ctf-speed.json")
    add_sampling_arguments(p, "ctf", images=1000, batch_size=50, quick_images=100)
    args = p.parse_args(argv)
    n = num_images(args)
    if args.speed_only and args.ablation:
        raise SystemExit("--speed-only times the baseline and --ctf only; drop --ablation.")
    for spec in args.ablation:
        if "=" not in spec:
            raise SystemExit(f"--ablation takes NAME=PIPELINE pairs, got {spec!r}.")
    torch.set_num_threads(2)
    classifier = zoo.load(args.classifier).eval()
    baseline = zoo.load(args.baseline)
    size = baseline.transformer.config.grid_size[0] * baseline.vqvae.downsample_factor
    real, real_features = (None, None) if args.speed_only else reference_set(classifier, n, size)
    labels = torch.arange(n) % baseline.transformer.config.num_classes

    systems = [(f"{args.baseline} (baseline)", baseline, cfg, dict(temperature=args.baseline_temperature))
               for cfg in args.baseline_cfg or [args.cfg]]
    for name, source in [(args.ctf, args.ctf), *(spec.split("=", 1) for spec in args.ablation)]:
        pipe = zoo.load(source)
        systems.append((name, pipe, args.cfg, dict(temperature=args.temperature, refiner_temperature=args.temperature)))
    variants = []  # (row name, pipeline, cfg, sampling kwargs, cluster mask to switch to or None)
    for name, pipe, cfg, kwargs in systems:
        if hasattr(pipe, "refiner") and not pipe.config.mask_fine_logits:  # trained without the mask: try it on
            variants += [(f"{name} (no mask)", pipe, cfg, kwargs, False),
                         (f"{name} (cluster mask at inference)", pipe, cfg, kwargs, True)]
        else:
            variants.append((name, pipe, cfg, kwargs, None))

    # Systems take turns batch by batch (and image by image at batch 1), so a slow spell of the
    # machine falls on all of them; image i is drawn with seed + i whatever the order.
    chunks = torch.arange(n).split(args.batch_size)

    def switching_mask(pipe, mask, draw):
        """`draw`, after switching the pipeline to this variant's cluster mask (variants share a pipeline)."""
        def task(index):
            if mask is not None:
                pipe.register_to_config(mask_fine_logits=mask)
            return draw(index)
        return task

    def batch_task(pipe, cfg, kwargs, mask):
        def draw(index):
            chunk = chunks[index]
            return sample_images(pipe, labels[chunk].tolist(), args.batch_size, args.seed + int(chunk[0]),
                                 progress=False, guidance_scale=cfg, **kwargs)
        return switching_mask(pipe, mask, draw)

    def latency_task(pipe, cfg, kwargs, mask):
        return switching_mask(pipe, mask, one_image(pipe, class_labels=[int(labels[0])], guidance_scale=cfg, **kwargs))

    images, batch_seconds = take_turns({i: batch_task(*v[1:]) for i, v in enumerate(variants)}, len(chunks))
    _, image_seconds = take_turns({i: latency_task(*v[1:]) for i, v in enumerate(variants)}, args.latency_repeats)
    rows = []
    for i, (name, pipe, cfg, kwargs, mask) in enumerate(variants):
        metrics = {} if args.speed_only else image_metrics(classifier, torch.cat(images[i]), labels, real,
                                                           real_features)
        row = describe(name, pipe)
        if mask is not None:  # the pipeline's config holds the last variant's switch
            row["mask_fine_logits"] = mask
        rows.append({**row, "cfg": cfg, **metrics,
                     "images_per_s": n / sum(batch_seconds[i]),
                     "latency_s": statistics.median(image_seconds[i])})

    baselines = [row for row in rows if "aux_params_m" not in row]
    if args.speed_only:  # the fastest baseline row: the comparison least favourable to CTF
        base = max(baselines, key=lambda row: row["images_per_s"])
    else:
        base = min(baselines, key=lambda row: row["shapes_fid"])
    base_index, ctf_index = rows.index(base), len(baselines)
    ctf = rows[ctf_index]
    # Ratios per round (batch), then their median and range: how steady the comparison is.
    speeds = [b / c for b, c in zip(batch_seconds[base_index], batch_seconds[ctf_index])]
    latencies = [b / c for b, c in zip(image_seconds[base_index], image_seconds[ctf_index])]
    speed = statistics.median(speeds)
    speed_claim = claim("CTF samples at least as fast as the baseline (paper: 0.93x-1.18x)", speed >= 0.93,
                        f"{speed:.2f}x at batch {args.batch_size} (median of {len(speeds)} batches taken in turn, "
                        f"{min(speeds):.2f}-{max(speeds):.2f}x); {statistics.median(latencies):.2f}x at batch 1")
    claims = [speed_claim] if args.speed_only else [claim("CTF has a better Shapes-IS than the baseline (paper: +59 IS on average)",
                    ctf["shapes_is"] > base["shapes_is"], f"{ctf['shapes_is']:.2f} vs {base['shapes_is']:.2f}"),
              claim("CTF has a better (lower) Shapes-FID than the baseline", ctf["shapes_fid"] < base["shapes_fid"],
                    f"{ctf['shapes_fid']:.0f} vs {base['shapes_fid']:.0f} (baseline at cfg {base['cfg']})"),
              speed_claim]
    command = " ".join(["python benchmarks/ctf.py", *(sys.argv[1:] if argv is None else argv)])
    metric_columns = [] if args.speed_only else ["shapes_fid", "shapes_is", "precision", "recall", "class_accuracy"]
    measured = "timed only" if args.speed_only else f"against {n} Shapes test images"
    path = write_results("ctf-speed" if args.speed_only else "ctf", command, machine_description(2), rows, claims,
                         quick=bool(args.quick),
                         columns=["system", "cfg", "ar_params_m", "aux_params_m", "clusters", "cluster_method",
                                  "mask_fine_logits", *metric_columns, "images_per_s", "latency_s"],
                         notes=f"{n} images per row at {size}px, {measured}; "
                               f"baseline temperature {args.baseline_temperature}, CTF temperatures "
                               f"{args.temperature}; images_per_s at batch {args.batch_size}, VQ decoding included; "
                               f"latency_s: median seconds for one image at batch 1 over {args.latency_repeats} runs; systems take "
                               f"turns batch by batch and image by image."
                               + (" The claim compares CTF with the fastest baseline row." if args.speed_only else ""))
    report(rows, claims, path)
    return 0


if __name__ == "__main__":
    run_launched(main)
