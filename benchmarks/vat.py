"""VAT on Primitives: reconstruction quality against token budget and compression, and next-scale
generation, with 3DShape2VecSet's evaluation protocol.

    python benchmarks/vat.py [--vat vat-primitives] [--ar vat-ar-primitives] [--shapes 100] [--quick]

Reconstruction: each test shape is encoded, decoded from the first k scales (the token budget),
meshed by marching cubes on a 129^3 grid over [-1, 1]^3, and compared with the true outer surface:
Chamfer (sum of the two mean nearest-neighbour distances over 100k samples each), F-score at 0.02 and
0.01, and the volume IoU at the shape's occupancy queries. Compression = the true mesh's binary PLY
size over the tokens' size (tokens x bits per token). VAT's claim: F-score stays high as tokens
shrink (96% at 250x, 92% at 2000x on Objaverse).

Generation: shapes of every category from the next-scale AR pipeline against test shapes of the same
categories: coverage, MMD (Chamfer) and 1-NNA on 2,048 surface samples per shape; meshes per second.
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks.common import claim, machine_description, report, write_results
from zoo.data.primitives import CATEGORIES, PrimitivesDataset, surface_points
from zoo.metrics.shapes3d import chamfer_fscore, generation_metrics, sample_surface, volume_iou


def mesh_file_bytes(mesh) -> int:
    """Size of the mesh as a binary PLY file."""
    buffer = io.BytesIO()
    mesh.export(buffer, file_type="ply")
    return buffer.getbuffer().nbytes


@torch.no_grad()
def reconstruction_rows(vat, data: PrimitivesDataset, budgets: list[int], resolution: int, samples: int) -> list[dict]:
    per_budget = {k: [] for k in budgets}
    mesh_bytes = []
    for i in tqdm(range(len(data)), desc="reconstructions"):
        spec, item = data.spec(i), data[i]
        reference, _ = surface_points(spec, samples, np.random.default_rng(i))
        mesh_bytes.append(mesh_file_bytes(spec.mesh()))
        ids = vat.encode(item["points"][None], item["normals"][None])
        for k in budgets:
            planes = vat.decode(ids[:k])
            mesh = vat.planes_to_meshes(planes, resolution)[0]
            scores = chamfer_fscore(sample_surface(mesh, samples, seed=i), reference)
            scores["iou"] = volume_iou(vat.occupancy_logits(planes, item["queries"][None])[0], item["occupancy"])
            per_budget[k].append(scores)
    rows = []
    for k, scores in per_budget.items():
        tokens, size = sum(vat.scales[:k]), vat.num_bytes(k)
        rows.append({"system": f"vat {k} scales", "tokens": tokens, "bytes": size,
                     "compression": float(np.mean(mesh_bytes)) / size,
                     **{m: float(np.mean([s[m] for s in scores])) for m in scores[0]}})
    return rows


@torch.no_grad()
def generation_row(pipe, data: PrimitivesDataset, per_class: int, resolution: int, seed: int = 0) -> dict:
    labels = [c for c in range(len(CATEGORIES)) for _ in range(per_class)]
    print(f"generating {len(labels)} shapes (timed)", file=sys.stderr, flush=True)
    started = time.perf_counter()
    meshes = pipe(class_labels=labels, resolution=resolution, generator=torch.Generator().manual_seed(seed)).meshes
    seconds = time.perf_counter() - started
    generated = [sample_surface(m, 2048, seed=i) for i, m in enumerate(meshes)]
    reference = [surface_points(data.spec(i), 2048, np.random.default_rng(i))[0] for i in range(len(data))]
    metrics = generation_metrics(generated, reference)
    empty = sum(len(m.faces) == 0 for m in meshes)
    return {"system": "vat-ar (all scales)", "shapes": len(meshes), "empty_meshes": empty,
            "meshes_per_s": len(meshes) / seconds, **metrics}


def main(argv=None) -> int:
    import zoo

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vat", default="vat-primitives", help="VAT tokenizer, or 'none'")
    p.add_argument("--ar", default="vat-ar-primitives", help="VAT3DPipeline, or 'none'")
    p.add_argument("--shapes", type=int, default=100, help="test shapes for reconstruction")
    p.add_argument("--budgets", type=int, nargs="+", default=None,
                   help="scales to decode (default: every prefix from 3 scales on)")
    p.add_argument("--points", type=int, default=256, help="surface points the tokenizer reads (as it trained)")
    p.add_argument("--gen-per-class", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="generator seed of the generated shapes")
    p.add_argument("--resolution", type=int, default=129)
    p.add_argument("--samples", type=int, default=100_000, help="surface samples per shape for Chamfer / F-score")
    p.add_argument("--quick", action="store_true", help="a few shapes at low resolution; to vat.quick.json")
    args = p.parse_args(argv)
    if args.quick:
        args.shapes, args.gen_per_class = min(args.shapes, 4), min(args.gen_per_class, 1)
        args.resolution, args.samples = min(args.resolution, 33), min(args.samples, 5000)
    torch.set_num_threads(2)
    data = PrimitivesDataset("test", num_points=args.points, length=args.shapes)
    rows, claims = [], []
    if args.vat != "none":
        vat = zoo.load(args.vat).eval()
        budgets = args.budgets or list(range(min(3, len(vat.scales)), len(vat.scales) + 1))
        recon = reconstruction_rows(vat, data, budgets, args.resolution, args.samples)
        rows += recon
        full, smallest = recon[-1], recon[0]
        claims.append(claim("F-score@0.02 stays high as tokens shrink (at the smallest budget at least 90% of the "
                            "full budget's; VAT: 96% at 250x, 92% at 2000x)",
                            smallest["fscore@0.02"] >= 0.9 * full["fscore@0.02"],
                            f"{100 * smallest['fscore@0.02']:.1f}% with {smallest['tokens']} tokens "
                            f"({smallest['compression']:.0f}x) vs {100 * full['fscore@0.02']:.1f}% with "
                            f"{full['tokens']} tokens ({full['compression']:.0f}x)"))
        claims.append(claim("the full budget reconstructs shapes well (F-score@0.02 >= 90%)",
                            full["fscore@0.02"] >= 0.9, f"{100 * full['fscore@0.02']:.1f}%"))
    if args.ar != "none":
        rows.append(generation_row(zoo.load(args.ar), data, args.gen_per_class, args.resolution, args.seed))
    command = " ".join(["python benchmarks/vat.py", *(sys.argv[1:] if argv is None else argv)])
    path = write_results("vat", command, machine_description(2), rows, claims, quick=args.quick,
                         columns=["system", "tokens", "bytes", "compression", "chamfer", "fscore@0.02", "fscore@0.01",
                                  "iou", "shapes", "empty_meshes", "coverage", "mmd_chamfer", "one_nna",
                                  "meshes_per_s"],
                         notes=f"{args.shapes} Primitives test shapes, {args.points} surface points read; marching "
                               f"cubes at {args.resolution}^3 over [-1, 1]^3; {args.samples} surface samples per "
                               "shape; compression against the true mesh as binary PLY.")
    report(rows, claims, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
