"""`ZooPipeline`: what every zoo pipeline adds to `diffusers.DiffusionPipeline`."""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

from zoo.ar import NextTokenStep, generate_steps
from zoo.display import ImageGridDisplay
from zoo.hub import import_component_modules, resolve
from zoo.utils.io import AtomicSaveMixin


@dataclass
class ZooImagePipelineOutput(ImageGridDisplay, ImagePipelineOutput):
    """diffusers' `ImagePipelineOutput` (`images`: PIL images, or an array / tensor for output_type "np" /
    "pt"), shown as an image grid in notebooks."""


class ZooPipeline(AtomicSaveMixin, DiffusionPipeline):
    """A DiffusionPipeline whose `from_pretrained` accepts zoo's built-in names and Hub ids, and
    whose `save_pretrained` is atomic.

    Every zoo pipeline is one; its subclasses add a `__call__`.

    Examples:
        >>> import zoo
        >>> pipe = zoo.load("llamagen-shapes")              # ZooPipeline.from_pretrained under the hood
        >>> isinstance(pipe, zoo.ZooPipeline)
        True
        >>> pipe.save_pretrained("my-model")                # atomic: never half a model  # doctest: +SKIP
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load from a built-in name, a local folder or a Hub id (downloaded with snapshot_download,
        then loaded locally). Other keyword arguments go to `DiffusionPipeline.from_pretrained`."""
        folder = resolve(pretrained_model_name_or_path, revision=kwargs.pop("revision", None),
                         cache_dir=kwargs.get("cache_dir"), local_files_only=kwargs.get("local_files_only", False))
        import_component_modules(folder)
        return super().from_pretrained(folder, **kwargs)

    @staticmethod
    def check_choice(name: str, value, choices):
        if value not in choices:
            raise ValueError(f"{name}={value!r} is not supported; pass one of {list(choices)}.")

    def check_output_args(self, output_type: str, num_images_per_prompt, callback_inputs):
        """The checks every image pipeline's call makes: output type, images per prompt, callback inputs."""
        self.check_choice("output_type", output_type, ("pil", "np", "pt"))
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be a positive integer, got {num_images_per_prompt!r}.")
        self.check_callback_inputs(callback_inputs)

    def image_output(self, images, output_type: str, return_dict: bool):
        """The end of every image pipeline's call: decoded images [N, 3, H, W] in [-1, 1] -> `output_type`
        through `self.image_processor`, model hooks freed, wrapped as diffusers does."""
        images = self.image_processor.postprocess(images.clamp(-1, 1).float(), output_type=output_type)
        self.maybe_free_model_hooks()
        return ZooImagePipelineOutput(images=images) if return_dict else (images,)

    def check_callback_inputs(self, names):
        bad = set(names) - set(self._callback_tensor_inputs)
        if bad:
            raise ValueError(f"callback_on_step_end_tensor_inputs {sorted(bad)} are not available; "
                             f"pass a subset of {self._callback_tensor_inputs}.")

    def generate_token_steps(self, num_tokens: int, callback_on_step_end=None, model=None, **generate_kwargs):
        """`zoo.ar.generate_steps` on `model` (default self.transformer), yielding the output after every AR
        step, with the pipeline's progress bar (one tick per AR step: a Token-Shuffle step emits a window, a
        speech step a frame) and diffusers' `callback_on_step_end(pipe, step, None, {"tokens": so_far})`."""
        step = generate_kwargs.get("step") or NextTokenStep()
        with self.progress_bar(total=step.num_steps(num_tokens)) as bar:
            for i, out in enumerate(generate_steps(model or self.transformer, num_tokens, **generate_kwargs)):
                bar.update(step.num_steps(out.tokens.shape[1]) - bar.n)  # given prompt tokens count as done
                if callback_on_step_end is not None:
                    callback_on_step_end(self, i, None, {"tokens": out.tokens})
                yield out

    def generate_tokens(self, num_tokens: int, callback_on_step_end=None, model=None, **generate_kwargs):
        """`generate_token_steps` run to the end: the final `GenerationOutput`."""
        out = None
        for out in self.generate_token_steps(num_tokens, callback_on_step_end, model, **generate_kwargs):
            pass
        return out
