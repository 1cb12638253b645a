"""`VAT3DPipeline`: class-conditional 3D shapes by next-scale AR over VAT tokens, out as meshes.

The AR transformer predicts VAT's token maps scale by scale (1, 2, 4, ... tokens; VAR-style, with
classifier-free guidance against the null class); VAT decodes them to a triplane, the occupancy MLP
is evaluated on a grid over [-1, 1]^3 and marching cubes gives a trimesh mesh per shape.

    pipe = zoo.load("runs/vat-ar/pipeline")            # a `zoo train vat-ar-primitives` folder
    out = pipe(class_labels=["torus", "cone"], generator=torch.Generator().manual_seed(0))
    out.meshes[0].export("torus.glb"); out.preview()          # a PIL image of all shapes
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils import BaseOutput

from tokenizers_visual.vat import VAT
from zoo.ar import ARTransformer
from zoo.ar.next_scale import NextScaleStep

from .ar_image import ClassImagePipeline


@dataclass
class VAT3DPipelineOutput(BaseOutput):
    """meshes: trimesh meshes ("mesh"), or occupancy logit grids [B, R, R, R] ("np" / "pt");
    tokens: the token ids per scale (list of [B, L_s]).

    Examples:
        >>> import trimesh
        >>> out = VAT3DPipelineOutput(meshes=[trimesh.creation.box()], tokens=[])
        >>> out.preview().size                    # what a notebook shows for `out`
        (192, 192)
    """

    meshes: list | np.ndarray | torch.Tensor
    tokens: list[torch.Tensor]

    def _repr_png_(self) -> bytes | None:  # notebooks show the rendered meshes
        from zoo.display import png_bytes

        return png_bytes(self.preview()) if isinstance(self.meshes, list) and self.meshes else None

    def preview(self, size: int = 192):
        """The meshes rendered side by side (a PIL image)."""
        from zoo.render import render_grid

        if not isinstance(self.meshes, list):
            raise ValueError("previews need output_type='mesh'.")
        return render_grid(self.meshes, size)


class VAT3DPipeline(ClassImagePipeline):
    """Next-scale AR over VAT tokens -> meshes.

    Examples:
        >>> pipe = VAT3DPipeline.from_pretrained("runs/vat-ar/pipeline")   # zoo train vat-ar-primitives  # doctest: +SKIP
        >>> out = pipe(class_labels=["torus", "cone"], generator=torch.Generator().manual_seed(0))    # doctest: +SKIP
        >>> out.meshes[0].export("torus.glb"); out.preview().save("shapes.png")                      # doctest: +SKIP
    """

    model_cpu_offload_seq = "transformer->vat"
    _callback_tensor_inputs = ["tokens"]

    def __init__(self, transformer: ARTransformer, vat: VAT, class_names: list[str] | None = None):
        super().__init__()
        c = transformer.config
        if c.num_classes < 1:
            raise ValueError("the transformer must be class-conditional (num_classes >= 1).")
        if class_names is not None and len(class_names) != c.num_classes:
            raise ValueError(f"got {len(class_names)} class names for {c.num_classes} classes.")
        if c.vocab_size != vat.config.codebook_size or c.input_dim != vat.config.latent_dim:
            raise ValueError(f"the transformer (vocab {c.vocab_size}, input_dim {c.input_dim}) does not match the "
                             f"VAT (codebook {vat.config.codebook_size}, latent_dim {vat.config.latent_dim}).")
        if list(c.block_sizes or []) != vat.scales[1:]:
            raise ValueError(f"the transformer's blocks {c.block_sizes} are not VAT's scales after the first "
                             f"{vat.scales[1:]}.")
        self.register_modules(transformer=transformer, vat=vat)
        self.register_to_config(class_names=list(class_names) if class_names is not None else None)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor,
        num_images_per_prompt: int = 1,
        num_scales: int | None = None,
        guidance_scale: float = 2.0,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        resolution: int = 129,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "mesh",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("tokens",),
    ):
        """Generate shapes of the given classes.

        Args:
            class_labels: class ids and/or names (see `pipe.config.class_names`).
            num_images_per_prompt: shapes per class label.
            num_scales: generate only the first k scales (coarser shapes, fewer tokens); default all.
            guidance_scale, temperature, top_k, top_p: token sampling (CFG 1 = off, temperature 0 = greedy).
            resolution: marching-cubes grid per axis over [-1, 1] (129: 3DShape2VecSet's protocol).
            generator: a torch.Generator or one per shape.
            output_type: "mesh" (trimesh meshes), "np" or "pt" (occupancy logit grids).
        """
        self.check_choice("output_type", output_type, ("mesh", "np", "pt"))
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be a positive integer, got {num_images_per_prompt!r}.")
        self.check_callback_inputs(callback_on_step_end_tensor_inputs)
        scales = self.vat.scales
        k = len(scales) if num_scales is None else num_scales
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(scales):
            raise ValueError(f"num_scales must be an int in 1..{len(scales)}, got {num_scales!r}.")
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8:
            raise ValueError(f"resolution must be an int >= 8, got {resolution!r}.")
        ids = [i for i in self.class_ids(class_labels) for _ in range(num_images_per_prompt)]
        labels = torch.tensor(ids, device=self._execution_device)
        step = NextScaleStep(self.vat.quantizer)
        tokens = self.generate_tokens(sum(scales[:k]), callback_on_step_end, class_labels=labels, step=step,
                                      guidance_scale=guidance_scale, temperature=temperature, top_k=top_k,
                                      top_p=top_p, generator=generator).tokens
        per_scale = list(tokens.split(scales[:k], dim=1))
        if output_type == "mesh":
            meshes = self.vat.decode_mesh(per_scale, resolution)
        else:
            grids = self.vat.occupancy_grid(self.vat.decode(per_scale), resolution)
            meshes = grids.cpu().numpy() if output_type == "np" else grids
        self.maybe_free_model_hooks()
        per_scale = [t.cpu() for t in per_scale]
        return VAT3DPipelineOutput(meshes=meshes, tokens=per_scale) if return_dict else (meshes, per_scale)
