"""Finding a model: built-in name, then local folder, then Hugging Face Hub id.

Hub ids go through `huggingface_hub.snapshot_download` first and are loaded from the local
snapshot: diffusers' own download step refuses components from third-party modules such as zoo's.
Offline (`HF_HUB_OFFLINE=1`) a missing file is an error that names the files and how to get them.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
from pathlib import Path

from weights_registry.catalogue import get_entry, list_models

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# libraries diffusers imports itself when loading components
_DIFFUSERS_LOADABLE = {"diffusers", "transformers", "onnxruntime"}


class ModelNotFoundError(FileNotFoundError):
    """A name that is neither built-in, nor a local folder, nor obtainable from the Hub; offline, the
    message names the missing files and the command that fetches them.

    Examples:
        >>> import zoo
        >>> try:
        ...     zoo.load("no-such-org/no-such-model", local_files_only=True)
        ... except zoo.ModelNotFoundError as error:
        ...     print(type(error).__name__)
        ModelNotFoundError
    """


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_files(folder: Path, files: dict[str, str | None], source: str):
    """Check the sha256 of each pinned file; a mismatch is an error (corrupt or substituted file)."""
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise ModelNotFoundError(f"{source}: expected file {name} is missing from {folder}.")
        if expected and (actual := sha256_of(path)) != expected:
            raise ValueError(f"{source}: sha256 mismatch for {name}: expected {expected}, got {actual}. The file "
                             "is corrupt or not the pinned release; delete it from the cache and download again.")


def _offline_message(repo_id: str, revision: str | None, files: list[str] | None) -> str:
    rev = revision or "main"
    wanted = ", ".join(files) if files else "the whole repository"
    return (f"{repo_id}@{rev} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, so it cannot be "
            f"downloaded. Files needed: {wanted}. On a machine with network access run\n"
            f"    huggingface-cli download {repo_id} --revision {rev} --local-dir <folder>\n"
            "then copy <folder> here and load it by path, or unset HF_HUB_OFFLINE.")


def download(repo_id: str, revision: str | None = None, files: list[str] | None = None,
             cache_dir: str | os.PathLike | None = None, local_files_only: bool = False) -> Path:
    """snapshot_download with zoo's error messages; `files` limits the download to those names."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = local_files_only or huggingface_hub.constants.HF_HUB_OFFLINE
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=files, local_files_only=offline)
    except LocalEntryNotFoundError as err:
        raise ModelNotFoundError(_offline_message(repo_id, revision, files)) from err
    return Path(folder)


def resolve(name_or_path: str | os.PathLike, *, revision: str | None = None,
            cache_dir: str | os.PathLike | None = None, local_files_only: bool = False) -> Path:
    """The local folder holding a model: built-in name, then local folder, then Hub id (downloaded with
    `huggingface_hub.snapshot_download`; `local_files_only=True` or HF_HUB_OFFLINE=1 use the cache only).

    Examples:
        >>> import zoo
        >>> zoo.resolve("llamagen-shapes").name
        'llamagen-shapes'
        >>> zoo.resolve("runs/ar/pipeline")          # a folder resolves to itself  # doctest: +SKIP
        >>> zoo.resolve("my-org/my-model")           # a Hub snapshot in the HF cache  # doctest: +SKIP
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise ValueError(f"pass a model name, a folder or a Hub id, got {name_or_path!r}.")
    name = str(name_or_path)
    entry = get_entry(name)
    if entry is not None and entry.kind == "builtin":
        if not entry.path.is_dir():
            raise ModelNotFoundError(f"built-in model {name!r} should be at {entry.path} but is missing: "
                                     "reinstall zoo, or rebuild it with its recipe (see `zoo info`).")
        return entry.path
    if entry is not None and entry.kind == "original":
        raise ValueError(f"{name!r} is an original-format checkpoint; convert it first: "
                         f"`zoo convert {name} --out <folder>`, then load the folder.")
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    if entry is not None:  # a pinned zoo-format Hub entry
        folder = download(entry.repo_id, revision or entry.revision, cache_dir=cache_dir,
                          local_files_only=local_files_only)
        verify_files(folder, entry.files, name)
        return folder
    if _HUB_ID.match(name):
        return download(name, revision, cache_dir=cache_dir, local_files_only=local_files_only)
    builtins = ", ".join(e.name for e in list_models("builtin")) or "none yet"
    raise ModelNotFoundError(f"{name!r} is not a built-in model ({builtins}), not a local folder and not a "
                             "Hub id of the form 'org/name'. `zoo list` shows the catalogue.")


def import_component_modules(folder: Path):
    """Import every module that `model_index.json` names: diffusers resolves other libraries from
    sys.modules only, never by importing what a downloaded file asks for."""
    index = folder / "model_index.json"
    if not index.is_file():
        return
    for value in json.loads(index.read_text()).values():
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
            module = value[0]
            if module.split(".")[0] in ("zoo", "pipelines", "tokenizers_visual", "tokenizers_audio"):
                importlib.import_module(module)
            elif module.split(".")[0] not in _DIFFUSERS_LOADABLE:
                raise ValueError(f"{index} names component module {module!r}, which is neither zoo's nor one "
                                 "diffusers loads; import it yourself before loading if you trust it.")


def _model_class(class_name: str):
    """A zoo class by name, else one of diffusers' (imported on use: diffusers' namespace is slow to import)."""
    import zoo

    cls = getattr(zoo, class_name, None)
    if cls is None:
        import diffusers

        cls = getattr(diffusers, class_name, None)
    return cls


def load(name_or_path: str | os.PathLike, **kwargs):
    """Load a zoo pipeline or model by built-in name, local folder or Hub id.

    A folder with `model_index.json` loads as its pipeline class; one with `config.json` as a model (a zoo
    class, or one of diffusers' models such as the `AutoencoderKL` of `vae-shapes`). Keyword arguments (torch_dtype, revision, cache_dir, ...) go to `from_pretrained`.

    Examples:
        >>> import zoo
        >>> pipe = zoo.load("llamagen-shapes")            # a built-in pipeline
        >>> type(pipe).__name__
        'ARImagePipeline'
        >>> type(zoo.load("vq-shapes")).__name__         # a built-in model
        'VQModel'
        >>> zoo.load("my-org/my-model", revision="main")  # a Hub id  # doctest: +SKIP
    """
    folder = resolve(name_or_path, revision=kwargs.pop("revision", None), cache_dir=kwargs.get("cache_dir"),
                     local_files_only=kwargs.get("local_files_only", False))
    for file in ("model_index.json", "config.json"):
        if (folder / file).is_file():
            class_name = json.loads((folder / file).read_text()).get("_class_name")
            cls = _model_class(class_name) if class_name else None
            if cls is None:
                raise ValueError(f"{folder / file} names class {class_name!r}, which neither zoo nor diffusers "
                                 "provides.")
            return cls.from_pretrained(folder, **kwargs)
    raise ModelNotFoundError(f"{folder} holds neither model_index.json (a pipeline) nor config.json (a model).")
