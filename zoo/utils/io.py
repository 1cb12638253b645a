"""Atomic writes: a save never leaves a half-written model where a good one was."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_permissions(path: Path):
    """Give what mkdtemp / mkstemp created (0700 / 0600) the permissions of an ordinary save."""
    mask = _umask()
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if not p.is_symlink():
            p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike):
    """Yield a fresh temporary folder beside `target`; on success it replaces `target`.

    On an exception the temporary folder is removed and `target` is left as it was. The swap is two
    renames on the same file system (old -> backup, new -> target), then the backup is deleted.
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _default_permissions(tmp)
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(target, backup)
    os.replace(tmp, target)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike):
    """Yield a temporary file path beside `target`; it is renamed onto `target` if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _default_permissions(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, mode: str = "wb"):
    """Open a temporary file beside `target` for writing; rename it onto `target` when closed cleanly."""
    with atomic_path(target) as tmp, open(tmp, mode) as f:
        yield f


class AtomicSaveMixin:
    """Makes diffusers' `save_pretrained` atomic for models and pipelines (mix in before ModelMixin)."""

    def save_pretrained(self, save_directory, *args, **kwargs):
        save_directory = Path(save_directory)
        if save_directory.is_file():
            raise ValueError(f"save_pretrained needs a folder, but {save_directory} is a file.")
        if kwargs.get("push_to_hub"):
            kwargs.setdefault("repo_id", save_directory.name)  # not the temporary folder's name
        with atomic_directory(save_directory) as tmp:
            super().save_pretrained(tmp, *args, **kwargs)
            # the new folder replaces the old one whole; keep its model card as diffusers' in-place save does
            card = save_directory / "README.md"
            if card.is_file() and not (tmp / "README.md").exists():
                shutil.copy2(card, tmp / "README.md")
