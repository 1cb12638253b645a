import pytest
import torch

from zoo.ar.sampling import logits_to_probs, sample_from_probs


def test_top_k_top_p_and_greedy():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert (logits_to_probs(logits, top_k=2) > 0).sum() == 2
    # nucleus 0.7: 0.5 alone is short of it, 0.5 + 0.3 reaches it -> two tokens kept
    assert logits_to_probs(logits, top_p=0.7)[0].tolist() == pytest.approx([0.625, 0.375, 0, 0])
    assert logits_to_probs(logits, temperature=0)[0].tolist() == [1, 0, 0, 0]
    hot = logits_to_probs(logits, temperature=2.0)[0]
    assert hot[0] < 0.5 and hot[3] > 0.05  # flatter


def test_inverse_cdf_sampling_matches_frequencies_and_skips_zeros():
    probs = torch.tensor([0.0, 0.2, 0.0, 0.5, 0.3, 0.0])
    draws = sample_from_probs(probs.expand(20000, 1, 6), torch.Generator().manual_seed(0)).flatten()
    counts = torch.bincount(draws, minlength=6).float() / draws.numel()
    assert counts[[0, 2, 5]].sum() == 0
    assert torch.allclose(counts, probs, atol=0.015)


def test_per_row_generators():
    probs = torch.full((2, 3, 10), 0.1)
    a = sample_from_probs(probs, [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
    b = sample_from_probs(probs[:1], [torch.Generator().manual_seed(1)])
    assert torch.equal(a[:1], b)
