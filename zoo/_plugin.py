"""Registers zoo's pipelines in the `diffusers` namespace, without importing diffusers early.

`DiffusionPipeline.from_pretrained(folder)` looks the class named in model_index.json up as an
attribute of the `diffusers` module. zoo's pipeline classes subclass DiffusionPipeline, so they can be
imported only once `diffusers.pipelines.pipeline_utils` is; and `import zoo` must stay fast, so it
cannot import diffusers itself. If that module is already loaded, zoo registers at once; otherwise a
post-import hook registers right after it loads (however the user reaches it).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

_TRIGGER = "diffusers.pipelines.pipeline_utils"


def register_pipelines():
    """Set zoo's pipeline classes as attributes of the diffusers module (called by `pipelines`)."""
    import diffusers

    import pipelines

    for name in pipelines.PIPELINE_CLASSES:
        setattr(diffusers, name, getattr(pipelines, name))


def _register_after_load():
    partial = sys.modules.get("pipelines")
    if partial is not None and not hasattr(partial, "PIPELINE_CLASSES"):
        return  # `pipelines` is being imported (it imported diffusers): it registers itself when done
    try:
        import pipelines  # noqa: F401  (importing it registers the classes)
    except Exception as err:  # never break the user's diffusers import
        warnings.warn(f"zoo could not register its pipelines with diffusers: {err!r}", stacklevel=2)


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        _register_after_load()


class _PostImportHook(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _TRIGGER:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def install():
    if _TRIGGER in sys.modules:
        _register_after_load()
    elif not any(isinstance(f, _PostImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportHook())
