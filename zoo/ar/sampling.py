"""Sampling: temperature, top-k, top-p, per-row generators, and classifier-free guidance schedules."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def check_sampling_args(temperature: float, top_k: int, top_p: float):
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}.")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0 = no top-k), got {top_k!r}.")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p must lie in (0, 1] (1 = no nucleus filtering), got {top_p!r}.")


def logits_to_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """float32 probabilities [..., V] after temperature, top-k and top-p (LlamaGen's order).

    temperature 0 gives the one-hot distribution of the argmax (greedy decoding).
    """
    logits = logits.float()
    if temperature == 0:
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    if temperature != 1:
        logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(-1)
        # drop a token when the tokens ranked above it already hold more than top_p
        drop_sorted = sorted_probs.cumsum(-1) - sorted_probs > top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), -math.inf)
    return logits.softmax(-1)


def normalize_generators(generator, batch_size: int) -> list | torch.Generator | None:
    """Check a generator argument: None, one torch.Generator, or a list with one per sample."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, Sequence) and all(isinstance(g, torch.Generator) for g in generator):
        if len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch_size}; pass one per sample "
                             "or a single torch.Generator.")
        return list(generator)
    raise ValueError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}.")


def sample_from_probs(probs: torch.Tensor, generator=None) -> torch.Tensor:
    """Draw one token per distribution by inverting its CDF: probs [B, k, V] -> ids [B, k].

    One uniform number per token (torch.multinomial on CPU draws V exponentials instead, which costs
    more than the forward pass at batch 16). The CDF is summed in float64, so tokens of probability 0
    are never drawn. With a list of generators, row i draws from generator[i] only: sample i of a
    batch equals a single run seeded like generator[i]. No host synchronisation.
    """
    B, k, V = probs.shape
    if isinstance(generator, list):
        u = torch.cat([torch.rand(1, k, 1, generator=g, device=g.device) for g in generator])
    else:
        u = torch.rand(B, k, 1, generator=generator, device=probs.device if generator is None else generator.device)
    cdf = probs.double().cumsum(-1)  # [B, k, V]
    ids = torch.searchsorted(cdf, u.to(probs.device).double() * cdf[..., -1:], right=True)
    return ids.clamp_(max=V - 1).squeeze(-1)


# ------------------------------------------------------------------------- guidance schedules
class GuidanceSchedule:
    """Classifier-free guidance scale per generated token: logits = u + scale * (c - u).

    Called with the indices [k] of the tokens being sampled (of num_tokens in all) and the step
    (of num_steps); returns the scales [k]. A scale of 1 everywhere means no guidance.

    Examples:
        A schedule that guides only the second half of the tokens:

        >>> class SecondHalf(GuidanceSchedule):
        ...     def __call__(self, token_index, num_tokens, step, num_steps):
        ...         return 1.0 + 2.0 * (token_index >= num_tokens // 2).float()
        >>> SecondHalf()(torch.arange(4), 4, 0, 4)
        tensor([1., 1., 3., 3.])
        >>> # generate(model, 256, class_labels=labels, guidance_scale=SecondHalf())
    """

    def __call__(self, token_index: torch.Tensor, num_tokens: int, step: int, num_steps: int) -> torch.Tensor:
        raise NotImplementedError

    @property
    def is_identity(self) -> bool:
        return False


def _check_scale(name: str, value: float):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0 (1 = no guidance), got {value!r}.")


class ConstantGuidance(GuidanceSchedule):
    """The same scale for every token (LlamaGen); what a number passed as `guidance_scale` becomes.

    Examples:
        >>> ConstantGuidance(4.0)(torch.arange(3), 256, 0, 256)
        tensor([4., 4., 4.])
    """

    def __init__(self, scale: float):
        _check_scale("guidance_scale", scale)
        self.scale = float(scale)

    def __call__(self, token_index, num_tokens, step, num_steps):
        return torch.full(token_index.shape, self.scale, device=token_index.device)

    @property
    def is_identity(self):
        return self.scale == 1.0

    def __repr__(self):
        return f"ConstantGuidance({self.scale})"


class LinearGuidance(GuidanceSchedule):
    """A linear ramp from `start` to `scale`, over the steps (VAR: scale 1 + cfg over the scales) or,
    with per_token=True, over the token index (a per-token ramp, as Token-Shuffle's scheduler).
    With ramp_fraction < 1 the ramp ends after that share of the tokens (or steps) and the scale
    stays at `scale` from there: 0.5 is the "half-linear" ramp reported for Token-Shuffle.

    Examples:
        >>> ramp = LinearGuidance(5.0, per_token=True, ramp_fraction=0.5)   # half-linear over 5 tokens
        >>> ramp(torch.arange(5), 5, 0, 5)
        tensor([1., 3., 5., 5., 5.])
        >>> LinearGuidance(3.0)(torch.arange(2), 8, step=1, num_steps=3)  # over the steps (VAR's scales)
        tensor([2., 2.])
    """

    def __init__(self, scale: float, start: float = 1.0, per_token: bool = False, ramp_fraction: float = 1.0):
        _check_scale("guidance_scale", scale)
        _check_scale("start", start)
        if not (isinstance(ramp_fraction, (int, float)) and 0 < ramp_fraction <= 1):
            raise ValueError(f"ramp_fraction must lie in (0, 1], got {ramp_fraction!r}.")
        self.scale, self.start, self.per_token = float(scale), float(start), per_token
        self.ramp_fraction = float(ramp_fraction)

    def __call__(self, token_index, num_tokens, step, num_steps):
        if self.per_token:
            progress = token_index.float() / max(num_tokens - 1, 1)
        else:
            progress = torch.full(token_index.shape, step / max(num_steps - 1, 1), device=token_index.device)
        progress = (progress / self.ramp_fraction).clamp(max=1.0)
        return self.start + (self.scale - self.start) * progress

    @property
    def is_identity(self):
        return self.scale == 1.0 and self.start == 1.0

    def __repr__(self):
        return (f"LinearGuidance({self.scale}, start={self.start}, per_token={self.per_token}, "
                f"ramp_fraction={self.ramp_fraction})")


def as_guidance(guidance) -> GuidanceSchedule:
    """A float becomes ConstantGuidance; a schedule passes through."""
    if isinstance(guidance, GuidanceSchedule):
        return guidance
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)):
        raise ValueError(f"guidance_scale must be a number >= 0 or a GuidanceSchedule, got {guidance!r}.")
    return ConstantGuidance(guidance)


def apply_guidance(logits: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Rows [cond; uncond] of logits [2B, k, V] -> guided logits [B, k, V] with scales [k]."""
    cond, uncond = logits.chunk(2)
    return uncond + scales[None, :, None] * (cond - uncond)
