"""`KARLTokenizer`: one-pass adaptive-length 1D tokenization (Duggal et al., arXiv 2507.07995;
ShivamDuggal4/karl).

The user states how much reconstruction error an image may have; the encoder, told that target
through a prepended condition token, decides per 1D token whether to halt, and the number of tokens
not halted is the image's "complexity":

    encoder: [error-bin token | image patches | latent tokens 0..T-1]  (a plain ViT, full attention)
      -> per latent token: a halting probability (LN, Linear(w, 512), tanh, Linear(512, 1), sigmoid)
         and a code (LN, Linear(w, 12), l2-normalised VQ)
    decoder: [mask tokens over the latent grid | embedded codes + per-index embedding], where tokens
      with halting probability > 0.75 are removed from attention -> the latent grid

Training alternates the two phases of KARL's "upside-down RL" iteration (`KARLTokenizer.training_losses`):
estimate the error a random budget of T tokens achieves (no halting), then re-encode with the full
budget conditioned on that error and learn to halt exactly the tokens after T.

zoo's version runs in the latent space of the FlexTok VAE and regresses the latent patches, as KARL's
VAE variant does (the released ImageNet model predicts VQGAN proxy codes instead), and it has no
perceptual or adversarial stage (no pretrained networks can be downloaded here). The error is the mean
absolute error of the decoded image in [0, 1] pixel units, KARL's `desired_reconstruction_quality`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn

from zoo.nn.quantizers import VectorQuantizer
from zoo.nn.vit import AdaLNHead, ViTBlock, mup_attention_scale, sincos_2d
from zoo.utils.io import AtomicSaveMixin

from .flextok import FLEXTOK_VAE_CONFIG, patchify, unpatchify
from .latents import check_square_images, frozen_vae, vae_decode, vae_encode

# KARL's 19 error bins span 0.005 .. 0.38 (mean L1 in pixel units); zoo spaces them geometrically.
KARL_ERROR_BINS = [round(float(x), 4) for x in np.geomspace(0.005, 0.38, 19)]
# phase 1 ("estimate image complexity") draws its condition from the bins up to this error, as the official code
ESTIMATE_MAX_ERROR = 0.04


@dataclass
class KARLTokens(BaseOutput):
    """ids [B, T]; keep [B, T] bool (False = halted: the decoder ignores the token); num_tokens [B].

    Examples:
        >>> tokens = karl.tokenize(images, max_error=0.05)           # doctest: +SKIP
        >>> tokens.ids[0, tokens.keep[0]]    # the tokens image 0 keeps  # doctest: +SKIP
    """

    ids: torch.Tensor
    keep: torch.Tensor
    num_tokens: torch.Tensor


class KARLTokenizer(AtomicSaveMixin, ModelMixin, ConfigMixin):
    """KARL over VAE latents.

    Args:
        vae_config: the `AutoencoderKL` config (the recipe copies FlexTok's VAE).
        image_size, patch_size: images are image_size^2 pixels; latents are cut into patch_size^2 patches.
        max_tokens: the token budget T (KARL: 256 at inference, up to 512 learned latent tokens).
        token_counts: budgets sampled in the estimation phase (KARL: 16, 32, ..., 368).
        error_bins: ascending error thresholds of the condition token (KARL: 19 bins, 0.005 .. 0.38).
        codebook_size, code_dim: the l2-normalised VQ (KARL: 4096 x 12).
        dim, encoder_depth, decoder_depth, head_dim: the two ViTs.
        halt_threshold: tokens whose halting probability exceeds it are dropped (KARL: 0.75).

    Examples:
        >>> karl = KARLTokenizer.from_pretrained("runs/karl-shapes/model")   # zoo train karl-shapes  # doctest: +SKIP
        >>> tokens = karl.tokenize(images, max_error=0.03)                   # doctest: +SKIP
        >>> tokens.num_tokens            # how many tokens each image needs at that error   # doctest: +SKIP
        >>> karl.detokenize(tokens.ids, tokens.keep)                         # doctest: +SKIP
    """

    @register_to_config
    def __init__(
        self,
        vae_config: dict | None = None,
        image_size: int = 256,
        patch_size: int = 2,
        max_tokens: int = 256,
        token_counts: list[int] | None = None,
        error_bins: list[float] | None = None,
        codebook_size: int = 4096,
        code_dim: int = 12,
        dim: int = 768,
        encoder_depth: int = 8,
        decoder_depth: int = 8,
        head_dim: int = 64,
        mlp_ratio: float = 4.0,
        halt_threshold: float = 0.75,
        halt_hidden: int = 512,
    ):
        super().__init__()
        counts = token_counts or list(range(16, max_tokens + 1, 16))
        bins = error_bins or KARL_ERROR_BINS
        if not counts or min(counts) < 1 or max(counts) > max_tokens:
            raise ValueError(f"token_counts must lie in 1..max_tokens={max_tokens}, got {counts}.")
        if sorted(bins) != list(bins) or min(bins) <= 0:
            raise ValueError(f"error_bins must be positive and ascending, got {bins}.")
        if dim % head_dim:
            raise ValueError(f"dim={dim} is not a multiple of head_dim={head_dim}.")
        self.vae, self.grid = frozen_vae(vae_config or FLEXTOK_VAE_CONFIG, image_size, patch_size)
        patch_dim = self.vae.config.latent_channels * patch_size ** 2
        heads, scale = dim // head_dim, mup_attention_scale(head_dim)

        self.error_embedding = nn.Embedding(len(bins), dim)
        self.patch_proj = nn.Linear(patch_dim, dim)
        self.register_buffer("patch_posemb", sincos_2d(*self.grid, dim))
        self.latent_tokens = nn.Parameter(torch.empty(max_tokens, dim))
        self.encoder = nn.ModuleList(ViTBlock(dim, heads, mlp_ratio, scale=scale) for _ in range(encoder_depth))
        self.halting = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, halt_hidden), nn.Tanh(),
                                     nn.Linear(halt_hidden, 1))
        self.to_codes = AdaLNHead(dim, code_dim)
        self.quantizer = VectorQuantizer(codebook_size, code_dim, l2_norm=True, beta=0.25)
        self.from_codes = nn.Linear(code_dim, dim)
        self.token_index_embedding = nn.Parameter(torch.empty(max_tokens, dim))
        self.mask_token = nn.Parameter(torch.empty(dim))
        self.decoder = nn.ModuleList(ViTBlock(dim, heads, mlp_ratio, scale=scale) for _ in range(decoder_depth))
        self.to_patches = AdaLNHead(dim, patch_dim)
        for p in (self.latent_tokens, self.token_index_embedding, self.mask_token):
            nn.init.trunc_normal_(p, std=0.02)

    # ------------------------------------------------------------------ helpers
    @property
    def max_tokens(self) -> int:
        return self.config.max_tokens

    @property
    def error_bins(self) -> torch.Tensor:
        return torch.tensor(self.config.error_bins or KARL_ERROR_BINS)

    def error_to_bin(self, errors: torch.Tensor) -> torch.Tensor:
        """Errors [B] -> the index of the smallest bin >= each error (the last bin above the range)."""
        bins = self.error_bins.to(errors.device)
        return torch.searchsorted(bins, errors.float().contiguous()).clamp(max=len(bins) - 1)

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        return vae_encode(self.vae, images)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return vae_decode(self.vae, latents)

    @staticmethod
    def _key_mask(prefix: int, keep: torch.Tensor) -> torch.Tensor:
        """Attention mask [B, 1, 1, prefix + T]: the first `prefix` positions always, then the kept tokens."""
        always = torch.ones(keep.shape[0], prefix, dtype=torch.bool, device=keep.device)
        return torch.cat([always, keep], dim=1)[:, None, None, :]

    # ------------------------------------------------------------------ encoder / decoder
    def encode(self, latents: torch.Tensor, error_bin: torch.Tensor, active: torch.Tensor | None = None):
        """latents [B, C, h, w], error_bin [B] -> (pre-quantisation codes [B, T, code_dim], halting logits [B, T]).
        `active` [B, T] bool limits the latent tokens each image may use (the budget); default all."""
        B = latents.shape[0]
        patches = self.patch_proj(patchify(latents, self.config.patch_size)) + self.patch_posemb.flatten(0, 1)
        x = torch.cat([self.error_embedding(error_bin)[:, None], patches, self.latent_tokens.expand(B, -1, -1)], 1)
        prefix = 1 + patches.shape[1]
        mask = None if active is None else self._key_mask(prefix, active)
        for block in self.encoder:
            x = block(x, mask)
        tokens = x[:, prefix:]
        return self.to_codes(tokens), self.halting(tokens).squeeze(-1)

    def quantize(self, codes: torch.Tensor):
        """[B, T, code_dim] -> (quantised [B, T, code_dim] with straight-through gradients, ids [B, T], losses)."""
        quantized, ids, losses = self.quantizer(codes.transpose(1, 2)[..., None])
        return quantized[..., 0].transpose(1, 2), ids[..., 0], losses

    def decode(self, quantized: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Quantised codes [B, T, code_dim] and keep [B, T] bool -> latents [B, C, h, w]."""
        B, T, _ = quantized.shape
        N = self.grid[0] * self.grid[1]
        grid = (self.mask_token + self.patch_posemb.flatten(0, 1)).expand(B, -1, -1)
        x = torch.cat([grid, self.from_codes(quantized) + self.token_index_embedding[:T]], dim=1)
        mask = self._key_mask(N, keep)
        for block in self.decoder:
            x = block(x, mask)
        return unpatchify(self.to_patches(x[:, :N]), self.grid, self.config.patch_size)

    def keep_from_logits(self, halt_logits: torch.Tensor) -> torch.Tensor:
        """Tokens whose halting probability is at most the threshold are kept; at least the first one."""
        keep = torch.sigmoid(halt_logits) <= self.config.halt_threshold
        keep[:, 0] = True
        return keep

    # ------------------------------------------------------------------ user API
    def check_images(self, images: torch.Tensor):
        check_square_images(images, self.config.image_size)

    def _errors(self, max_error, batch_size: int) -> torch.Tensor:
        errors = torch.as_tensor(max_error, dtype=torch.float32).flatten()
        if errors.numel() == 1:
            errors = errors.expand(batch_size)
        if errors.numel() != batch_size or not torch.isfinite(errors).all() or (errors <= 0).any():
            raise ValueError(f"max_error must be a positive number or one per image ({batch_size}), got {max_error!r}.")
        return errors.to(self.device)

    @torch.no_grad()
    def tokenize(self, images: torch.Tensor, max_error: float | list[float] | torch.Tensor = 0.05) -> KARLTokens:
        """images [B, 3, S, S] in [-1, 1] -> KARLTokens: ids [B, T], keep [B, T], num_tokens [B] (the
        tokens not halted at this error target: the image's estimated complexity)."""
        self.check_images(images)
        error_bin = self.error_to_bin(self._errors(max_error, images.shape[0]))
        codes, halt_logits = self.encode(self.encode_latents(images), error_bin)
        keep = self.keep_from_logits(halt_logits)
        return KARLTokens(ids=self.quantize(codes)[1], keep=keep, num_tokens=keep.sum(1))

    @torch.no_grad()
    def detokenize(self, ids: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """ids [B, T] (T <= max_tokens) and keep [B, T] bool (default: all) -> images [B, 3, S, S]."""
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or not 1 <= ids.shape[1] <= self.max_tokens:
            raise ValueError(f"ids must be [B, T] with T in 1..{self.max_tokens}, got "
                             f"{tuple(getattr(ids, 'shape', ()))}.")
        if ids.min() < 0 or ids.max() >= self.config.codebook_size:
            raise ValueError(f"token ids must lie in [0, {self.config.codebook_size}).")
        keep = torch.ones_like(ids, dtype=torch.bool) if keep is None else keep.to(ids.device).bool()
        if keep.shape != ids.shape:
            raise ValueError(f"keep must have the shape of ids {tuple(ids.shape)}, got {tuple(keep.shape)}.")
        quantized = self.quantizer.embed(ids.to(self.device)).to(self.dtype)
        return self.decode_latents(self.decode(quantized, keep.to(self.device)))

    # ------------------------------------------------------------------ training
    @staticmethod
    def image_error(reconstructions: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Mean absolute error per image, in [0, 1] pixel units, of reconstructions [B, 3, S, S] in [-1, 1]
        (clamped) against images: the error KARL's targets are stated in."""
        return ((reconstructions.clamp(-1, 1) - images).abs() / 2).flatten(1).mean(1)

    def pixel_error(self, latents_hat: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """`image_error` of the decoded latents."""
        return self.image_error(self.decode_latents(latents_hat), images)

    def training_losses(self, images: torch.Tensor, latents: torch.Tensor, generator=None) -> dict:
        """One KARL iteration on a batch; returns the losses (sum them) and statistics.

        1. Estimate image complexity: a random budget T_i per image (from `token_counts`) and a random error
           bin at most `ESTIMATE_MAX_ERROR` (the official code's; its decay of that distribution toward the
           bins the model reaches is left out); encode and decode with only the first T_i tokens, no
           halting; measure the error it reaches; halting target 0 for the used tokens.
        2. Learn to tokenize complexity: re-encode with the full budget, conditioned on that error's bin;
           halting target 1 for tokens T_i.., 0 before; the decoder drops the tokens it predicts halted.
        """
        B, T, device = latents.shape[0], self.max_tokens, latents.device
        counts = torch.tensor(self.config.token_counts or list(range(16, T + 1, 16)), device=device)
        budget = counts[torch.randint(len(counts), (B,), generator=generator).to(device)]
        used = torch.arange(T, device=device)[None] < budget[:, None]  # [B, T]
        # the official phase 1 asks for a low error (a bin <= 0.04) while it marks every used token active;
        # asking for any bin would also teach "keep every token" under the high-error bins that phase 2
        # teaches to halt early, and the two targets cancel (zoo's first run never learnt to halt)
        low_bins = int((self.error_bins <= ESTIMATE_MAX_ERROR).sum().clamp(min=1))
        random_bin = torch.randint(low_bins, (B,), generator=generator).to(device)

        codes, halt = self.encode(latents, random_bin, used)
        quantized, _, vq = self.quantize(codes)
        recon = self.decode(quantized, used)
        estimate = F.mse_loss(recon, latents) + vq["codebook"] + vq["commitment"]
        halt_active = F.binary_cross_entropy_with_logits(halt[used], torch.zeros_like(halt[used]))
        with torch.no_grad():
            reached = self.pixel_error(recon, images)

        codes, halt = self.encode(latents, self.error_to_bin(reached), None)
        quantized, _, vq = self.quantize(codes)
        keep = self.keep_from_logits(halt.detach())
        learn = F.mse_loss(self.decode(quantized, keep), latents) + vq["codebook"] + vq["commitment"]
        halt_learn = F.binary_cross_entropy_with_logits(halt, (~used).float())
        return {"estimate": estimate, "learn": learn, "halt": halt_active + halt_learn,
                "error": reached.mean().detach(), "kept": keep.sum(1).float().mean().detach(),
                "budget": budget.float().mean().detach()}
