"""Process-group facts shared by training and evaluation."""

from __future__ import annotations

import os

import torch


def cpu_processes() -> bool:
    """True when several processes run without a GPU (`accelerate launch --multi_gpu --num_processes N`
    on CPUs): accelerate picks its MULTI_CPU mode (gloo) only when told to use the CPU."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
