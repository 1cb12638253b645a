"""Rectified flow for learnt decoders (FlexTok): the noising path, its training target, time sampling,
guidance, and Euler sampling through diffusers' flow-matching scheduler.

Convention (FlexTok's `MinRFPipeline` and diffusers' `FlowMatchEulerDiscreteScheduler` agree on it):
x_t = t * noise + (1 - t) * x0 with t in [0, 1], pure noise at t = 1; the model predicts the velocity
v = noise - x0, and an Euler step from t to t' < t is x <- x + (t' - t) * v.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from diffusers import FlowMatchEulerDiscreteScheduler


def noise_path(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (x_t, velocity target) for per-sample times t [B]."""
    t = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return t * noise + (1 - t) * x0, noise - x0


def logit_normal_times(batch_size: int, mean: float = 0.0, std: float = 1.0, generator=None, device=None):
    """t = sigmoid(N(mean, std)) per sample: FlexTok's training time distribution (`ln=True`)."""
    return torch.sigmoid(mean + std * torch.randn(batch_size, generator=generator, device=device))


def uniform_time_scheduler(num_steps: int) -> FlowMatchEulerDiscreteScheduler:
    """A diffusers Euler scheduler on FlexTok's grid t = 1, 1 - 1/N, ..., 1/N (then 0)."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive int, got {num_steps!r}.")
    from diffusers import FlowMatchEulerDiscreteScheduler  # imported on use: keeps `import zoo.flow` light

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / num_steps, num_steps).tolist())
    return scheduler


class Guidance:
    """Classifier-free guidance on velocities: plain CFG u + s (c - u), or APG (Sadat et al., arXiv
    2410.02416) as FlexTok runs it (momentum -0.5, norm threshold 2.5, eta 0, projection over every
    non-batch dim), through diffusers' `normalized_guidance`. One instance per sampling run (APG keeps
    a momentum buffer)."""

    def __init__(self, scale: float, apg: bool = False, momentum: float = -0.5, norm_threshold: float = 2.5,
                 eta: float = 0.0):
        from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer

        self.scale, self.apg, self.eta, self.norm_threshold = scale, apg, eta, norm_threshold
        self.momentum = MomentumBuffer(momentum) if apg else None

    @property
    def active(self) -> bool:
        return self.scale != 1.0

    def __call__(self, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
        if not self.apg:
            return uncond + self.scale * (cond - uncond)
        from diffusers.guiders.adaptive_projected_guidance import normalized_guidance

        # APG's update is added to the conditional prediction with weight (scale - 1)
        return normalized_guidance(cond, uncond, self.scale - 1, self.momentum, eta=self.eta,
                                   norm_threshold=self.norm_threshold, use_original_formulation=True)


@torch.no_grad()
def sample_euler(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
                 num_steps: int, callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t) from t = 1 (x = noise) to t = 0 in `num_steps` uniform Euler
    steps; `velocity` gets x and t [B] and returns a tensor shaped like x."""
    scheduler = uniform_time_scheduler(num_steps)
    x = noise
    for i, timestep in enumerate(scheduler.timesteps):
        t = torch.full((x.shape[0],), float(scheduler.sigmas[i]), device=x.device)
        x = scheduler.step(velocity(x, t), timestep, x, return_dict=False)[0]
        if callback is not None:
            callback(i)
    return x
