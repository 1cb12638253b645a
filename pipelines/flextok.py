"""`FlexTokPipeline`: images through FlexTok's 1D tokens, reconstructed or generated at a chosen length.

- Reconstruction: `pipe(images=batch, num_tokens=8)` tokenizes and decodes the first k tokens of each
  image (k may differ per image: `num_tokens=[1, 4, 64]`).
- Generation: `pipe(class_labels=["circle", 3], num_tokens=16)` samples k tokens with the shared AR
  engine (class token, 1D RoPE, CFG against the null class), then decodes them by rectified flow. The
  AR model only ever produces the prefix it is asked for: fewer tokens, fewer AR steps.

Decoding runs the tokenizer's flow decoder: `num_inference_steps` Euler steps with classifier-free
guidance `decoder_guidance_scale` against the learned null condition (APG when `apg=True`).

With a KARL tokenizer among the components, `num_tokens="auto"` lets KARL's complexity estimate pick
k per image at a target error `max_error` (KARL's token count, scaled from KARL's budget to FlexTok's
registers): the image itself when reconstructing; when generating, the full-length sample decoded
once, after which its prefix of the chosen length is decoded (a second decoder pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from tokenizers_visual.flextok import FlexTok
from tokenizers_visual.karl import KARLTokenizer
from zoo.ar import ARTransformer
from zoo.display import ImageGridDisplay

from .ar_image import ClassImagePipeline


@dataclass
class FlexTokPipelineOutput(ImageGridDisplay, BaseOutput):
    """images: the decoded images; tokens: the 1D token ids each image was decoded from (a list of
    [k_i] tensors, one per image).

    Examples:
        >>> out = pipe(images=batch, num_tokens=[1, 4, 16])   # doctest: +SKIP
        >>> [t.shape[0] for t in out.tokens]                  # doctest: +SKIP
        [1, 4, 16]
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    tokens: list[torch.Tensor]


class FlexTokPipeline(ClassImagePipeline):
    """FlexTok reconstruction at any token count, and class-conditional AR generation over its tokens.

    >>> pipe = zoo.load("runs/flextok-ar/pipeline")   # a `zoo train flextok-ar-shapes` folder  # doctest: +SKIP
    >>> pipe(class_labels="circle", num_tokens=8).images[0]                        # doctest: +SKIP
    >>> pipe(images=batch, num_tokens=[1, 4, 16]).images                           # doctest: +SKIP
    """

    model_cpu_offload_seq = "transformer->tokenizer"
    _callback_tensor_inputs = ["tokens"]
    _optional_components = ["transformer", "karl"]

    def __init__(self, tokenizer: FlexTok, transformer: ARTransformer | None = None, karl: KARLTokenizer | None = None,
                 class_names: list[str] | None = None):
        super().__init__()
        if transformer is not None:
            if transformer.config.num_classes < 1:
                raise ValueError("the transformer must be class-conditional (num_classes >= 1).")
            if transformer.config.vocab_size != tokenizer.codebook_size:
                raise ValueError(f"the transformer's vocabulary ({transformer.config.vocab_size}) differs from the "
                                 f"tokenizer's FSQ codebook ({tokenizer.codebook_size}).")
            if class_names is not None and len(class_names) != transformer.config.num_classes:
                raise ValueError(f"got {len(class_names)} class names for {transformer.config.num_classes} classes.")
        if karl is not None and karl.config.image_size != tokenizer.config.image_size:
            raise ValueError(f"KARL takes {karl.config.image_size}px images, FlexTok {tokenizer.config.image_size}px.")
        self.register_modules(tokenizer=tokenizer, transformer=transformer, karl=karl)
        self.register_to_config(class_names=list(class_names) if class_names is not None else None)
        self.image_processor = VaeImageProcessor(do_resize=False, do_normalize=True)

    @property
    def max_tokens(self) -> int:
        """The longest prefix this pipeline can produce (the AR model's length when generating)."""
        if self.transformer is not None:
            return min(self.tokenizer.num_registers, self.transformer.seq_len)
        return self.tokenizer.num_registers

    def auto_counts(self, pixels: torch.Tensor, max_error: float) -> list[int]:
        """KARL's token count for each image at `max_error`, scaled to FlexTok's registers (at least 1)."""
        found = self.karl.tokenize(pixels.to(self.karl.device, self.karl.dtype), max_error=max_error).num_tokens
        scale = self.tokenizer.num_registers / self.karl.max_tokens
        return [max(1, min(self.tokenizer.num_registers, round(float(n) * scale))) for n in found]

    def token_counts(self, num_tokens, count: int, limit: int) -> list[int]:
        """num_tokens (None = `limit`, an int, or one int per image) -> a validated list of `count` ints."""
        if num_tokens == "auto":
            raise ValueError("num_tokens='auto' needs a KARL tokenizer in the pipeline (karl=KARLTokenizer).")
        if num_tokens is None:
            num_tokens = limit
        counts = list(num_tokens) if isinstance(num_tokens, (list, tuple)) else [num_tokens] * count
        if len(counts) != count:
            raise ValueError(f"num_tokens has {len(counts)} entries for {count} images; pass one per image or one int.")
        for k in counts:
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= limit:
                raise ValueError(f"num_tokens must be ints in 1..{limit}, got {k!r}.")
        return counts

    def preprocess_images(self, images) -> torch.Tensor:
        """PIL images, a list of them, or a tensor [B, 3, H, W] in [-1, 1] -> a tensor on the tokenizer's device."""
        if isinstance(images, PIL.Image.Image):
            images = [images]
        if isinstance(images, (list, tuple)) and images and all(isinstance(i, PIL.Image.Image) for i in images):
            images = self.image_processor.preprocess(list(images))
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"images must be PIL images or a [B, 3, H, W] tensor in [-1, 1], got "
                             f"{type(images).__name__}.")
        self.tokenizer.check_images(images)
        return images.to(self.tokenizer.device, self.tokenizer.dtype)

    def decoder_noise(self, count: int, generator) -> torch.Tensor:
        """The flow decoder's starting noise [count, C, h, w], drawn before any token is sampled."""
        if isinstance(generator, list) and len(generator) != count:
            raise ValueError(f"got {len(generator)} generators for {count} images; pass one per image or one.")
        return randn_tensor((count, *self.tokenizer.latent_shape), generator=generator, device=self.tokenizer.device,
                            dtype=self.tokenizer.dtype)

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor | PIL.Image.Image | list[PIL.Image.Image] | None = None,
        class_labels: int | str | list[int | str] | torch.Tensor | None = None,
        num_tokens: int | list[int] | str | None = None,
        max_error: float = 0.05,
        num_images_per_prompt: int = 1,
        guidance_scale: float = 2.0,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        num_inference_steps: int = 20,
        decoder_guidance_scale: float = 7.5,
        apg: bool = True,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("tokens",),
    ):
        """Reconstruct `images` or generate images of `class_labels` from `num_tokens` 1D tokens each.

        Args:
            images: images to reconstruct (PIL, or a [B, 3, S, S] tensor in [-1, 1]); or
            class_labels: class ids and/or names to generate (needs a transformer).
            num_tokens: tokens per image, 1..max_tokens: one int, or one per image (default: all), or "auto"
                (needs `karl`): KARL's estimate at `max_error` (mean absolute pixel error in [0, 1]).
            num_images_per_prompt: images per class label (generation).
            guidance_scale, temperature, top_k, top_p: the AR model's sampling (generation).
            num_inference_steps, decoder_guidance_scale, apg: the flow decoder (Euler steps, CFG scale
                against the null condition with 1 = off, adaptive projected guidance).
            generator: a torch.Generator or one per image; it draws the decoder's noise, then the AR samples.
            output_type: "pil", "np" (floats in [0, 1], NHWC) or "pt" (NCHW in [0, 1]).
        """
        if (images is None) == (class_labels is None):
            raise ValueError("pass either images (to reconstruct) or class_labels (to generate), not both or neither.")
        self.check_output_args(output_type, num_images_per_prompt, callback_on_step_end_tensor_inputs)
        if images is not None:
            pixels = self.preprocess_images(images)
            auto = num_tokens == "auto" and self.karl is not None
            counts = (self.auto_counts(pixels, max_error) if auto
                      else self.token_counts(num_tokens, len(pixels), self.tokenizer.num_registers))
            noise = self.decoder_noise(len(pixels), generator)
            ids = self.tokenizer.tokenize(pixels)
            rows = [row[:k] for row, k in zip(ids, counts)]
        else:
            if self.transformer is None:
                raise ValueError("this pipeline has no AR transformer: it can only reconstruct images (pass images=).")
            labels = self.check_call(class_labels, num_images_per_prompt, output_type,
                                     callback_on_step_end_tensor_inputs)
            auto = num_tokens == "auto" and self.karl is not None
            counts = [self.max_tokens] * len(labels) if auto else self.token_counts(num_tokens, len(labels),
                                                                                    self.max_tokens)
            noise = self.decoder_noise(len(labels), generator)  # first: it must not depend on the token counts
            tokens = self.generate_tokens(max(counts), callback_on_step_end, class_labels=labels,
                                          guidance_scale=guidance_scale, temperature=temperature, top_k=top_k,
                                          top_p=top_p, generator=generator).tokens
            if auto:  # KARL judges the full-length sample
                full = self.tokenizer.detokenize(list(tokens), num_inference_steps=num_inference_steps,
                                                 guidance_scale=decoder_guidance_scale, apg=apg, latents=noise)
                counts = [min(k, self.max_tokens) for k in self.auto_counts(full.clamp(-1, 1), max_error)]
            rows = [row[:k] for row, k in zip(tokens, counts)]
        with self.progress_bar(total=num_inference_steps) as bar:
            decoded = self.tokenizer.detokenize(rows, num_inference_steps=num_inference_steps,
                                                guidance_scale=decoder_guidance_scale, apg=apg, latents=noise,
                                                callback=lambda i: bar.update())
        images_out = self.image_output(decoded, output_type, return_dict=False)[0]
        rows = [row.cpu() for row in rows]
        return FlexTokPipelineOutput(images=images_out, tokens=rows) if return_dict else (images_out, rows)
