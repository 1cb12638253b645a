"""Flexible 1D tokenizers on Shapes: FlexTok's quality against its token count, KARL's token count
against image complexity, and AR generation over FlexTok prefixes.

    python benchmarks/flextok.py [--flextok flextok-shapes] [--karl karl-shapes] [--ar flextok-ar-shapes]
                                 [--images 500] [--gen-images 200] [--quick]

- Reconstruction: the first k tokens of each Shapes test image decoded by the rectified-flow decoder
  (k = 1, 2, 4, ... up to the register count): PSNR, Shapes-rFID and the share of reconstructions in which
  the shapes-classifier reads the true shape. FlexTok's claim: quality rises with k; few tokens keep the
  gist (the class), more add the details.
- KARL: the tokens each test image keeps at a target error, against its complexity (number of shapes,
  plain or textured background), with their Spearman correlation, and the mean absolute pixel error each
  complexity level reaches with the VAE alone, with KARL's first 4 and 16 tokens and with all of them (how
  hard the tokenizer finds those images), and the counts against the shapes' size, which the proxy leaves
  out. KARL's claim: more complex images get more tokens. A second measure of complexity sits beside the
  proxy: the image's size as a PNG file, a lossless code length, the computable stand-in for the Kolmogorov
  complexity that KARL is named after (it counts edges and texture, whatever draws them).
- Decoder probe: the flow decoder's velocity error at a few fixed times t, with the first k tokens and with
  the null condition: where along the path the decoder uses the tokens, and how many it uses. A decoder
  that ignores its tokens at some t shows the same error there with k = 64 as with the null condition.
- Generation: class-conditional AR samples of k tokens, decoded: Shapes-FID against test images, class
  accuracy, images per second. FlexTok's claim: generation stays good at few tokens.
Any of the three parts runs alone (pass `--flextok none` etc. to skip one).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from benchmarks.common import claim, machine_description, report, write_results
from benchmarks.images import batches, class_accuracy, real_images, size_masks
from zoo.data.shapes import SIZES, ShapesDataset
from zoo.metrics.image import psnr, shapes_fid


def powers_of_two(limit: int) -> list[int]:
    return [2 ** i for i in range(limit.bit_length()) if 2 ** i <= limit]


@torch.no_grad()
def reconstruction_rows(tokenizer, classifier, real, labels, ks, decode_kwargs) -> list[dict]:
    """The VAE's own reconstructions (the ceiling of any tokenizer over its latents), then FlexTok's from the
    first k tokens for each k."""
    vae = torch.cat([tokenizer.decode_latents(tokenizer.encode_latents(b)).clamp(-1, 1) for b in batches(real, 50)])
    rows = [{"system": "VAE reconstructions (the ceiling)", "psnr_db": psnr(vae, real),
             "shapes_rfid": shapes_fid(classifier, batches(real), batches(vae)),
             "class_accuracy": class_accuracy(classifier, vae, labels)}]
    ids = torch.cat([tokenizer.tokenize(b) for b in batches(real, 50)])
    for k in ks:
        recon = torch.cat([tokenizer.detokenize(b[:, :k], generator=torch.Generator().manual_seed(i), **decode_kwargs)
                           .clamp(-1, 1) for i, b in enumerate(batches(ids, 50))])
        rows.append({"system": f"flextok k={k}", "tokens": k, "psnr_db": psnr(recon, real),
                     "shapes_rfid": shapes_fid(classifier, batches(real), batches(recon)),
                     "class_accuracy": class_accuracy(classifier, recon, labels)})
    return rows


@torch.no_grad()
def decoder_rows(tokenizer, real, ks, times) -> list[dict]:
    """Velocity MSE of the decoder at each fixed time t with the null condition (tokens = 0) and with the
    first k tokens, on the same noise for every row."""
    from zoo.flow.rectified import noise_path

    latents = torch.cat([tokenizer.encode_latents(b) for b in batches(real, 50)])
    codes = torch.cat([tokenizer.encode(b)[0] for b in batches(latents, 50)])
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0)).to(latents)
    rows = []
    for t_value in times:
        t = torch.full((len(latents),), float(t_value), device=latents.device)
        noised, target = noise_path(latents, noise, t)
        for k in [0, *ks]:  # k = 0: the null condition
            keep = torch.full_like(t, max(k, 1), dtype=torch.long)
            null = torch.full_like(t, k == 0, dtype=torch.bool)
            squared_error = 0.0
            for i in range(0, len(latents), 50):
                part = slice(i, i + 50)
                velocity = tokenizer.velocity(noised[part], t[part], codes[part], keep[part], null[part])
                squared_error += (velocity.float() - target[part].float()).square().sum().item()
            rows.append({"system": f"decoder t={t_value:g} " + ("null condition" if k == 0 else f"k={k}"),
                         "t": float(t_value), "tokens": k, "velocity_mse": squared_error / target.numel()})
    return rows


def complexity(spec) -> int:
    """Shapes drawn plus one for a textured background: 1 (one shape on a plain background) .. 4."""
    return spec.count + (spec.texture != "plain")


def png_bytes(images: torch.Tensor) -> list[int]:
    """images [B, 3, S, S] in [-1, 1] -> each image's size as an 8-bit PNG file (PIL, default compression)."""
    import io

    from PIL import Image

    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    sizes = []
    for array in pixels:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        sizes.append(buffer.tell())
    return sizes


def spearman(a, b) -> tuple[float, float]:
    """Spearman's rho and its p-value; (0, 1) when either side is constant (no ranking, no correlation)."""
    from scipy.stats import spearmanr

    if len(set(a)) < 2 or len(set(b)) < 2:
        return 0.0, 1.0
    rho, p_value = spearmanr(a, b)
    return float(rho), float(p_value)


@torch.no_grad()
def karl_rows(karl, real, specs, max_errors, budgets=(4, 16)) -> tuple[list[dict], dict, dict]:
    """-> (rows, {max_error: (rho, p) against the proxy}, {max_error: (rho, p) against PNG bytes})."""
    scores = torch.tensor([complexity(s) for s in specs])
    png = png_bytes(real)
    levels = sorted(set(scores.tolist()))
    # How hard each complexity level is, next to the proxy: the mean absolute pixel error of the VAE alone
    # (the floor of any tokenizer over its latents) and of KARL with its first k tokens, then all of them.
    vae = torch.cat([karl.decode_latents(karl.encode_latents(b)) for b in batches(real, 50)])
    ids = torch.cat([karl.tokenize(b).ids for b in batches(real, 50)])
    errors = {"vae alone": (0, karl.image_error(vae, real))}
    for k in [b for b in budgets if b < karl.max_tokens] + [karl.max_tokens]:
        recon = torch.cat([karl.detokenize(b[:, :k]) for b in batches(ids, 50)])
        name = "karl all tokens" if k == karl.max_tokens else f"karl first {k} tokens"
        errors[name] = (k, karl.image_error(recon, real))
    rows, correlations, png_correlations = [], {}, {}
    for name, (k, error) in errors.items():
        for level in levels:
            rows.append({"system": name, "tokens": k, "complexity": level, "images": int((scores == level).sum()),
                         "mean_error": error[scores == level].mean().item()})
    for error in max_errors:
        counts = torch.cat([karl.tokenize(b, max_error=error).num_tokens for b in batches(real, 50)]).float()
        rho, p_value = spearman(scores.tolist(), counts.tolist())
        correlations[error] = (rho, p_value)
        for level in levels:
            chosen = counts[scores == level]
            rows.append({"system": f"karl max_error={error}", "complexity": level, "images": len(chosen),
                         "mean_tokens": chosen.mean().item(), "spearman_rho": rho})
        rows += size_rows(counts, scores, [s.size for s in specs], f"karl max_error={error}")
        png_correlations[error] = spearman(png, counts.tolist())
        rows.append({"system": f"karl max_error={error}: tokens against PNG bytes", "images": len(png),
                     "png_bytes": sum(png) / len(png), "spearman_rho": png_correlations[error][0]})
    rows.append({"system": "PNG bytes against the proxy", "images": len(png), "png_bytes": sum(png) / len(png),
                 "spearman_rho": spearman(scores.tolist(), png)[0]})
    return rows, correlations, png_correlations


def size_rows(counts: torch.Tensor, scores: torch.Tensor, sizes: list[str], name: str) -> list[dict]:
    """The proxy leaves out how large the shapes are, and large shapes come alone (complexity 1 or 2):
    one row with the Spearman rho of the token counts against the shapes' size, then one per size with
    its mean count and the rho against complexity among images whose shapes have that size."""
    size_rank = [list(SIZES).index(s) for s in sizes]
    rows = [{"system": f"{name}: tokens against shape size", "images": len(sizes),
             "spearman_rho": spearman(size_rank, counts.tolist())[0]}]
    for size, keep in size_masks(sizes).items():
        rows.append({"system": f"{name}: {size} shapes", "images": int(keep.sum()),
                     "mean_tokens": counts[keep].mean().item(),
                     "spearman_rho": spearman(scores[keep].tolist(), counts[keep].tolist())[0]})
    return rows


@torch.no_grad()
def generation_rows(pipe, classifier, real, ks, images_per_k, decode_kwargs, ar_kwargs) -> list[dict]:
    num_classes = pipe.transformer.config.num_classes
    labels = torch.arange(images_per_k) % num_classes
    rows = []
    for k in ks:
        started, samples = time.perf_counter(), []
        for i, chunk in enumerate(batches(labels, 50)):
            out = pipe(class_labels=chunk, num_tokens=k, output_type="pt", generator=torch.Generator().manual_seed(i),
                       **decode_kwargs, **ar_kwargs)
            samples.append(out.images * 2 - 1)
        seconds = time.perf_counter() - started
        fake = torch.cat(samples)
        rows.append({"system": f"flextok-ar k={k}", "tokens": k, "shapes_fid": shapes_fid(classifier, batches(real),
                                                                                           batches(fake)),
                     "class_accuracy": class_accuracy(classifier, fake, labels), "images_per_s": len(fake) / seconds})
    return rows


def load_optional(name: str):
    import zoo

    return None if name in ("none", "") else zoo.load(name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flextok", default="flextok-shapes", help="FlexTok tokenizer, or 'none'")
    p.add_argument("--karl", default="karl-shapes", help="KARL tokenizer, or 'none'")
    p.add_argument("--ar", default="flextok-ar-shapes", help="FlexTokPipeline with a transformer, or 'none'")
    p.add_argument("--classifier", default="shapes-classifier")
    p.add_argument("--images", type=int, default=500, help="test images for reconstruction and KARL")
    p.add_argument("--gen-images", type=int, default=200, help="generated images per token count")
    p.add_argument("--gen-tokens", type=int, nargs="+", default=[8, 32, 128], help="token counts to generate "
                   "(clamped to what the AR model makes)")
    p.add_argument("--max-errors", type=float, nargs="+", default=[0.02, 0.04], help="KARL target errors")
    p.add_argument("--probe-times", type=float, nargs="*", default=[0.5, 0.8, 1.0],
                   help="times t of the decoder probe (none: skip it)")
    p.add_argument("--steps", type=int, default=20, help="Euler steps of the flow decoder")
    p.add_argument("--decoder-guidance", type=float, default=3.0, help="flow decoder CFG scale (1 = off)")
    p.add_argument("--no-apg", action="store_true", help="plain CFG instead of APG in the decoder")
    p.add_argument("--guidance-scale", type=float, default=2.0, help="AR model CFG scale")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="a few images; results to flextok.quick.json")
    p.add_argument("--name", default="flextok", help="results/<name>.json and its BENCHMARKS.md section (another "
                                                     "name keeps a partial run, e.g. KARL alone, apart)")
    args = p.parse_args(argv)
    n, gen_n = (min(args.images, 40), min(args.gen_images, 20)) if args.quick else (args.images, args.gen_images)
    torch.set_num_threads(2)
    classifier = load_optional(args.classifier).eval()
    real, labels = real_images("test", n, args.size)
    decode_kwargs = {"num_inference_steps": args.steps, "apg": not args.no_apg}
    rows, claims = [], []

    tokenizer = load_optional(args.flextok)
    if tokenizer is not None:
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer).eval()
        ks = powers_of_two(tokenizer.num_registers)
        ceiling, *recon = reconstruction_rows(tokenizer, classifier, real, labels, ks,
                                              {**decode_kwargs, "guidance_scale": args.decoder_guidance})
        rows += [ceiling, *recon]
        first, last = recon[0], recon[-1]
        claims.append(claim("reconstruction quality rises with the number of tokens (PSNR and Shapes-rFID at "
                            f"k={last['tokens']} better than at k=1)",
                            last["psnr_db"] > first["psnr_db"] and last["shapes_rfid"] < first["shapes_rfid"],
                            f"PSNR {first['psnr_db']:.1f} -> {last['psnr_db']:.1f} dB, rFID "
                            f"{first['shapes_rfid']:.0f} -> {last['shapes_rfid']:.0f}"))
        if args.probe_times:
            rows += decoder_rows(tokenizer, real, ks, args.probe_times)

    karl = load_optional(args.karl)
    if karl is not None:
        data = ShapesDataset("test", size=args.size, length=n)
        karl_out, correlations, png_correlations = karl_rows(karl.eval(), real, [data.spec(i) for i in range(n)],
                                                             args.max_errors)
        rows += karl_out
        for error, (rho, p_value) in correlations.items():
            claims.append(claim(f"KARL spends more tokens on more complex images (max_error {error}: Spearman rho > 0, "
                                "p < 0.05)", rho > 0 and p_value < 0.05, f"rho {rho:.2f}, p {p_value:.2g}"))
        for error, (rho, p_value) in png_correlations.items():
            claims.append(claim(f"KARL spends more tokens on images of a longer lossless code (max_error {error}: "
                                "Spearman rho against PNG bytes > 0, p < 0.05)", rho > 0 and p_value < 0.05,
                                f"rho {rho:.2f}, p {p_value:.2g}"))

    pipe = load_optional(args.ar)
    if pipe is not None:
        gen_ks = sorted({min(k, pipe.max_tokens) for k in args.gen_tokens})
        gen = generation_rows(pipe, classifier, real, gen_ks, gen_n,
                              {**decode_kwargs, "decoder_guidance_scale": args.decoder_guidance},
                              {"guidance_scale": args.guidance_scale})
        rows += gen
        few, most = gen[0], gen[-1]
        chance = 1 / pipe.transformer.config.num_classes  # both at chance would "hold" without meaning anything
        claims.append(claim(f"generation stays good at few tokens (class accuracy at k={few['tokens']} at least 80% "
                            f"of that at k={most['tokens']}, which is above twice chance)",
                            few["class_accuracy"] >= 0.8 * most["class_accuracy"]
                            and most["class_accuracy"] > 2 * chance,
                            f"{100 * few['class_accuracy']:.0f}% vs {100 * most['class_accuracy']:.0f}% (chance "
                            f"{100 * chance:.0f}%), Shapes-FID {few['shapes_fid']:.0f} vs {most['shapes_fid']:.0f}"))

    command = " ".join(["python benchmarks/flextok.py", *(sys.argv[1:] if argv is None else argv)])
    path = write_results(args.name, command, machine_description(2), rows, claims, quick=args.quick,
                         columns=["system", "tokens", "psnr_db", "shapes_rfid", "shapes_fid", "class_accuracy",
                                  "images_per_s", "t", "velocity_mse", "complexity", "images", "png_bytes",
                                  "mean_tokens", "mean_error", "spearman_rho"],
                         notes=f"{n} Shapes test images at {args.size}px ({gen_n} generated per token count); "
                               f"flow decoder: {args.steps} Euler steps, CFG {args.decoder_guidance}"
                               f"{'' if args.no_apg else ' with APG'}; decoder rows: velocity MSE over the same test "
                               f"images, one noise draw (seed 0); features of `{args.classifier}`.")
    report(rows, claims, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
