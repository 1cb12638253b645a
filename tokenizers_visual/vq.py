"""`VQModel`: LlamaGen's image tokenizer (VQ-16 / VQ-8 layout).

A taming/MaskGIT-style convolutional encoder and decoder (GroupNorm(32), swish, residual blocks,
self-attention at the lowest resolution and in the middle), a 1x1 `quant_conv` down to a small code
dimension, an l2-normalised codebook lookup, and a 1x1 `post_quant_conv` back up
(FoundationVision/LlamaGen, tokenizer/tokenizer_image/vq_model.py). Images are [-1, 1].

    vq = VQModel.llamagen("VQ-16")              # 72M, 16384 x 8 codebook, 256px -> 16 x 16 tokens
    ids = vq.encode(images)                      # [B, h, w]
    images = vq.decode(ids)                      # [B, 3, H, W]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from zoo.nn.quantizers import VectorQuantizer
from zoo.utils.io import AtomicSaveMixin

LLAMAGEN_VQ = {"VQ-16": [1, 1, 2, 2, 4], "VQ-8": [1, 2, 2, 4]}  # ch_mult of LlamaGen's two tokenizers


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = _norm(in_channels, groups), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2, self.conv2 = _norm(out_channels, groups), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions, with 1x1 convolutions.

    registers > 0 adds that many learned key/value pairs (zero at initialisation: "attend to nothing")
    that every position may attend to, so that no image position has to serve as an attention sink
    (Darcet et al., "Vision Transformers Need Registers"). LlamaGen has none (registers=0).
    """

    def __init__(self, channels: int, groups: int, registers: int = 0):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.proj = nn.Conv2d(channels, channels, 1)
        self.registers = nn.Parameter(torch.zeros(2, registers, channels)) if registers else None

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (conv(h).flatten(2).transpose(1, 2) for conv in (self.q, self.k, self.v))  # [B, HW, C]
        if self.registers is not None:
            k = torch.cat([k, self.registers[0].expand(B, -1, -1)], dim=1)
            v = torch.cat([v, self.registers[1].expand(B, -1, -1)], dim=1)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj(out.transpose(1, 2).reshape(B, C, H, W))


class Downsample(nn.Module):
    """Stride-2 3x3 convolution with LlamaGen's asymmetric (right/bottom) zero padding."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution: residual blocks (each followed by attention at the lowest resolution), then a resample."""

    def __init__(self, in_channels, out_channels, num_blocks, attention, resample, groups, dropout, registers=0):
        super().__init__()
        self.res = nn.ModuleList(ResBlock(in_channels if i == 0 else out_channels, out_channels, groups, dropout)
                                 for i in range(num_blocks))
        self.attn = nn.ModuleList(AttnBlock(out_channels, groups, registers)
                                  for _ in range(num_blocks if attention else 0))
        self.resample = resample(out_channels) if resample else nn.Identity()

    def forward(self, h):
        for i, block in enumerate(self.res):
            h = block(h)
            if self.attn:
                h = self.attn[i](h)
        return self.resample(h)


class Middle(nn.Module):
    def __init__(self, channels, groups, dropout, registers=0):
        super().__init__()
        self.res1, self.attn, self.res2 = (ResBlock(channels, channels, groups, dropout),
                                           AttnBlock(channels, groups, registers),
                                           ResBlock(channels, channels, groups, dropout))

    def forward(self, h):
        return self.res2(self.attn(self.res1(h)))


class Encoder(nn.Module):
    def __init__(self, in_channels, ch, ch_mult, num_res_blocks, z_channels, groups, dropout, registers=0):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        channels = [ch] + [ch * m for m in ch_mult]
        last = len(ch_mult) - 1
        self.levels = nn.ModuleList(
            Level(channels[i], channels[i + 1], num_res_blocks, attention=i == last,
                  resample=Downsample if i != last else None, groups=groups, dropout=dropout, registers=registers)
            for i in range(len(ch_mult)))
        self.mid = Middle(channels[-1], groups, dropout, registers)
        self.norm_out = _norm(channels[-1], groups)
        self.conv_out = nn.Conv2d(channels[-1], z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.levels:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """Mirrors the encoder with num_res_blocks + 1 blocks per level (LlamaGen)."""

    def __init__(self, out_channels, ch, ch_mult, num_res_blocks, z_channels, groups, dropout, registers=0):
        super().__init__()
        top = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, top, 3, padding=1)
        self.mid = Middle(top, groups, dropout, registers)
        levels, in_ch = [], top
        for i in reversed(range(len(ch_mult))):
            levels.append(Level(in_ch, ch * ch_mult[i], num_res_blocks + 1, attention=i == len(ch_mult) - 1,
                                resample=Upsample if i != 0 else None, groups=groups, dropout=dropout,
                                registers=registers))
            in_ch = ch * ch_mult[i]
        self.levels = nn.ModuleList(levels)
        self.norm_out = _norm(in_ch, groups)
        self.conv_out = nn.Conv2d(in_ch, out_channels, 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for level in self.levels:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VQModel(AtomicSaveMixin, ModelMixin, ConfigMixin):
    """LlamaGen's VQ tokenizer. Config names follow LlamaGen's `ModelArgs` and `Encoder`/`Decoder`.

    Args:
        codebook_size, codebook_dim: the codebook (LlamaGen VQ-16: 16384 x 8).
        codebook_l2_norm: search and decode with l2-normalised codes (LlamaGen: True).
        encoder_ch / decoder_ch, encoder_ch_mult / decoder_ch_mult, num_res_blocks, z_channels: the
            convolutional stacks; downsampling factor = 2 ** (len(encoder_ch_mult) - 1).
        norm_groups: GroupNorm groups (32 in LlamaGen; must divide every width).
        attention_registers: learned key/value registers in every attention block (0 in LlamaGen; see
            `AttnBlock`).

    Examples:
        >>> import torch, zoo
        >>> from zoo.data.shapes import ShapesDataset
        >>> vq = zoo.load("vq-shapes")                   # or VQModel(...), or convert_llamagen_vq("vq_ds16_c2i.pt")
        >>> images = torch.stack([ShapesDataset("test")[i]["image"] for i in range(2)])   # [2, 3, 64, 64]
        >>> ids = vq.encode(images)
        >>> ids.shape, vq.decode(ids).shape, vq.codebook.shape
        (torch.Size([2, 16, 16]), torch.Size([2, 3, 64, 64]), torch.Size([4096, 8]))
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        codebook_size: int = 16384,
        codebook_dim: int = 8,
        codebook_l2_norm: bool = True,
        commit_loss_beta: float = 0.25,
        encoder_ch: int = 128,
        decoder_ch: int = 128,
        encoder_ch_mult: list[int] = (1, 1, 2, 2, 4),
        decoder_ch_mult: list[int] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        z_channels: int = 256,
        norm_groups: int = 32,
        dropout: float = 0.0,
        attention_registers: int = 0,
    ):
        super().__init__()
        widths = [c * m for c, mults in ((encoder_ch, encoder_ch_mult), (decoder_ch, decoder_ch_mult)) for m in mults]
        if any(w % norm_groups for w in widths + [encoder_ch]):
            raise ValueError(f"norm_groups={norm_groups} must divide every channel width {sorted(set(widths))}.")
        if len(encoder_ch_mult) != len(decoder_ch_mult):
            raise ValueError("encoder_ch_mult and decoder_ch_mult need the same number of levels.")
        self.encoder = Encoder(in_channels, encoder_ch, encoder_ch_mult, num_res_blocks, z_channels, norm_groups, dropout,
                               attention_registers)
        self.decoder = Decoder(in_channels, decoder_ch, decoder_ch_mult, num_res_blocks, z_channels, norm_groups,
                               dropout, attention_registers)
        self.quant_conv = nn.Conv2d(z_channels, codebook_dim, 1)
        self.quantizer = VectorQuantizer(codebook_size, codebook_dim, l2_norm=codebook_l2_norm, beta=commit_loss_beta)
        self.post_quant_conv = nn.Conv2d(codebook_dim, z_channels, 1)

    @classmethod
    def llamagen(cls, name: str = "VQ-16", **overrides) -> "VQModel":
        if name not in LLAMAGEN_VQ:
            raise ValueError(f"unknown LlamaGen tokenizer {name!r}; pass one of {sorted(LLAMAGEN_VQ)}.")
        mult = LLAMAGEN_VQ[name]
        return cls(**{"encoder_ch_mult": mult, "decoder_ch_mult": mult, **overrides})

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.config.encoder_ch_mult) - 1)

    @property
    def codebook(self) -> torch.Tensor:
        """[codebook_size, codebook_dim]: the codewords the decoder receives (for CTF's clustering, DD)."""
        return self.quantizer.codebook

    def check_images(self, images: torch.Tensor):
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError(f"images must be a [B, {self.config.in_channels}, H, W] tensor in [-1, 1], got "
                             f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}.")
        B, C, H, W = images.shape
        f = self.downsample_factor
        if C != self.config.in_channels:
            raise ValueError(f"images have {C} channels; this tokenizer takes {self.config.in_channels}.")
        if B == 0 or H % f or W % f or H < f or W < f:
            raise ValueError(f"image size {H}x{W} (batch {B}) must be a positive multiple of the downsampling "
                             f"factor {f}; resize or crop to e.g. {max(f, H - H % f)}x{max(f, W - W % f)}.")
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values.")

    def quantize(self, images: torch.Tensor):
        """images [B, C, H, W] -> (codes [B, codebook_dim, h, w], ids [B, h, w], losses)."""
        return self.quantizer(self.quant_conv(self.encoder(images)))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] in [-1, 1] -> token ids [B, H / f, W / f]."""
        self.check_images(images)
        return self.quantize(images.to(self.dtype))[1]

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Continuous code vectors [B, codebook_dim, h, w] (e.g. from distilled decoding) -> images."""
        if codes.dim() != 4 or codes.shape[1] != self.config.codebook_dim:
            raise ValueError(f"codes must be [B, {self.config.codebook_dim}, h, w], got {tuple(codes.shape)}.")
        return self.decoder(self.post_quant_conv(codes.to(self.dtype)))

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [B, h, w] -> images [B, C, h * f, w * f] (unclamped, nominally [-1, 1])."""
        if ids.dim() != 3:
            raise ValueError(f"ids must be [B, h, w], got shape {tuple(ids.shape)}; reshape flat token rows.")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.config.codebook_size):
            raise ValueError(f"token ids must lie in [0, {self.config.codebook_size}), got "
                             f"[{int(ids.min())}, {int(ids.max())}].")
        return self.decode_codes(self.quantizer.embed(ids).permute(0, 3, 1, 2))

    def forward(self, images: torch.Tensor):
        """Reconstruction for training: (images_hat, ids, losses)."""
        codes, ids, losses = self.quantize(images)
        return self.decode_codes(codes), ids, losses

    def num_tokens(self, height: int, width: int) -> int:
        return math.prod(s // self.downsample_factor for s in (height, width))
