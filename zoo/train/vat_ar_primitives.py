"""Recipe `vat-ar-primitives`: class-conditional next-scale AR over VAT tokens of Primitives shapes.

    zoo train vat-primitives --out runs/vat-primitives --steps 4000
    zoo train vat-ar-primitives --vat runs/vat-primitives/model --cache-dir runs/vat-primitives \\
        --out runs/vat-ar-primitives

The cached training shapes (`vat-primitives`' cache) are encoded once into VAT token maps (the Gaussian's
mean, as `VAT.encode`). The model is VAR's transformer as the shared `ARTransformer`: a class token
(10% class dropout for CFG) predicts scale 1; each later scale's positions read the accumulated
reconstruction f_hat of the earlier scales, area-resized to their length, through a linear input layer
(`MultiScaleResidualVQ.teacher_forcing_inputs`), and predict that scale's ids; block-causal attention
over scales, 1D RoPE. Cross-entropy over every token. Saved as a `VAT3DPipeline` in `<out>/pipeline`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.ar import ARTransformer
from zoo.ar.next_scale import next_scale_config
from zoo.data.primitives import CATEGORIES, CachedPrimitives
from zoo.train.loop import add_mixed_precision, cosine_config, is_main_process, train


@torch.no_grad()
def encode_shapes(vat, data: CachedPrimitives, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """All cached shapes -> (flat token ids [N, total], labels [N])."""
    ids, labels = [], []
    for start in range(0, len(data), batch_size):
        items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        points = torch.stack([x["points"] for x in items])
        normals = torch.stack([x["normals"] for x in items])
        ids.append(torch.cat(vat.encode(points, normals), dim=1))
        labels.append(torch.tensor([x["label"] for x in items]))
    return torch.cat(ids), torch.cat(labels)


class TokenMaps(torch.utils.data.Dataset):
    def __init__(self, ids: torch.Tensor, labels: torch.Tensor):
        self.ids, self.labels = ids, labels

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        return {"ids": self.ids[index], "label": self.labels[index]}


def make_loss(quantizer):
    scales = quantizer.scales

    def loss(model, batch):
        ids = batch["ids"]  # [B, total]
        with torch.no_grad():
            inputs = quantizer.teacher_forcing_inputs(list(ids.split(scales, dim=1)))
        logits = model(inputs, class_labels=batch["label"])  # [B, 1 + total - L_1, V]: position t predicts token t
        ce = F.cross_entropy(logits.flatten(0, 1), ids.flatten())
        return ce, {"accuracy": (logits.argmax(-1) == ids).float().mean().item()}
    return loss


def parse(argv):
    p = argparse.ArgumentParser(prog="zoo train vat-ar-primitives", description=__doc__.splitlines()[0])
    p.add_argument("--vat", required=True, help="the VAT tokenizer (folder, built-in name or Hub id)")
    p.add_argument("--cache-dir", required=True, help="folder holding vat-primitives' primitives-train-N cache")
    p.add_argument("--shapes", type=int, default=4000)
    p.add_argument("--points", type=int, default=256, help="surface points per shape to encode (as VAT trained)")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    add_mixed_precision(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)

    import zoo
    from pipelines import VAT3DPipeline

    vat = zoo.load(args.vat).eval()
    cache = Path(args.cache_dir) / f"primitives-train-{args.shapes}.safetensors"
    if not cache.is_file():
        raise SystemExit(f"{cache} does not exist; run `zoo train vat-primitives` with --cache-dir {args.cache_dir}.")
    ids, labels = encode_shapes(vat, CachedPrimitives(cache, num_points=args.points))
    model = ARTransformer(**next_scale_config(
        vat.quantizer, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
        num_classes=len(CATEGORIES), class_dropout_prob=0.1, token_dropout=args.dropout,
        resid_dropout=args.dropout, ffn_dropout=args.dropout, zero_init_head=True))
    config = cosine_config(args, warmup=500, weight_decay=0.05)
    model = train(model, TokenMaps(ids, labels), make_loss(vat.quantizer), config)
    if is_main_process():
        VAT3DPipeline(transformer=model, vat=vat, class_names=CATEGORIES).save_pretrained(f"{args.out}/pipeline")
        print(f"saved {args.out}/pipeline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
