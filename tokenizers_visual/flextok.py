"""`FlexTok`: an image as 1..256 ordered 1D tokens, decoded by rectified flow (Bachmann et al., ICML 2025;
apple/ml-flextok).

    images [-1, 1] --VAE--> latents [C, h, w] --2x2 patches--> encoder with R learned registers
      (`causal_last` mask: patches see patches; register i sees every patch and registers <= i)
      --> linear to 6 dims --> FSQ [8, 8, 8, 5, 5, 5] (64,000 codes) --> ids [B, R]
    ids[:, :k] --> codes --> decoder: noised latent patches and the registers attend jointly; registers
      k.. are replaced by a learned mask token (nested dropout); adaLN-zero on the time step, separately
      for patches and registers; predicts the velocity noise - latents --> Euler from t=1 to 0,
      optional CFG / APG against a learned null condition --> VAE decoder --> images

Because register i only sees registers <= i in the encoder and training keeps a random prefix of
length k in the decoder, the first tokens carry the coarse content and any prefix decodes to a
plausible image. Every sample in a batch may keep its own k (the official code packs one sequence
and allows batch 1).

Where the released code leaves a detail to its Hydra configs on the Hub, zoo follows the values in
`../shared/reference/tokenizers.md`; `weights_registry/converters/flextok.py` maps the official
`encoder.module_dict.*`, `decoder.module_dict.*` and `vae.vae.*` weights onto this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, get_timestep_embedding
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from einops import rearrange
from torch import nn

from zoo.flow.rectified import Guidance, noise_path, sample_euler
from zoo.nn.quantizers import FSQ
from zoo.nn.vit import AdaLNHead, ViTBlock, mup_attention_scale, sincos_2d
from zoo.utils.io import AtomicSaveMixin

from .latents import check_square_images, frozen_vae, vae_decode, vae_encode

# The official tokenizers' VAE: diffusers AutoencoderKL, SDXL layout, 16 latent channels, f8.
FLEXTOK_VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 16, "layers_per_block": 2, "norm_num_groups": 32,
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "sample_size": 256, "scaling_factor": 1.0,
}
KEEP_K_SAMPLING = ("uniform", "pow2")


def patchify(latents: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)(W/p), p*p*C], each patch channels-last (FlexTok's layout)."""
    return rearrange(latents, "b c (h p) (w q) -> b (h w) (p q c)", p=patch_size, q=patch_size)


def unpatchify(patches: torch.Tensor, grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    return rearrange(patches, "b (h w) (p q c) -> b c (h p) (w q)", h=grid[0], w=grid[1], p=patch_size, q=patch_size)


def causal_last_mask(num_patches: int, num_registers: int, device=None) -> torch.Tensor:
    """bool [N + R, N + R], True = may attend: patches see all patches (not the registers); register i
    sees all patches and registers 0..i."""
    n = num_patches + num_registers
    mask = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    mask[:, :num_patches] = True
    return mask


class FlexTokEncoder(nn.Module):
    def __init__(self, patch_dim, grid, dim, depth, head_dim, num_registers, code_dim, mlp_ratio):
        super().__init__()
        self.patch_proj = nn.Linear(patch_dim, dim)
        self.register_buffer("patch_posemb", sincos_2d(*grid, dim))  # saved: converted checkpoints carry theirs
        self.registers = nn.Parameter(torch.empty(num_registers, dim))
        nn.init.trunc_normal_(self.registers, std=0.02)
        scale = mup_attention_scale(head_dim)
        self.blocks = nn.ModuleList(ViTBlock(dim, dim // head_dim, mlp_ratio, scale=scale) for _ in range(depth))
        self.to_codes = AdaLNHead(dim, code_dim)
        nn.init.zeros_(self.to_codes.proj.weight)  # the official LinearHead starts at zero
        nn.init.zeros_(self.to_codes.proj.bias)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """patches [B, N, patch_dim] -> pre-quantisation register codes [B, R, code_dim]."""
        B, N, _ = patches.shape
        x = self.patch_proj(patches) + self.patch_posemb.flatten(0, 1)
        x = torch.cat([x, self.registers.expand(B, -1, -1)], dim=1)
        mask = causal_last_mask(N, self.registers.shape[0], x.device)
        for block in self.blocks:
            x = block(x, mask)
        return self.to_codes(x[:, N:])


class FlexTokDecoder(nn.Module):
    def __init__(self, patch_dim, grid, dim, depth, head_dim, num_registers, code_dim, mlp_ratio, time_channels,
                 max_timestep):
        super().__init__()
        self.time_channels, self.max_timestep = time_channels, max_timestep
        self.from_codes = nn.Linear(code_dim, dim)
        self.register_posemb = nn.Parameter(torch.empty(num_registers, dim))
        self.mask_token = nn.Parameter(torch.empty(dim))  # nested dropout
        self.null_condition = nn.Parameter(torch.empty(dim))  # classifier-free guidance
        for p in (self.register_posemb, self.mask_token, self.null_condition):
            nn.init.trunc_normal_(p, std=0.02)
        self.patch_proj = nn.Linear(patch_dim, dim)
        self.register_buffer("patch_posemb", sincos_2d(*grid, dim))
        self.time_embedding = TimestepEmbedding(time_channels, dim)
        scale = mup_attention_scale(head_dim)
        self.blocks = nn.ModuleList(
            ViTBlock(dim, dim // head_dim, mlp_ratio, scale=scale, adaln_segments=2) for _ in range(depth))
        self.to_patches = AdaLNHead(dim, patch_dim, adaln=True)
        nn.init.zeros_(self.to_patches.proj.weight)
        nn.init.zeros_(self.to_patches.proj.bias)

    def registers(self, codes: torch.Tensor, keep: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
        """codes [B, R, code_dim], keep [B] (registers kept), null [B] bool -> register tokens [B, R, D]."""
        R = codes.shape[1]
        x = self.from_codes(codes) + self.register_posemb
        kept = torch.arange(R, device=codes.device)[None, :] < keep[:, None]  # [B, R]
        x = torch.where(kept[..., None], x, self.mask_token)
        return torch.where(null[:, None, None], self.null_condition, x)

    def forward(self, noised_patches, t, codes, keep, null):
        """noised_patches [B, N, patch_dim], t [B] in [0, 1] -> velocity patches [B, N, patch_dim]."""
        B, N, _ = noised_patches.shape
        x = self.patch_proj(noised_patches) + self.patch_posemb.flatten(0, 1)
        registers = self.registers(codes, keep, null)
        x = torch.cat([x, registers], dim=1)
        frequencies = get_timestep_embedding(t, self.time_channels, flip_sin_to_cos=True, downscale_freq_shift=0,
                                             scale=1000.0 / self.max_timestep, max_period=256)
        condition = self.time_embedding(frequencies.to(x.dtype))  # [B, D]
        segments = [N, registers.shape[1]]
        for block in self.blocks:
            x = block(x, None, condition, segments)
        return self.to_patches(x[:, :N], condition)


@dataclass
class FlexTokOutput(BaseOutput):
    """Training forward: `loss` (flow matching MSE), the sampled `keep` per image and the token `ids`.

    Every field after the first defaults to None, as in transformers' `ModelOutput`: accelerate rebuilds
    outputs from a dict under mixed precision (`convert_to_fp32`), which needs that.
    """

    loss: torch.Tensor
    keep: torch.Tensor | None = None
    ids: torch.Tensor | None = None


class FlexTok(AtomicSaveMixin, ModelMixin, ConfigMixin):
    """FlexTok tokenizer: VAE + register encoder + FSQ + rectified-flow decoder.

    Args:
        vae_config: `AutoencoderKL` config of the latent space (default: the official 16-channel f8 layout).
        image_size: square image size in pixels; the latent grid is image_size / f, in patches of `patch_size`.
        num_registers: 1D tokens per image (256 in the official models).
        fsq_levels: FSQ levels; the code dimension is their count.
        encoder_dim / encoder_depth, decoder_dim / decoder_depth: widths and depths (heads = dim / head_dim).
        keep_k_sampling: training distribution of the kept prefix length: "uniform" over 1..R or "pow2".
        null_condition_prob: training probability that an image's registers become the null condition.
        time_channels, max_timestep: the sinusoidal time embedding (t in [0, max_timestep]).
        sample_posterior: draw VAE latents from the posterior instead of taking its mean.

    Examples:
        >>> tok = FlexTok.from_pretrained("runs/flextok-shapes/model")   # zoo train flextok-shapes  # doctest: +SKIP
        >>> ids = tok.tokenize(images)                  # [B, R] ids, coarse to fine          # doctest: +SKIP
        >>> tok.detokenize(ids[:, :4])                  # any prefix decodes                  # doctest: +SKIP
        >>> tok.detokenize([ids[0, :1], ids[1, :16]])   # a different k per image, one batch  # doctest: +SKIP
    """

    @register_to_config
    def __init__(
        self,
        vae_config: dict | None = None,
        image_size: int = 256,
        patch_size: int = 2,
        num_registers: int = 256,
        fsq_levels: list[int] | tuple[int, ...] = (8, 8, 8, 5, 5, 5),
        encoder_dim: int = 768,
        encoder_depth: int = 12,
        decoder_dim: int = 768,
        decoder_depth: int = 12,
        head_dim: int = 64,
        mlp_ratio: float = 4.0,
        keep_k_sampling: str = "uniform",
        null_condition_prob: float = 0.1,
        time_channels: int = 256,
        max_timestep: float = 1.0,
        sample_posterior: bool = False,
    ):
        super().__init__()
        if keep_k_sampling not in KEEP_K_SAMPLING:
            raise ValueError(f"keep_k_sampling={keep_k_sampling!r}; pass one of {KEEP_K_SAMPLING}.")
        for name, dim in (("encoder_dim", encoder_dim), ("decoder_dim", decoder_dim)):
            if dim % head_dim:
                raise ValueError(f"{name}={dim} is not a multiple of head_dim={head_dim}.")
        self.vae, self.grid = frozen_vae(vae_config or FLEXTOK_VAE_CONFIG, image_size, patch_size)
        self.downsample = image_size // patch_size // self.grid[0]
        channels = self.vae.config.latent_channels
        patch_dim = channels * patch_size ** 2
        self.quantizer = FSQ(list(fsq_levels))
        code_dim = self.quantizer.dim
        self.encoder = FlexTokEncoder(patch_dim, self.grid, encoder_dim, encoder_depth, head_dim, num_registers,
                                      code_dim, mlp_ratio)
        self.decoder = FlexTokDecoder(patch_dim, self.grid, decoder_dim, decoder_depth, head_dim, num_registers,
                                      code_dim, mlp_ratio, time_channels, max_timestep)

    @property
    def num_registers(self) -> int:
        return self.config.num_registers

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.config.image_size // self.downsample
        return self.vae.config.latent_channels, side, side

    # ------------------------------------------------------------------ checks
    def check_images(self, images: torch.Tensor):
        check_square_images(images, self.config.image_size)

    def check_num_tokens(self, k) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.num_registers:
            raise ValueError(f"the number of tokens must be an int in 1..{self.num_registers}, got {k!r}.")
        return k

    def _pad_ids(self, ids) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [B, k] or a list of 1D id tensors (each 1..R long) -> (ids [B, R] zero-padded, keep [B])."""
        rows = list(ids) if isinstance(ids, (list, tuple)) else None
        if rows is None:
            if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
                raise ValueError(f"ids must be a [B, k] tensor or a list of 1D tensors, got "
                                 f"{type(ids).__name__} {tuple(getattr(ids, 'shape', ()))}.")
            rows = list(ids)
        if not rows:
            raise ValueError("ids is empty; pass at least one row of token ids.")
        R = self.num_registers
        padded = torch.zeros(len(rows), R, dtype=torch.long, device=self.device)
        keep = torch.zeros(len(rows), dtype=torch.long, device=self.device)
        for i, row in enumerate(rows):
            if not isinstance(row, torch.Tensor) or row.dim() != 1 or row.dtype.is_floating_point:
                raise ValueError(f"row {i} of ids must be a 1D integer tensor, got {getattr(row, 'shape', row)!r}.")
            self.check_num_tokens(row.shape[0])
            padded[i, : row.shape[0]] = row
            keep[i] = row.shape[0]
        self.quantizer.indices_to_codes(padded)  # range check with a clear message
        return padded, keep

    # ------------------------------------------------------------------ VAE latents
    def encode_latents(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """images [B, 3, S, S] in [-1, 1] -> scaled VAE latents [B, C, S/f, S/f]."""
        return vae_encode(self.vae, images, self.config.sample_posterior, generator)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return vae_decode(self.vae, latents)

    # ------------------------------------------------------------------ tokens
    def encode(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents [B, C, h, w] -> (FSQ codes [B, R, code_dim] with straight-through gradients, ids [B, R])."""
        return self.quantizer(self.encoder(patchify(latents, self.config.patch_size)))

    @torch.no_grad()
    def tokenize(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, S, S] in [-1, 1] -> token ids [B, num_registers] (int64), coarse to fine."""
        self.check_images(images)
        return self.encode(self.encode_latents(images))[1]

    def velocity(self, noised_latents, t, codes, keep, null) -> torch.Tensor:
        """The decoder: velocity [B, C, h, w] at x_t = noised_latents, time t [B]."""
        p = self.config.patch_size
        out = self.decoder(patchify(noised_latents, p), t, codes, keep, null)
        return unpatchify(out, self.grid, p)

    @torch.no_grad()
    def detokenize(
        self,
        ids: torch.Tensor | list[torch.Tensor],
        num_inference_steps: int = 20,
        guidance_scale: float = 7.5,
        apg: bool = True,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        callback=None,
    ) -> torch.Tensor:
        """ids [B, k] (any k in 1..R) or a list of B 1D tensors of different lengths -> images [B, 3, S, S]
        in about [-1, 1]. Defaults are the official README's (20 Euler steps, guidance 7.5 with APG);
        `guidance_scale=1` samples without guidance. `latents` overrides the initial noise."""
        padded, keep = self._pad_ids(ids)
        B = padded.shape[0]
        guidance = Guidance(float(guidance_scale), apg=apg)
        codes = self.quantizer.indices_to_codes(padded).to(self.dtype)
        shape = (B, *self.latent_shape)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self.device, dtype=self.dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}.")
        no_null = torch.zeros(B, dtype=torch.bool, device=self.device)

        def velocity(x, t):
            if not guidance.active:
                return self.velocity(x, t, codes, keep, no_null)
            both = self.velocity(x.repeat(2, 1, 1, 1), t.repeat(2), codes.repeat(2, 1, 1), keep.repeat(2),
                                 torch.cat([no_null, ~no_null]))
            cond, uncond = both.chunk(2)
            return guidance(cond, uncond)

        return self.decode_latents(sample_euler(velocity, latents, num_inference_steps, callback))

    # ------------------------------------------------------------------ training
    def sample_keep(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Nested dropout: how many registers each image keeps, 1..R."""
        R = self.num_registers
        if self.config.keep_k_sampling == "uniform":
            return torch.randint(1, R + 1, (batch_size,), generator=generator).to(self.device)
        powers = torch.tensor([2 ** i for i in range(R.bit_length()) if 2 ** i <= R])
        return powers[torch.randint(len(powers), (batch_size,), generator=generator)].to(self.device)

    def forward(self, latents: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, keep: torch.Tensor | None = None,
                null: torch.Tensor | None = None) -> FlexTokOutput:
        """Flow-matching loss on scaled latents [B, C, h, w] at times t [B]; `keep` and `null` default to
        nested dropout and null-condition dropout samples."""
        B = latents.shape[0]
        codes, ids = self.encode(latents)
        keep = self.sample_keep(B) if keep is None else keep
        if null is None:
            null = torch.rand(B, device=latents.device) < self.config.null_condition_prob
        noised, target = noise_path(latents, noise, t)
        loss = F.mse_loss(self.velocity(noised, t, codes, keep, null).float(), target.float())
        return FlexTokOutput(loss=loss, keep=keep, ids=ids)
