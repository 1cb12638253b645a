"""Recipe `ctf-shapes`: coarse-to-fine prediction (CTF) over a tokenizer's token grids.

    zoo train ctf-shapes --tokens runs/shapes-train.tokens.safetensors --vq vq-shapes --out runs/ctf \\
        --clusters 128 --cluster-method kmeans

1. The code-to-cluster table: k-means over the l2-normalised codebook (or random, the ablation).
2. Stage 1: LlamaGen's GPT over the coarse labels (vocabulary k, class token, 2D RoPE, CFG class
   dropout), next-token cross-entropy: the baseline recipe with a smaller vocabulary.
3. Stage 2, the refiner: a bidirectional transformer over the ground-truth coarse grid and the class,
   cross-entropy against the fine labels at every position, optionally over the members of each
   position's cluster only (`--mask-fine-logits`, the default).
The two stages are independent given the table and train one after the other (`--stage` picks one).
The result is a `CTFPipeline` in `<out>/pipeline`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.data.tokens import TokenDataset
from zoo.train.llamagen_shapes import add_arguments, build_model, next_token_loss, train_config
from zoo.train.loop import is_main_process, train


class CoarseTokens(torch.utils.data.Dataset):
    """A token file seen through a cluster table: {"ids": coarse labels, "fine": codebook ids, "label"}."""

    def __init__(self, data: TokenDataset, clusters):
        self.data, self.clusters = data, clusters
        self.coarse_ids = clusters.coarse(data.ids)  # [N, h, w]
        self.metadata, self.labels, self.grid = data.metadata, data.labels, data.grid

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return {"ids": self.coarse_ids[index].flatten(), "fine": self.data.ids[index].flatten(),
                "label": self.data.labels[index]}


def refiner_loss(clusters, mask_fine_logits: bool):
    """Cross-entropy of the fine labels given the whole coarse grid and the class."""

    def loss_fn(model, batch):
        coarse, fine = batch["ids"], batch["fine"]  # [B, T] each
        logits = model(coarse, class_labels=batch["label"])[:, model.config.num_prefix_tokens:]  # [B, T, V]
        if mask_fine_logits:
            logits = clusters.to(logits.device).restrict_logits(logits, coarse)
        loss = F.cross_entropy(logits.flatten(0, 1), fine.flatten())
        return loss, {"accuracy": (logits.argmax(-1) == fine).float().mean().item()}

    return loss_fn


def fit_clusters(vq, args, out: Path):
    from tokenizers_visual import CodeClusters

    path = out / "clusters"
    if (path / "config.json").is_file():  # a resumed run keeps its table
        return CodeClusters.from_pretrained(path)
    clusters = CodeClusters.fit(vq.codebook, args.clusters, method=args.cluster_method, seed=args.seed)
    if is_main_process():
        clusters.save_pretrained(path)
    return clusters


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="zoo train ctf-shapes", description=__doc__.splitlines()[0])
    add_arguments(p)
    p.add_argument("--clusters", type=int, default=128,
                   help="number of coarse labels k; the paper's 16384 -> 512 is 32 codes per cluster, which is 128 "
                        "for vq-shapes' 4096 codes")
    p.add_argument("--cluster-method", default="kmeans", choices=["kmeans", "random"])
    p.add_argument("--mask-fine-logits", action=argparse.BooleanOptionalAction, default=True,
                   help="restrict the refiner's logits to each position's cluster")
    p.add_argument("--refiner-steps", type=int, default=None, help="default: --steps")
    p.add_argument("--refiner-layers", type=int, default=None, help="default: --layers")
    p.add_argument("--stage", default="both", choices=["both", "coarse", "refiner"],
                   help="train one stage only; the pipeline is saved once both exist in --out")
    args = p.parse_args(argv)

    import zoo
    from pipelines import CTFPipeline
    from zoo.ar import ARTransformer

    out = Path(args.out)
    vq = zoo.load(args.vq)
    tokens = TokenDataset(args.tokens)
    clusters = fit_clusters(vq, args, out)
    data = CoarseTokens(tokens, clusters)
    k, codebook_size = args.clusters, vq.config.codebook_size

    if args.stage in ("both", "coarse"):
        stage1 = train(build_model(data, args, k), data, next_token_loss, train_config(args, str(out / "coarse"), args.steps))
        if is_main_process():
            stage1.save_pretrained(out / "coarse" / "model")
    if args.stage in ("both", "refiner"):
        refiner = build_model(data, args, codebook_size, input_vocab_size=k, attention="bidirectional",
                              class_dropout_prob=0.0, num_layers=args.refiner_layers or args.layers)
        refiner = train(refiner, data, refiner_loss(clusters, args.mask_fine_logits),
                        train_config(args, str(out / "refiner"), args.refiner_steps or args.steps))
        if is_main_process():
            refiner.save_pretrained(out / "refiner" / "model")

    if is_main_process() and all((out / stage / "model" / "config.json").is_file() for stage in ("coarse", "refiner")):
        pipe = CTFPipeline(transformer=ARTransformer.from_pretrained(out / "coarse" / "model"),
                           refiner=ARTransformer.from_pretrained(out / "refiner" / "model"), clusters=clusters,
                           vqvae=vq, class_names=tokens.metadata.get("class_names"),
                           mask_fine_logits=args.mask_fine_logits)
        pipe.save_pretrained(out / "pipeline")
        print(f"saved {out}/pipeline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
