import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import huggingface_hub
import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


def tiny_transformer(**overrides):
    """A 2-layer class-conditional ARTransformer over a 4x4 grid (LlamaGen layout), seeded."""
    from zoo.ar import ARTransformer

    torch.manual_seed(0)
    config = dict(vocab_size=64, hidden_size=64, num_layers=2, num_heads=4, num_classes=10, grid_size=(4, 4))
    return ARTransformer(**{**config, **overrides}).eval()


def tiny_vq():
    """A tiny VQModel (64 codes of 4 dims, downsampling 2), seeded, in eval mode."""
    from tokenizers_visual.vq import VQModel

    torch.manual_seed(0)
    return VQModel(codebook_size=64, codebook_dim=4, encoder_ch=32, decoder_ch=32, encoder_ch_mult=[1, 1],
                   decoder_ch_mult=[1, 1], num_res_blocks=1, z_channels=32).eval()


@pytest.fixture
def tiny_model():
    return tiny_transformer()


def trace_compiled_path(monkeypatch, *models):
    """compile=True without inductor (minutes on a CPU): `ARTransformer.compiled_decode` returns the eager
    `forward_hidden`, so a test runs the path torch.compile traces (fixed shapes over the whole static cache)."""
    import zoo.ar.transformer

    monkeypatch.setattr(zoo.ar.transformer.torch, "compile", lambda fn, **options: fn)
    for model in models:
        monkeypatch.setattr(model, "_compiled_decode", None)


def free_port() -> int:
    """A TCP port nothing listens on now, for a process group's rendezvous (not a fixed one another run may hold)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE is read once at import: patch the constant (shared/reference/diffusers.md)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def populate_hub_cache(cache_dir: Path, repo_id: str, folder: Path, commit: str = "0" * 40) -> Path:
    """Lay out `folder` as huggingface_hub's cache holds a downloaded snapshot of `repo_id`."""
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    tree = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        blob_id = hashlib.sha256(data).hexdigest()
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        (repo / "blobs" / blob_id).write_bytes(data)
        link = repo / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(repo / "blobs" / blob_id, link.parent), link)
        tree[rel] = {"size": len(data), "blob_id": blob_id}
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "trees").mkdir(exist_ok=True)
    (repo / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": tree}))
    return repo / "snapshots" / commit


@pytest.fixture
def saved_pipeline(tmp_path):
    from pipelines import ARTokenPipeline

    pipe = ARTokenPipeline(transformer=tiny_transformer())
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "pipe")
    yield pipe, tmp_path / "pipe"
    shutil.rmtree(tmp_path / "pipe", ignore_errors=True)
