"""Process-group facts shared by training and evaluation."""

from __future__ import annotations

import os

import torch


def cpu_processes() -> bool:
    """True when several processes run without a GPU (`accelerate launch --multi_gpu --num_processes N`
    on CPUs): accelerate picks its MULTI_CPU mode (gloo) only when told to use the CPU."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def end_processes() -> None:
    """Wait for every process, then close the process group, if one is open: the last call of a script
    run under `accelerate launch`. A gloo group left open when the interpreter exits can abort a process
    ("terminate called without an active exception") and fail a run whose work was done."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
