"""`DistilledPipeline`: one- and two-step sampling of an AR image model (Distilled Decoding, DD1).

Sampling follows the official `eval_fewstep.py`: draw a noise vector per token; for each step t in
(0,) or (0, t2), feed [the current prediction for tokens < t | the noise from t on] to the student and
take its prediction of every token. Tokens before `split_position` come from the logits head (the
argmax codeword), the rest from the continuous head; tokens given as data keep their input. The
result goes to the VQ decoder as continuous codes, without re-quantising.
"""

from __future__ import annotations

import torch
from diffusers.image_processor import VaeImageProcessor

from tokenizers_visual import VQModel
from zoo.ar import ARTransformer, generate
from zoo.ar.distilled import DDTransformer
from zoo.ar.sampling import normalize_generators

from .ar_image import ClassImagePipeline


class DistilledPipeline(ClassImagePipeline):
    """Class-conditional generation in 1 or 2 passes of a `DDTransformer` over `VQModel` codes.

    Args:
        student: the DD generator (`DDTransformer.from_teacher(...)`, trained on the teacher's pairs).
        vqvae: the teacher's tokenizer.
        class_names: optional names of the classes.
        split_position: tokens before it use the logits head, the rest the continuous head; default
            the official LlamaGen-B setting, 80 of 256 tokens, scaled to the student's length.
        second_step_position: t2, the number of tokens kept from the first pass in a 2-step run;
            default as split_position (official: t_list "0,80").
        noise_input: False for the naive one-step baseline, which reads no noise (zero inputs) and
            predicts every token at once from the class.
        teacher: optional, the AR teacher for the teacher-involved mode (`teacher_start=...`).

    >>> pipe = zoo.load("dd-shapes")                                             # doctest: +SKIP
    >>> images = pipe(class_labels=["circle", 3], num_inference_steps=1).images  # doctest: +SKIP
    """

    model_cpu_offload_seq = "student->teacher->vqvae"
    _optional_components = ["teacher"]
    _callback_tensor_inputs = ["codes"]

    def __init__(self, student: DDTransformer, vqvae: VQModel, class_names: list[str] | None = None,
                 split_position: int | None = None, second_step_position: int | None = None,
                 noise_input: bool = True, teacher: ARTransformer | None = None):
        super().__init__()
        default = round(student.num_tokens * 80 / 256)
        split_position = default if split_position is None else split_position
        second_step_position = default if second_step_position is None else second_step_position
        self.check_class_transformer(student.backbone, class_names)
        if student.config.codebook_dim != vqvae.config.codebook_dim:
            raise ValueError(f"the student reads {student.config.codebook_dim}-dim codes but the tokenizer's are "
                             f"{vqvae.config.codebook_dim}-dim.")
        if student.backbone.config.vocab_size != vqvae.config.codebook_size:
            raise ValueError("the student's logits head must cover the tokenizer's codebook.")
        for name, value in (("split_position", split_position), ("second_step_position", second_step_position)):
            if not 0 <= value <= student.num_tokens:
                raise ValueError(f"{name} must lie in [0, {student.num_tokens}], got {value}.")
        if teacher is not None and teacher.config.vocab_size != vqvae.config.codebook_size:
            raise ValueError("the teacher's vocabulary must be the tokenizer's codebook.")
        self.register_modules(student=student, vqvae=vqvae, teacher=teacher)
        self.register_to_config(class_names=list(class_names) if class_names is not None else None,
                                split_position=split_position, second_step_position=second_step_position,
                                noise_input=bool(noise_input))
        self.image_processor = VaeImageProcessor(do_resize=False, do_normalize=True)

    @property
    def transformer(self):  # ClassImagePipeline reads the class count and grid from `transformer`
        return self.student.backbone

    def step_positions(self, num_inference_steps: int) -> list[int]:
        if num_inference_steps not in (1, 2):
            raise ValueError(f"num_inference_steps must be 1 or 2 (the distilled steps), got {num_inference_steps!r}.")
        return [0] if num_inference_steps == 1 else [0, self.config.second_step_position]

    def denoise(self, noise: torch.Tensor, class_labels: torch.Tensor, steps: list[int], callback=None,
                x: torch.Tensor | None = None) -> torch.Tensor:
        """noise [B, T, C] -> predicted codes [B, T, C] after the given steps (t = tokens given as data,
        taken from `x` when given, else from the previous step's prediction)."""
        codebook = self.vqvae.codebook.to(noise.dtype)
        if not self.config.noise_input:
            noise = torch.zeros_like(noise)
        position = torch.arange(noise.shape[1], device=noise.device)[None, :, None]
        x = noise if x is None else x
        for i, t in enumerate(steps):
            x_t = torch.where(position < t, x, noise)
            codes, logits = self.student(x_t, class_labels, t)
            ids = logits.argmax(-1)
            given = torch.cdist(x_t, codebook[None], compute_mode="donot_use_mm_for_euclid_dist").argmin(-1)  # own codeword
            ids = torch.where(position[..., 0] < t, given, ids)
            continuous = torch.where(position < t, x_t, codes)
            x = torch.where(position < self.config.split_position, codebook[ids], continuous)
            if callback is not None:
                callback(self, i, None, {"codes": x})
        return x

    def teacher_continue(self, codes: torch.Tensor, class_labels: torch.Tensor, start: int, end: int,
                         guidance_scale, generator) -> torch.Tensor:
        """Quantise the first `start` predicted tokens and let the teacher sample tokens start..end-1 after
        them (its KV-cache continuation); returns their codewords [B, end, C]."""
        codebook = self.vqvae.codebook.to(codes.dtype)
        given = torch.cdist(codes[:, :start], codebook[None], compute_mode="donot_use_mm_for_euclid_dist").argmin(-1)
        tokens = generate(self.teacher, end, class_labels=class_labels, prompt_tokens=given,
                          guidance_scale=guidance_scale, generator=generator).tokens
        return codebook[tokens]

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor,
        num_images_per_prompt: int = 1,
        num_inference_steps: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("codes",),
        teacher_start: int | None = None,
        teacher_guidance_scale=2.0,
    ):
        """Generate images of the given classes in `num_inference_steps` (1 or 2) student passes.

        Args:
            class_labels: class ids and/or names (see `pipe.config.class_names`).
            num_images_per_prompt: images per class label.
            num_inference_steps: 1 or 2.
            generator: a torch.Generator or a list, one per image (it draws that image's noise).
            output_type: "pil", "np" (floats in [0, 1], NHWC) or "pt" (NCHW in [0, 1]).
            teacher_start: the teacher-involved mode (official `eval_combine_sample.py`): a first DD
                pass, the teacher keeps its first `teacher_start` tokens and samples up to
                `second_step_position` (with `teacher_guidance_scale`), a last DD pass from there.
        No classifier-free guidance in the student: the teacher's guidance is distilled into it.
        """
        steps = self.step_positions(num_inference_steps)
        if teacher_start is not None:
            if self.teacher is None:
                raise ValueError("teacher_start needs the pipeline's teacher component; pass teacher=... when "
                                 "building the pipeline.")
            if not 0 < teacher_start < self.config.second_step_position:
                raise ValueError(f"teacher_start must lie in (0, second_step_position="
                                 f"{self.config.second_step_position}), got {teacher_start!r}.")
        labels = self.check_call(class_labels, num_images_per_prompt, output_type, callback_on_step_end_tensor_inputs)
        generators = normalize_generators(generator, len(labels))
        T, C, device = self.student.num_tokens, self.student.config.codebook_dim, self._execution_device
        if isinstance(generators, list):
            noise = torch.cat([torch.randn(1, T, C, generator=g, device=g.device) for g in generators])
        else:
            noise = torch.randn(len(labels), T, C, generator=generators,
                                device=device if generators is None else generators.device)
        noise = noise.to(device)
        if teacher_start is None:
            codes = self.denoise(noise, labels, steps, callback_on_step_end)
        else:
            t2 = self.config.second_step_position
            first = self.denoise(noise, labels, [0], callback_on_step_end)
            handed = self.teacher_continue(first, labels, teacher_start, t2, teacher_guidance_scale, generators)
            x = torch.cat([handed, first[:, t2:]], dim=1)
            codes = self.denoise(noise, labels, [t2], callback_on_step_end, x=x)
        h, w = self.transformer.config.grid_size
        images = self.vqvae.decode_codes(codes.view(-1, h, w, C).permute(0, 3, 1, 2).to(self.vqvae.device))
        return self.image_output(images, output_type, return_dict)
