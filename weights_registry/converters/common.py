"""Helpers every converter uses: safe checkpoint loading and strict key checks."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping

import torch


def load_torch_checkpoint(path: str | os.PathLike) -> dict:
    """Load an original `.pt`/`.pth` checkpoint without executing pickled code.

    `weights_only=True` admits tensors and plain containers; `argparse.Namespace` (the `args` entry of
    LlamaGen's training checkpoints) is the one extra type allowed: it only holds attributes.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass the path to the downloaded file.")
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def pick_state_dict(checkpoint: Mapping, keys: Iterable[str] = ("model",)) -> dict:
    """The first of `keys` present in the checkpoint, or the checkpoint itself if it is a raw state dict."""
    for key in keys:
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            return dict(checkpoint[key])
    if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return dict(checkpoint)  # e.g. LlamaGen's FSDP checkpoints: a raw state dict
    raise ValueError(f"no state dict under {list(keys)} in the checkpoint (top-level keys: {sorted(checkpoint)}).")


def check_keys(state_dict: Mapping, expected: Iterable[str], ignore: Iterable[str] = (), what: str = "checkpoint"):
    """Fail with the missing and unexpected keys, so a wrong or corrupt checkpoint is named precisely."""
    expected, ignore = set(expected), set(ignore)
    present = set(state_dict) - ignore
    missing, unexpected = sorted(expected - present), sorted(present - expected)
    if missing or unexpected:
        raise ValueError(f"{what} does not match the expected layout.\n  missing keys: {missing}\n"
                         f"  unexpected keys: {unexpected}")


def check_shape(name: str, tensor: torch.Tensor, shape: tuple):
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(shape)}: the checkpoint does "
                         "not match the config (wrong size or num_heads?).")


def load_converted(model, state_dict: dict, what: str):
    """Check a converted state dict against the model (keys, then shapes), load it as float32, return
    the model in eval mode."""
    expected = model.state_dict()
    check_keys(state_dict, expected, what=what)
    for name, tensor in state_dict.items():
        check_shape(name, tensor, expected[name].shape)
    model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    return model.eval()
