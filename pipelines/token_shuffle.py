"""`TokenShufflePipeline`: text-to-image with s x s token windows per AR step (Token-Shuffle).

The prompt (word tokens, left-padded, ending in <soi>) is the prefix of one transformer that then
emits the image window by window through the shared engine (`WindowStep`); CFG runs against the
empty prompt with a per-token schedule; the token grid goes to the VQ decoder.
"""

from __future__ import annotations

import torch
from diffusers.image_processor import VaeImageProcessor

from tokenizers_visual import VQModel
from zoo.ar import ConstantGuidance, GuidanceSchedule, LinearGuidance
from zoo.ar.token_shuffle import TokenShuffleTransformer, WindowStep
from zoo.data.text import encode_prompts

from .base import ZooPipeline

CFG_SCHEDULES = ("constant", "linear", "half-linear")


def guidance_schedule(schedule, scale: float) -> GuidanceSchedule:
    """"constant" (LlamaGen), "linear" (a per-token ramp from 1 to the scale) or "half-linear" (the ramp
    over the first half of the tokens, then constant: the paper's reported scheduler), or a schedule."""
    if isinstance(schedule, GuidanceSchedule):
        return schedule
    if schedule == "constant":
        return ConstantGuidance(scale)
    if schedule == "linear":
        return LinearGuidance(scale, per_token=True)
    if schedule == "half-linear":
        return LinearGuidance(scale, per_token=True, ramp_fraction=0.5)
    raise ValueError(f"cfg_schedule={schedule!r}; pass one of {CFG_SCHEDULES} or a zoo.ar.GuidanceSchedule.")


class TokenShufflePipeline(ZooPipeline):
    """Text-to-image generation with Token-Shuffle.

    >>> pipe = zoo.load("token-shuffle-shapes")                                            # doctest: +SKIP
    >>> pipe("two small red stars at the top left on a blue plain background").images[0]  # doctest: +SKIP
    """

    model_cpu_offload_seq = "transformer->vqvae"
    _callback_tensor_inputs = ["tokens"]

    def __init__(self, transformer: TokenShuffleTransformer, tokenizer, vqvae: VQModel):
        super().__init__()
        if transformer.config.codebook_size != vqvae.config.codebook_size:
            raise ValueError(f"the transformer's image vocabulary ({transformer.config.codebook_size}) differs from "
                             f"the tokenizer's codebook ({vqvae.config.codebook_size}).")
        if len(tokenizer) > transformer.config.text_vocab_size:
            raise ValueError(f"the text tokenizer has {len(tokenizer)} tokens; the transformer reads "
                             f"{transformer.config.text_vocab_size}.")
        self.register_modules(transformer=transformer, tokenizer=tokenizer, vqvae=vqvae)
        self.image_processor = VaeImageProcessor(do_resize=False, do_normalize=True)

    @property
    def default_size(self) -> tuple[int, int]:
        h, w = self.transformer.config.grid_size
        f = self.vqvae.downsample_factor
        return h * f, w * f

    def token_grid(self, height: int | None, width: int | None) -> tuple[int, int]:
        """Pixels -> the token grid, checked against the window, the tokenizer and the context."""
        height, width = height or self.default_size[0], width or self.default_size[1]
        unit = self.transformer.window * self.vqvae.downsample_factor
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value < unit or value % unit:
                raise ValueError(f"{name}={value!r} must be a positive multiple of {unit} (window "
                                 f"{self.transformer.window} x the tokenizer's downsampling "
                                 f"{self.vqvae.downsample_factor}).")
        grid = (height // self.vqvae.downsample_factor, width // self.vqvae.downsample_factor)
        if grid[0] * grid[1] > self.transformer.num_windows * self.transformer.window ** 2:
            raise ValueError(f"{height}x{width} needs {grid[0] * grid[1]} tokens; this model's context holds "
                             f"{self.transformer.num_windows * self.transformer.window ** 2} "
                             f"(its training size is {self.default_size[0]}x{self.default_size[1]}).")
        return grid

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        guidance_scale: float = 3.0,
        cfg_schedule="half-linear",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("tokens",),
        compile: bool = False,
    ):
        """Generate images from captions.

        Args:
            prompt: a caption or a list of captions (non-empty strings).
            height, width: in pixels; default the training size; multiples of window x downsampling.
            guidance_scale: CFG scale >= 0 (1 = off), against the empty prompt.
            cfg_schedule: "constant", "linear", "half-linear" (default) or a `zoo.ar.GuidanceSchedule`.
            temperature, top_k, top_p: token sampling (temperature 0 = greedy).
            generator: a torch.Generator or a list, one per image.
            output_type: "pil", "np" (floats in [0, 1], NHWC) or "pt" (NCHW in [0, 1]).
            compile: run the decode step through torch.compile (CUDA graphs on GPU); the first call compiles
                (again for each new image size).
        """
        self.check_output_args(output_type, num_images_per_prompt, callback_on_step_end_tensor_inputs)
        if isinstance(prompt, str):
            prompt = [prompt]
        if isinstance(prompt, (list, tuple)) and any(isinstance(p, str) and not p.strip() for p in prompt):
            raise ValueError("prompts must not be empty; describe the image (the empty prompt is CFG's own row).")
        grid = self.token_grid(height, width)
        schedule = guidance_schedule(cfg_schedule, guidance_scale)
        P = self.transformer.config.max_text_tokens
        ids, mask = encode_prompts(self.tokenizer, [p for p in prompt for _ in range(num_images_per_prompt)], P)
        empty_ids, empty_mask = encode_prompts(self.tokenizer, [""] * len(ids), P)
        device = self._execution_device
        tokens = self.generate_tokens(
            grid[0] * grid[1], callback_on_step_end, model=self.transformer.backbone,
            step=WindowStep(self.transformer), prefix_ids=ids.to(device), prefix_mask=mask.to(device),
            uncond_prefix_ids=empty_ids.to(device), uncond_prefix_mask=empty_mask.to(device),
            guidance_scale=schedule, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
            compile=compile).tokens
        grid_ids = self.transformer.windows_to_grid(tokens, grid)
        return self.image_output(self.vqvae.decode(grid_ids.to(self.vqvae.device)), output_type, return_dict)
