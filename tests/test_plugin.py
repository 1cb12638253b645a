"""zoo as a diffusers plugin: fast import, registration, pipeline save/load, atomic saves."""

import subprocess
import sys

import pytest
import torch
from diffusers import DiffusionPipeline

import zoo
from pipelines import ARTokenPipeline

RUN = dict(capture_output=True, text=True, timeout=120)


def test_import_zoo_is_fast_and_lazy():
    code = ("import time, sys; t = time.perf_counter(); import zoo; dt = time.perf_counter() - t; "
            "print(dt, 'torch' in sys.modules, 'diffusers' in sys.modules)")
    best = min(float(subprocess.run([sys.executable, "-c", code], **RUN).stdout.split()[0]) for _ in range(2))
    out = subprocess.run([sys.executable, "-c", code], **RUN).stdout.split()
    assert best < 3.0
    assert out[1:] == ["False", "False"]  # nothing heavy until a public name is used


def test_import_registers_pipelines_with_diffusers():
    # one fresh interpreter per import order, both at once (each spends ~15 s importing diffusers and torch)
    first = ["import zoo", "from diffusers import DiffusionPipeline"]
    processes = {}
    for order, imports in (("zoo first", first), ("diffusers first", first[::-1])):
        code = "; ".join(imports) + "; import diffusers; print(diffusers.ARTokenPipeline.__module__)"
        processes[order] = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True)
    for order, process in processes.items():
        stdout, stderr = process.communicate(timeout=RUN["timeout"])
        assert stdout.strip() == "pipelines.ar_tokens", f"{order}: {stderr[-3000:]}"


def test_generic_loader_opens_a_zoo_folder(saved_pipeline):
    pipe, folder = saved_pipeline
    expected = pipe(class_labels=[1, 2], generator=torch.Generator().manual_seed(0)).tokens
    for loaded in (DiffusionPipeline.from_pretrained(folder), ARTokenPipeline.from_pretrained(folder), zoo.load(folder)):
        assert type(loaded) is ARTokenPipeline
        loaded.set_progress_bar_config(disable=True)
        assert torch.equal(loaded(class_labels=[1, 2], generator=torch.Generator().manual_seed(0)).tokens, expected)


def test_pipeline_call_conventions(saved_pipeline):
    pipe, _ = saved_pipeline
    out = pipe(class_labels=3, num_tokens=5, output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (1, 5) and out[0] is out.tokens
    tokens = pipe(class_labels=[3], num_tokens=5, return_dict=False, generator=torch.Generator().manual_seed(0))[0]
    assert tokens.tolist() == out.tokens.tolist()
    steps = []
    pipe(class_labels=[3], num_tokens=4, callback_on_step_end=lambda p, i, t, kw: steps.append(kw["tokens"].shape[1]))
    assert steps == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="output_type='pil' is not supported"):
        pipe(class_labels=[3], output_type="pil")
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        pipe(class_labels=[3], callback_on_step_end_tensor_inputs=["latents"])


def test_interrupted_save_leaves_the_old_model(saved_pipeline, monkeypatch):
    pipe, folder = saved_pipeline
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    def crash(self, save_directory, *args, **kwargs):
        (save_directory / "half-written.bin").write_bytes(b"x")
        raise KeyboardInterrupt

    monkeypatch.setattr(DiffusionPipeline, "save_pretrained", crash)
    with pytest.raises(KeyboardInterrupt):
        pipe.save_pretrained(folder)
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folders left behind


def test_resave_replaces_atomically(saved_pipeline):
    pipe, folder = saved_pipeline
    (folder / "stale.txt").write_text("old")
    pipe.save_pretrained(folder)
    assert not (folder / "stale.txt").exists() and (folder / "model_index.json").is_file()


def test_resave_keeps_the_model_card(saved_pipeline):
    pipe, folder = saved_pipeline
    (folder / "README.md").write_text("# my model")
    pipe.save_pretrained(folder)
    assert (folder / "README.md").read_text() == "# my model"


def test_saved_files_get_ordinary_permissions(saved_pipeline):
    import os
    import stat

    _, folder = saved_pipeline
    mask = os.umask(0)
    os.umask(mask)
    for path in [folder, *folder.rglob("*")]:
        expected = (0o777 if path.is_dir() else 0o666) & ~mask
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
