"""Evaluation sampling: one image per seed, independent of batch size and process count."""

import os

import pytest
import torch

from pipelines import ARImagePipeline
from tests.conftest import accelerate_launch, tiny_transformer
from tokenizers_visual import VQModel
from zoo.metrics.sampling import sample_images

SCRIPT = """
import sys, torch
from accelerate import PartialState
from pipelines import ARImagePipeline
from zoo.metrics.sampling import sample_images
from zoo.utils.distributed import cpu_processes, end_processes
pipe = ARImagePipeline.from_pretrained(sys.argv[1])
images = sample_images(pipe, [0, 1, 2, 3, 4], batch_size=2, seed=7, progress=False)
if PartialState(cpu=cpu_processes()).is_main_process:
    torch.save(images, sys.argv[2])
end_processes()
"""


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    vq = VQModel(codebook_size=64, codebook_dim=4, encoder_ch=32, decoder_ch=32, encoder_ch_mult=[1, 1],
                 decoder_ch_mult=[1, 1], num_res_blocks=1, z_channels=32).eval()
    return ARImagePipeline(transformer=tiny_transformer(), vqvae=vq)


def test_images_do_not_depend_on_batch_size(pipe):
    a = sample_images(pipe, [0, 1, 2, 3, 4], batch_size=2, seed=7, progress=False)
    b = sample_images(pipe, [0, 1, 2, 3, 4], batch_size=5, seed=7, progress=False)
    assert a.shape == (5, 3, 8, 8) and a.min() >= -1 and a.max() <= 1
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    single = pipe(class_labels=[3], generator=torch.Generator().manual_seed(7 + 3), output_type="pt").images
    torch.testing.assert_close(a[3:4], single * 2 - 1, atol=1e-5, rtol=0)


def test_bad_arguments(pipe):
    with pytest.raises(ValueError, match="batch_size"):
        sample_images(pipe, [0], batch_size=0)
    with pytest.raises(ValueError, match="at least one condition"):
        sample_images(pipe, [])


def test_two_processes_give_the_same_images(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    (tmp_path / "sample.py").write_text(SCRIPT)
    result = accelerate_launch(str(tmp_path / "sample.py"), str(tmp_path / "pipe"), str(tmp_path / "images.pt"),
                               cwd=os.getcwd())
    assert result.returncode == 0, result.stderr[-3000:]
    expected = sample_images(pipe, [0, 1, 2, 3, 4], batch_size=2, seed=7, progress=False)
    torch.testing.assert_close(torch.load(tmp_path / "images.pt"), expected, atol=1e-5, rtol=0)


def test_end_processes_closes_an_open_group_and_is_a_no_op_without_one(tmp_path):
    import torch.distributed as dist

    from zoo.utils.distributed import end_processes

    end_processes()  # nothing open: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    end_processes()
    assert not dist.is_initialized()
