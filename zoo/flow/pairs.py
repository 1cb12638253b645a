"""(noise, tokens) pairs from an AR teacher through the flow map: the training data of distilled decoding.

    write_pairs(pipe, "runs/pairs", num_pairs=20000)   # shards pairs-00000.safetensors, ...
    data = PairDataset("runs/pairs")                   # items {"noise", "ids", "label"}

Each shard is generated from its own seed (`seed + shard index`) and written atomically, so a run
that stops resumes where it left off and gives the same pairs as an uninterrupted one. Classes are
balanced: pair i has class i mod num_classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from zoo.ar import generate
from zoo.flow.dirac import DiracFlowSampler
from zoo.utils.io import atomic_path

SHARD = "pairs-{:05d}.safetensors"


@torch.no_grad()
def write_pairs(pipe, out_dir: str | Path, num_pairs: int, shard_size: int = 256, batch_size: int = 64,
                guidance_scale: float = 1.0, num_flow_steps: int = 32, seed: int = 0, progress: bool = True,
                process_index: int = 0, num_processes: int = 1) -> Path:
    """Generate `num_pairs` pairs with a class-conditional image pipeline's transformer and codebook.

    noise [N, T, C] ~ N(0, I) (C = codebook dimension), ids [N, T]: the teacher's tokens reached from
    that noise by the flow map at every position (with CFG `guidance_scale`), labels [N].
    Several processes share the work with process_index / num_processes (shard i goes to process
    i mod num_processes); the shards do not depend on how the work was split.
    """
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    if not isinstance(num_pairs, int) or num_pairs < 1:
        raise ValueError(f"num_pairs must be a positive integer, got {num_pairs!r}.")
    if shard_size < 1 or batch_size < 1:
        raise ValueError("shard_size and batch_size must be >= 1.")
    transformer, codebook = pipe.transformer, pipe.vqvae.codebook.detach()
    num_tokens, num_classes = transformer.seq_len, transformer.config.num_classes
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"num_pairs": num_pairs, "shard_size": shard_size, "guidance_scale": guidance_scale,
                "num_flow_steps": num_flow_steps, "seed": seed, "num_tokens": num_tokens,
                "codebook_dim": codebook.shape[1]}
    settings_file = out / "pairs.json"
    if settings_file.is_file() and json.loads(settings_file.read_text()) != settings:
        raise ValueError(f"{out} holds pairs made with other settings ({settings_file.read_text()}); "
                         "pass an empty folder or the same settings to resume.")
    if process_index == 0:
        settings_file.write_text(json.dumps(settings, indent=1))
    num_shards = -(-num_pairs // shard_size)
    mine = range(process_index, num_shards, num_processes)
    for shard in tqdm(mine, desc="pairs", disable=not (progress and process_index == 0)):
        path = out / SHARD.format(shard)
        if path.is_file():
            continue
        first, count = shard * shard_size, min(shard_size, num_pairs - shard * shard_size)
        labels = torch.arange(first, first + count) % num_classes
        noise = torch.randn(count, num_tokens, codebook.shape[1], generator=torch.Generator().manual_seed(seed + shard))
        ids = torch.cat([
            generate(transformer, num_tokens, class_labels=labels[i:i + batch_size].to(transformer.device),
                     guidance_scale=guidance_scale,
                     sampler=DiracFlowSampler(noise[i:i + batch_size], codebook, num_flow_steps)).tokens.cpu()
            for i in range(0, count, batch_size)])
        with atomic_path(path) as tmp:
            save_file({"noise": noise.contiguous(), "ids": ids.contiguous(), "labels": labels}, str(tmp))
    return out


class PairDataset(torch.utils.data.Dataset):
    """The pairs of a `write_pairs` folder: items {"noise": [T, C], "ids": [T], "label": int}."""

    def __init__(self, folder: str | Path):
        from safetensors.torch import load_file

        shards = sorted(Path(folder).glob("pairs-*.safetensors"))
        if not shards:
            raise FileNotFoundError(f"no pair shards in {folder}; make them with zoo.flow.pairs.write_pairs.")
        parts = [load_file(str(s)) for s in shards]
        self.noise = torch.cat([p["noise"] for p in parts])
        self.ids = torch.cat([p["ids"] for p in parts])
        self.labels = torch.cat([p["labels"] for p in parts])

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        return {"noise": self.noise[index], "ids": self.ids[index], "label": self.labels[index]}
