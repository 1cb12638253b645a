"""Evaluation sampling: one image per seed, independent of batch size and process count."""

import multiprocessing
import os
from pathlib import Path

import pytest
import torch

from pipelines import ARImagePipeline
from tests.conftest import free_port, tiny_transformer
from tokenizers_visual import VQModel
from zoo.metrics.sampling import sample_images
from zoo.utils.distributed import end_processes


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


def _sample_as_rank(pipe, rank: int, port: int, out: Path):
    """One of two forked processes, set up as `accelerate launch --num_processes 2` sets up its processes."""
    from accelerate import PartialState

    torch.set_num_threads(1)  # a forked child must not reuse its parent's OpenMP threads
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    PartialState._reset_state()  # the parent's one-process state came along with the fork
    images = sample_images(pipe, [0, 1, 2, 3, 4], batch_size=2, seed=7, progress=False)
    torch.save({"images": images, "processes": PartialState().num_processes}, out / f"rank{rank}.pt")
    end_processes()


def test_two_processes_give_the_same_images(pipe, tmp_path):
    # forked, not launched: the processes start with torch and zoo imported (a launch spends ~25 s importing);
    # tests/test_train.py runs `accelerate launch` itself
    port = free_port()
    fork = multiprocessing.get_context("fork")
    processes = [fork.Process(target=_sample_as_rank, args=(pipe, rank, port, tmp_path)) for rank in (0, 1)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        if process.is_alive():  # hung (a rendezvous that never completed): fail, leaving no process behind
            process.kill()
    assert [process.exitcode for process in processes] == [0, 0]
    expected = sample_images(pipe, [0, 1, 2, 3, 4], batch_size=2, seed=7, progress=False)
    for rank in (0, 1):  # each process drew its share, and holds all images, gathered
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["processes"] == 2
        torch.testing.assert_close(result["images"], expected, atol=1e-5, rtol=0)


def test_end_processes_closes_an_open_group_and_is_a_no_op_without_one(tmp_path):
    import torch.distributed as dist

    end_processes()  # nothing open: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    end_processes()
    assert not dist.is_initialized()
