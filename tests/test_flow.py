"""The Dirac-mixture flow map of distilled decoding, (noise, tokens) pairs from a teacher, and REPA."""

import pytest
import torch

from pipelines import ARImagePipeline
from tests.conftest import tiny_transformer
from tokenizers_visual import VQModel
from zoo.ar import generate
from zoo.flow import DiracFlowSampler, dirac_flow_map, dirac_velocity
from zoo.flow.pairs import PairDataset, write_pairs


def unit_codebook(V, C, seed=1):
    return torch.nn.functional.normalize(torch.randn(V, C, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_flow_map_reaches_codewords_with_the_mixture_frequencies():
    V, C, n = 16, 8, 20000
    codebook = unit_codebook(V, C)
    p = torch.softmax(torch.randn(V, generator=torch.Generator().manual_seed(2)) * 1.5, 0)
    noise = torch.randn(n, C, generator=torch.Generator().manual_seed(3))
    ids, x0 = dirac_flow_map(noise, p.expand(n, V), codebook, num_steps=32)
    freq = torch.bincount(ids, minlength=V).double() / n
    # An exact map gives multinomial frequencies: standard error sqrt(p(1-p)/n) per code (<= 0.0035
    # here). 4.5 standard errors over 16 codes would be exceeded by chance with probability ~1e-4, and
    # the seed is fixed; the 32-step solver's own bias measured below the sampling noise (TV 0.009 vs
    # 0.010 for true multinomial draws), while e.g. snapping noise to its nearest codeword is off by >0.05.
    bound = 4.5 * (p * (1 - p) / n).sqrt() + 1e-3
    assert ((freq - p.double()).abs() <= bound).all(), (freq - p).abs().max()
    torch.testing.assert_close(x0, codebook[ids], atol=1e-4, rtol=0)  # the endpoint is a codeword
    nearest = torch.cdist(noise, codebook).argmin(1)  # what a naive map would do: clearly different
    assert (torch.bincount(nearest, minlength=V).double() / n - p).abs().max() > 0.05


def test_flow_map_is_deterministic_and_respects_zero_probabilities():
    codebook = unit_codebook(32, 8)
    p = torch.zeros(4, 32)
    p[:, [3, 7]] = torch.tensor([0.25, 0.75])
    noise = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    ids, _ = dirac_flow_map(noise, p, codebook)
    assert torch.equal(ids, dirac_flow_map(noise, p, codebook)[0])
    assert set(ids.tolist()) <= {3, 7}
    one_hot = torch.zeros(4, 32).index_fill_(1, torch.tensor([5]), 1.0)
    assert dirac_flow_map(noise, one_hot, codebook)[0].tolist() == [5, 5, 5, 5]


def test_velocity_at_t1_points_from_the_mixture_mean_to_the_noise():
    codebook, p = unit_codebook(8, 4), torch.softmax(torch.randn(8), 0)
    x = torch.randn(3, 4)
    torch.testing.assert_close(dirac_velocity(x, 1.0, p.expand(3, 8), codebook), x - p @ codebook)
    with pytest.raises(ValueError, match="t must lie in"):
        dirac_velocity(x, 0.0, p.expand(3, 8), codebook)


@pytest.mark.parametrize("args,message", [
    ((torch.randn(2, 5), torch.ones(2, 8) / 8, unit_codebook(8, 4)), "noise must be"),
    ((torch.randn(2, 4), torch.ones(3, 8) / 8, unit_codebook(8, 4)), "same leading shape"),
    ((torch.randn(2, 4), torch.ones(2, 8) / 8, torch.randn(8)), "codebook must be"),
    ((torch.full((2, 4), float("nan")), torch.ones(2, 8) / 8, unit_codebook(8, 4)), "non-finite"),
])
def test_bad_inputs(args, message):
    with pytest.raises(ValueError, match=message):
        dirac_flow_map(*args)
    with pytest.raises(ValueError, match="num_steps"):
        dirac_flow_map(torch.randn(2, 4), torch.ones(2, 8) / 8, unit_codebook(8, 4), num_steps=0)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    vq = VQModel(codebook_size=64, codebook_dim=4, encoder_ch=32, decoder_ch=32, encoder_ch_mult=[1, 1],
                 decoder_ch_mult=[1, 1], num_res_blocks=1, z_channels=32).eval()
    model = tiny_transformer()
    torch.nn.init.normal_(model.head.weight, std=0.5)  # a peaky teacher, so the map has work to do
    return ARImagePipeline(transformer=model, vqvae=vq)


def test_generate_through_the_flow_map(teacher):
    model, codebook = teacher.transformer, teacher.vqvae.codebook.detach()
    noise = torch.randn(3, 16, 4, generator=torch.Generator().manual_seed(0))
    out = generate(model, 16, class_labels=torch.tensor([1, 2, 3]), guidance_scale=2.0, return_probs=True,
                   sampler=DiracFlowSampler(noise, codebook))
    again = generate(model, 16, class_labels=torch.tensor([1, 2, 3]), guidance_scale=2.0,
                     sampler=DiracFlowSampler(noise, codebook)).tokens
    assert torch.equal(out.tokens, again)
    # every token is the flow map of its own noise under the teacher's distribution at that position
    assert torch.equal(out.tokens, dirac_flow_map(noise, out.probs, codebook)[0])
    with pytest.raises(ValueError, match="noise must be"):
        DiracFlowSampler(torch.randn(3, 16), codebook)


def test_pairs_are_resumable_and_loadable(teacher, tmp_path):
    out = write_pairs(teacher, tmp_path / "pairs", num_pairs=10, shard_size=4, batch_size=3, progress=False)
    shards = sorted(out.glob("pairs-*.safetensors"))
    assert len(shards) == 3
    data = PairDataset(out)
    assert len(data) == 10 and data[0]["noise"].shape == (16, 4) and data[0]["ids"].shape == (16,)
    assert data.labels.tolist() == [i % 10 for i in range(10)]
    first = data.ids.clone()
    shards[1].unlink()  # an interrupted run: the missing shard is made again, identically
    write_pairs(teacher, out, num_pairs=10, shard_size=4, batch_size=3, progress=False)
    assert torch.equal(PairDataset(out).ids, first)
    with pytest.raises(ValueError, match="other settings"):
        write_pairs(teacher, out, num_pairs=10, shard_size=4, guidance_scale=3.0, progress=False)
    with pytest.raises(FileNotFoundError, match="no pair shards"):
        PairDataset(tmp_path / "empty")


def test_repa_helpers():
    from zoo.flow.repa import REPAProjector, features_on_grid, repa_loss

    features = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    on_grid = features_on_grid(features, (4, 4))  # same size: only flattened, raster order
    assert on_grid.shape == (2, 16, 3) and torch.equal(on_grid[1, 5], features[1, :, 1, 1])
    assert features_on_grid(features, (8, 8)).shape == (2, 64, 3)
    target = torch.randn(2, 16, 3)
    assert repa_loss(2 * target, target).item() == pytest.approx(-1.0)  # cosine: scale does not matter
    assert repa_loss(-target, target).item() == pytest.approx(1.0)
    assert REPAProjector(8, 3, hidden_dim=16)(torch.randn(2, 16, 8)).shape == (2, 16, 3)
    with pytest.raises(ValueError, match="same"):
        repa_loss(torch.randn(2, 16, 4), target)
    with pytest.raises(ValueError, match=r"\[B, C, h, w\]"):
        features_on_grid(torch.randn(2, 16, 3), (4, 4))
    with pytest.raises(ValueError, match="hidden_dim"):
        REPAProjector(8, 3, hidden_dim=0)
