"""`ARImagePipeline`: LlamaGen-style class-conditional image generation.

The AR transformer samples a grid of VQ tokens in raster order after a class token (2D RoPE,
classifier-free guidance against the null class); the VQ decoder turns the grid into pixels.
"""

from __future__ import annotations

import torch
from diffusers.image_processor import VaeImageProcessor

from tokenizers_visual import VQModel
from zoo.ar import ARTransformer

from .base import ZooPipeline


class ClassImagePipeline(ZooPipeline):
    """What class-conditional image pipelines over a VQ tokenizer share: class names and ids, the
    checks on their components, and turning token grids into images.

    Examples:
        >>> import zoo
        >>> pipe = zoo.load("ctf-shapes")                   # a ClassImagePipeline
        >>> pipe.class_ids(["circle", 3])                   # names or ids, checked
        [0, 3]
    """

    @staticmethod
    def check_class_transformer(transformer: ARTransformer, class_names):
        num_classes = transformer.config.num_classes
        if num_classes < 1:
            raise ValueError(f"{type(transformer).__name__} must be class-conditional (num_classes >= 1).")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"got {len(class_names)} class names for a model of {num_classes} classes.")
        if transformer.config.grid_size is None:
            raise ValueError("the transformer needs a grid_size (2D token layout) to make images.")

    def class_ids(self, class_labels) -> list[int]:
        """Class ids from ids and/or names (`self.config.class_names`), validated."""
        if isinstance(class_labels, (int, str)):
            class_labels = [class_labels]
        if isinstance(class_labels, torch.Tensor):
            class_labels = class_labels.flatten().tolist()
        if class_labels is None or len(class_labels) == 0:
            raise ValueError("pass at least one class label (an id or a name).")
        names = self.config.class_names or []
        num_classes = self.transformer.config.num_classes
        ids = []
        for label in class_labels:
            if isinstance(label, str):
                if label not in names:
                    raise ValueError(f"unknown class name {label!r}; known names: {names or 'none (pass ids)'}.")
                ids.append(names.index(label))
            elif isinstance(label, int) and not isinstance(label, bool) and 0 <= label < num_classes:
                ids.append(label)
            else:
                raise ValueError(f"class label {label!r} is out of range; pass ids in [0, {num_classes}) or names.")
        return ids

    def check_call(self, class_labels, num_images_per_prompt, output_type, callback_inputs) -> torch.Tensor:
        """Validate the common call arguments; the class id of every image to make [N]."""
        self.check_output_args(output_type, num_images_per_prompt, callback_inputs)
        ids = [i for i in self.class_ids(class_labels) for _ in range(num_images_per_prompt)]
        return torch.tensor(ids, device=self._execution_device)

    def decode_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids [N, h * w] -> images [N, 3, H, W]."""
        h, w = self.transformer.config.grid_size
        return self.vqvae.decode(tokens.view(-1, h, w).to(self.vqvae.device))


class ARImagePipeline(ClassImagePipeline):
    """Class-conditional AR image generation (LlamaGen): `ARTransformer` over `VQModel` tokens.

    >>> pipe = zoo.load("llamagen-shapes")                                      # doctest: +SKIP
    >>> images = pipe(class_labels=["circle", 3], guidance_scale=2.0).images   # doctest: +SKIP
    """

    model_cpu_offload_seq = "transformer->vqvae"
    _callback_tensor_inputs = ["tokens"]

    def __init__(self, transformer: ARTransformer, vqvae: VQModel, class_names: list[str] | None = None):
        super().__init__()
        self.check_class_transformer(transformer, class_names)
        if transformer.config.vocab_size != vqvae.config.codebook_size:
            raise ValueError(f"the transformer's vocabulary ({transformer.config.vocab_size}) differs from the "
                             f"tokenizer's codebook ({vqvae.config.codebook_size}).")
        self.register_modules(transformer=transformer, vqvae=vqvae)
        self.register_to_config(class_names=list(class_names) if class_names is not None else None)
        self.image_processor = VaeImageProcessor(do_resize=False, do_normalize=True)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor,
        num_images_per_prompt: int = 1,
        guidance_scale=2.0,
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
        """Generate images of the given classes.

        Args:
            class_labels: class ids and/or names (see `pipe.config.class_names`).
            num_images_per_prompt: images per class label.
            guidance_scale: CFG scale >= 0 (1 = off) or a `zoo.ar.GuidanceSchedule`.
            temperature, top_k, top_p: token sampling (temperature 0 = greedy).
            generator: a torch.Generator or a list, one per image.
            output_type: "pil", "np" (floats in [0, 1], NHWC) or "pt" (NCHW in [0, 1]).
            compile: run the decode step through torch.compile (CUDA graphs on GPU); the first call compiles.
        """
        labels = self.check_call(class_labels, num_images_per_prompt, output_type, callback_on_step_end_tensor_inputs)
        h, w = self.transformer.config.grid_size
        tokens = self.generate_tokens(h * w, callback_on_step_end, class_labels=labels, guidance_scale=guidance_scale,
                                      temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
                                      compile=compile).tokens
        return self.image_output(self.decode_grid(tokens), output_type, return_dict)
