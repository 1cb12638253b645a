"""What the tokenizers over a VAE latent space (FlexTok, KARL) share: image checks and scaled latents."""

from __future__ import annotations

import torch


def check_square_images(images: torch.Tensor, size: int):
    """Raise unless images is a non-empty, finite [B, 3, size, size] tensor."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a [B, 3, {size}, {size}] tensor in [-1, 1], got "
                         f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}.")
    if images.shape[0] == 0 or tuple(images.shape[2:]) != (size, size):
        raise ValueError(f"images are {tuple(images.shape[2:])} (batch {images.shape[0]}); this tokenizer "
                         f"takes a non-empty batch of {size}x{size} images: resize or crop them.")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values.")


def vae_encode(vae, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
    """images [B, 3, S, S] in [-1, 1] -> latents scaled as diffusers does: (z - shift) * scaling_factor
    (z the posterior's mean, or a sample)."""
    posterior = vae.encode(images.to(vae.dtype)).latent_dist
    latents = posterior.sample(generator) if sample else posterior.mode()
    return (latents - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor


def vae_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """The inverse scaling, then the VAE decoder: images [B, 3, S, S] (unclamped)."""
    return vae.decode(latents / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)).sample


def frozen_vae(config: dict, image_size: int, patch_size: int):
    """A frozen AutoencoderKL from its config and the patch grid of image_size images over its latents."""
    from diffusers import AutoencoderKL  # imported on use: diffusers' model modules are slow to import

    vae = AutoencoderKL(**config)
    vae.requires_grad_(False)
    downsample = 2 ** (len(vae.config.block_out_channels) - 1)
    if image_size % (downsample * patch_size):
        raise ValueError(f"image_size={image_size} must be a multiple of the VAE's factor {downsample} times "
                         f"patch_size={patch_size}.")
    return vae, (image_size // downsample // patch_size,) * 2


def with_pretrained_vae(cls, vae, **kwargs):
    """Build a latent tokenizer `cls(vae_config=..., **kwargs)` around an AutoencoderKL (a folder, a built-in
    name such as "vae-shapes" or a Hub id), with its weights (the training recipes' starting point)."""
    from diffusers import AutoencoderKL

    from zoo.hub import resolve

    vae = AutoencoderKL.from_pretrained(resolve(vae))
    model = cls(vae_config={k: v for k, v in vae.config.items() if not k.startswith("_")}, **kwargs)
    model.vae.load_state_dict(vae.state_dict())
    return model
