"""`ZooPipeline`: what every zoo pipeline adds to `diffusers.DiffusionPipeline`."""

from __future__ import annotations

from diffusers import DiffusionPipeline

from zoo.hub import import_component_modules, resolve
from zoo.utils.io import AtomicSaveMixin


class ZooPipeline(AtomicSaveMixin, DiffusionPipeline):
    """A DiffusionPipeline whose `from_pretrained` accepts zoo's built-in names and Hub ids, and
    whose `save_pretrained` is atomic."""

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
