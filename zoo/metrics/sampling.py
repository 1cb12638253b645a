"""Sampling thousands of images for evaluation, split across processes.

Under `accelerate launch --num_processes N` every process generates its share of the requested
images and the shares are gathered on all processes; run plainly, one process does everything.
Image i is drawn with its own generator seeded `seed + i`, so the images do not depend on the
number of processes or the batch size.
"""

from __future__ import annotations

import torch

from zoo.utils.distributed import cpu_processes


def _per_image_generators(indices: list[int], seed: int, device) -> list[torch.Generator]:
    return [torch.Generator(device).manual_seed(seed + i) for i in indices]


@torch.no_grad()
def sample_images(pipe, conditions: list, batch_size: int = 50, seed: int = 0, condition: str = "class_labels",
                  progress: bool = True, **call_kwargs) -> torch.Tensor:
    """One image per condition (a class id, or a prompt with condition="prompt"): [N, 3, H, W] in [-1, 1].

    `pipe` is any image pipeline called as `pipe(<condition>=[...], generator=[...], output_type="pt")`;
    `call_kwargs` go to each call (guidance_scale, temperature, ...). The result is the same on every
    process and for any process count.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if len(conditions) == 0:
        raise ValueError(f"pass at least one condition ({condition}) to sample.")
    state = PartialState(cpu=cpu_processes())
    pipe.set_progress_bar_config(disable=True)
    chunks = []
    with state.split_between_processes(list(range(len(conditions)))) as indices:
        starts = range(0, len(indices), batch_size)
        for start in tqdm(starts, desc="sample", disable=not (progress and state.is_main_process)):
            batch = indices[start:start + batch_size]
            images = pipe(**{condition: [conditions[i] for i in batch]}, output_type="pt",
                          generator=_per_image_generators(batch, seed, pipe.device), **call_kwargs).images
            chunks.append((batch, images.cpu() * 2 - 1))
    if state.num_processes > 1:
        chunks = gather_object(chunks)
    order = [i for batch, _ in chunks for i in batch]
    images = torch.cat([images for _, images in chunks])
    return images[torch.tensor(order).argsort()]
