"""KARL: error bins, halting masks, per-image token counts, the two training phases, errors."""

import pytest
import torch

from tests.test_flextok import TINY_VAE
from tokenizers_visual.karl import KARL_ERROR_BINS, KARLTokenizer


@pytest.fixture(scope="module")
def karl():
    torch.manual_seed(0)
    return KARLTokenizer(vae_config=TINY_VAE, image_size=32, max_tokens=16, token_counts=[4, 8, 12, 16],
                         codebook_size=64, dim=64, encoder_depth=1, decoder_depth=1, head_dim=32).eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_error_bins_pick_the_next_higher_bin(karl):
    assert len(KARL_ERROR_BINS) == 19 and KARL_ERROR_BINS[0] == 0.005 and KARL_ERROR_BINS[-1] == 0.38
    bins = karl.error_to_bin(torch.tensor([0.001, 0.005, 0.0051, 0.38, 2.0]))
    assert bins.tolist() == [0, 0, 1, 18, 18]


def test_halting_masks_drop_tokens_from_decoder_attention(karl, images):
    logits = torch.tensor([[5.0, -5.0, 5.0, -5.0], [5.0, 5.0, 5.0, 5.0]])  # sigmoid(5) = 0.993 > 0.75
    keep = karl.keep_from_logits(logits)
    assert keep.tolist() == [[True, True, False, True], [True, False, False, False]]  # the first always stays
    tokens = karl.tokenize(images[:1])
    keep = torch.zeros(1, 16, dtype=torch.bool)
    keep[:, :5] = True
    base = karl.detokenize(tokens.ids, keep)
    changed = tokens.ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 64  # halted tokens do not matter
    assert torch.allclose(karl.detokenize(changed, keep), base, atol=1e-5)
    changed[:, 2] = (changed[:, 2] + 1) % 64  # a kept one does
    assert not torch.allclose(karl.detokenize(changed, keep), base, atol=1e-5)


def test_tokenize_returns_per_image_counts(karl, images):
    with torch.no_grad():
        karl.halting[-1].bias.fill_(0.0)
        karl.halting[-1].weight.zero_()
        out = karl.tokenize(images, max_error=[0.01, 0.05, 0.2])
        assert out.ids.shape == (3, 16) and out.num_tokens.tolist() == [16, 16, 16]  # p = 0.5: nothing halts
        karl.halting[-1].bias.fill_(5.0)
        out = karl.tokenize(images, max_error=0.05)
        assert out.num_tokens.tolist() == [1, 1, 1] and torch.equal(out.keep.sum(1), out.num_tokens)
        karl.halting[-1].bias.fill_(0.0)


def test_training_phases_give_finite_losses_and_gradients(images):
    torch.manual_seed(0)
    model = KARLTokenizer(vae_config=TINY_VAE, image_size=32, max_tokens=16, token_counts=[4, 8],
                          codebook_size=64, dim=64, encoder_depth=1, decoder_depth=1, head_dim=32).train()
    latents = model.encode_latents(images)
    losses = model.training_losses(images, latents, generator=torch.Generator().manual_seed(0))
    total = losses["estimate"] + losses["learn"] + losses["halt"]
    total.backward()
    assert torch.isfinite(total) and 4 <= float(losses["budget"]) <= 8
    assert model.halting[1].weight.grad.abs().sum() > 0 and model.latent_tokens.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.vae.parameters())


def test_phase_one_asks_for_low_errors_only(images, monkeypatch):
    """As the official code: the estimation phase, which marks every used token active, is conditioned on
    bins <= 0.04 only (otherwise it teaches "keep all" under the high-error bins phase 2 teaches to halt)."""
    from tokenizers_visual.karl import ESTIMATE_MAX_ERROR

    model = KARLTokenizer(vae_config=TINY_VAE, image_size=32, max_tokens=16, token_counts=[4, 8],
                          codebook_size=64, dim=64, encoder_depth=1, decoder_depth=1, head_dim=32).train()
    seen, encode = [], model.encode

    def recording_encode(latents, error_bin, active=None):
        seen.append(error_bin)
        return encode(latents, error_bin, active)

    monkeypatch.setattr(model, "encode", recording_encode)
    latents = model.encode_latents(images.repeat(8, 1, 1, 1))
    model.training_losses(images.repeat(8, 1, 1, 1), latents, generator=torch.Generator().manual_seed(0))
    phase_one = model.error_bins[seen[0]]
    assert len(seen) == 2 and (phase_one <= ESTIMATE_MAX_ERROR).all() and len(set(seen[0].tolist())) > 1


def test_save_and_load_round_trip(karl, images, tmp_path):
    karl.save_pretrained(tmp_path / "karl")
    loaded = KARLTokenizer.from_pretrained(tmp_path / "karl").eval()
    a, b = karl.tokenize(images, max_error=0.05), loaded.tokenize(images, max_error=0.05)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.keep, b.keep)


def test_bad_inputs(karl, images):
    with pytest.raises(ValueError, match="max_error"):
        karl.tokenize(images, max_error=0)
    with pytest.raises(ValueError, match="max_error"):
        karl.tokenize(images, max_error=[0.1, 0.2])
    with pytest.raises(ValueError, match="32x32"):
        karl.tokenize(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="NaN"):
        karl.tokenize(torch.full((1, 3, 32, 32), float("inf")))
    with pytest.raises(ValueError, match="1..16"):
        karl.detokenize(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="\\[0, 64\\)"):
        karl.detokenize(torch.full((1, 4), 64))
    with pytest.raises(ValueError, match="token_counts"):
        KARLTokenizer(vae_config=TINY_VAE, image_size=32, max_tokens=16, token_counts=[32], dim=64, head_dim=32)
