"""`ARTokenPipeline`: sample token sequences from an `ARTransformer`, no decoder.

The raw output of any zoo AR model: class- or prompt-conditional token ids, e.g. to build datasets of
codes, to inspect a model, or as the first half of an image/audio pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils import BaseOutput

from zoo.ar import ARTransformer

from .base import ZooPipeline


@dataclass
class TokenPipelineOutput(BaseOutput):
    """tokens: [B, num_tokens] ids (a torch tensor, or a NumPy array for output_type="np").

    Examples:
        >>> out = ARTokenPipeline(transformer=model)(class_labels=[1, 2])   # doctest: +SKIP
        >>> out.tokens.shape                                                # doctest: +SKIP
        torch.Size([2, 256])
    """

    tokens: torch.Tensor | np.ndarray


class ARTokenPipeline(ZooPipeline):
    """Class-conditional (or prompt-conditional) token generation.

    >>> pipe = ARTokenPipeline(transformer=ARTransformer(vocab_size=64, hidden_size=64, num_layers=2,
    ...                        num_heads=4, num_classes=10, grid_size=(4, 4)))
    >>> pipe(class_labels=[1, 2], generator=torch.Generator().manual_seed(0)).tokens.shape
    torch.Size([2, 16])
    """

    model_cpu_offload_seq = "transformer"
    _callback_tensor_inputs = ["tokens"]

    def __init__(self, transformer: ARTransformer):
        super().__init__()
        self.register_modules(transformer=transformer)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int] | torch.Tensor | None = None,
        prefix_ids: torch.Tensor | None = None,
        uncond_prefix_ids: torch.Tensor | None = None,
        num_tokens: int | None = None,
        guidance_scale=1.0,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pt",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("tokens",),
    ):
        """Sample `num_tokens` tokens (default: the model's whole sequence) per condition row.

        Args:
            class_labels: one label or a list (class-conditional models); or `prefix_ids` [B, P] prompts.
            guidance_scale: CFG scale (1 = off) or a `zoo.ar.GuidanceSchedule`.
            temperature, top_k, top_p: sampling (temperature 0 = greedy).
            generator: a torch.Generator or one per row.
            output_type: "pt" or "np".
        """
        self.check_choice("output_type", output_type, ("pt", "np"))
        self.check_callback_inputs(callback_on_step_end_tensor_inputs)
        if isinstance(class_labels, int):
            class_labels = [class_labels]
        if class_labels is not None:
            class_labels = torch.as_tensor(class_labels, device=self._execution_device).long()
        num_tokens = self.transformer.seq_len if num_tokens is None else num_tokens
        out = self.generate_tokens(num_tokens, callback_on_step_end, class_labels=class_labels, prefix_ids=prefix_ids,
                                   uncond_prefix_ids=uncond_prefix_ids, guidance_scale=guidance_scale,
                                   temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        tokens = out.tokens.cpu().numpy() if output_type == "np" else out.tokens
        self.maybe_free_model_hooks()
        return TokenPipelineOutput(tokens=tokens) if return_dict else (tokens,)
