"""Image tokenizer quality on the Shapes test split: PSNR, SSIM, Shapes-rFID, pFID, codebook use.

    python benchmarks/image_tokenizer.py [--vq vq-shapes] [--images 2000] [--quick]

Shapes-rFID is the FID, in the `shapes-classifier` feature space, between test images and their
reconstructions; pFID (RobustTok) the same after swapping each token, with probability alpha, for
one of its delta nearest codewords. The first row measures the classifier's own floor: FID between
two disjoint halves of real test images. Class accuracy (the share of images in which the
classifier reads the true shape) of the reconstructions is the ceiling of any generator over the
tokenizer: the class-conditional benchmarks (c2i, ctf, distilled) ask their samples for 90%.
"""

from __future__ import annotations

import argparse
import sys

import torch

from benchmarks.common import claim, machine_description, report, write_results
from benchmarks.images import batches, class_accuracy, real_images, shape_sizes, size_masks
from zoo.metrics.image import codebook_stats, perturb_tokens, psnr, shapes_fid, ssim


def accuracy_by_size(classifier, images: dict, labels: torch.Tensor, sizes: list[str]) -> list[dict]:
    """One row per image set (name -> images [N, 3, H, W]) and shape size: its class accuracy on the
    images whose shapes have that size. The 16x16 token grid loses the details of small shapes first."""
    return [{"system": f"{name}: {size} shapes ({int(keep.sum())} images)",
             "class_accuracy": class_accuracy(classifier, batch[keep], labels[keep])}
            for name, batch in images.items() for size, keep in size_masks(sizes).items()]


@torch.no_grad()
def main(argv=None) -> int:
    import zoo

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vq", default="vq-shapes")
    p.add_argument("--classifier", default="shapes-classifier")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--delta", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="at most 200 images, results to image_tokenizer.quick.json")
    args = p.parse_args(argv)
    n = min(args.images, 200) if args.quick else args.images
    torch.set_num_threads(2)
    vq, classifier = zoo.load(args.vq).eval(), zoo.load(args.classifier).eval()
    real, labels = real_images("test", n, args.size)
    ids = torch.cat([vq.encode(b) for b in batches(real)])
    recon = torch.cat([vq.decode(b).clamp(-1, 1) for b in batches(ids)])
    perturbed = perturb_tokens(ids, vq.codebook, args.alpha, args.delta, torch.Generator().manual_seed(0))
    recon_p = torch.cat([vq.decode(b).clamp(-1, 1) for b in batches(perturbed)])
    half = n // 2
    stats = codebook_stats(ids, vq.config.codebook_size)
    rows = [
        {"system": "real vs real (disjoint halves)", "shapes_fid": shapes_fid(classifier, batches(real[:half]),
                                                                              batches(real[half:])),
         "class_accuracy": class_accuracy(classifier, real, labels)},
        {"system": f"{args.vq} reconstructions", "psnr_db": psnr(recon, real), "ssim": ssim(recon, real),
         "shapes_rfid": shapes_fid(classifier, batches(real), batches(recon)),
         f"pfid_alpha{args.alpha}_delta{args.delta}": shapes_fid(classifier, batches(real), batches(recon_p)),
         "class_accuracy": class_accuracy(classifier, recon, labels), "codebook_usage": stats["codebook_usage"], "perplexity": stats["perplexity"],
         "tokens_per_image": ids[0].numel(), "codebook_size": vq.config.codebook_size},
    ]
    rows += accuracy_by_size(classifier, {"real": real, f"{args.vq} reconstructions": recon}, labels,
                             shape_sizes("test", n))
    claims = [claim("reconstructions keep the image (PSNR >= 25 dB)", rows[1]["psnr_db"] >= 25,
                    f"{rows[1]['psnr_db']:.1f} dB"),
              claim("the tokenizer uses most of its codebook (>= 50% of codes on the test images)",
                    stats["codebook_usage"] >= 0.5, f"{100 * stats['codebook_usage']:.0f}%")]
    command = " ".join(["python benchmarks/image_tokenizer.py", *(sys.argv[1:] if argv is None else argv)])
    path = write_results("image_tokenizer", command, machine_description(2), rows, claims, quick=args.quick,
                         columns=["system", "psnr_db", "ssim", "shapes_rfid", f"pfid_alpha{args.alpha}_delta{args.delta}",
                                  "shapes_fid", "class_accuracy", "codebook_usage", "perplexity"],
                         notes=f"{n} Shapes test images at {args.size}px; features of `{args.classifier}`.")
    report(rows, claims, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
