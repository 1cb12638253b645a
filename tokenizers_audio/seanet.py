"""SEANet: the causal convolutional encoder and decoder of EnCodec and Mimi, streamable with explicit state.

Every layer has an offline `forward(x)` and a streaming `step(x, state) -> (y, state)`; `state` is
what the layer keeps between chunks (None before the first one). Feeding a waveform chunk by chunk
through `step` gives the same samples as one `forward` call over the whole waveform, as long as the
whole is a multiple of the hop length (offline calls pad the last partial frame; streaming waits for it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CausalConv1d(nn.Module):
    """Conv1d padded on the left by (effective kernel - stride), so an output never sees a later input.

    Offline, the right end is padded to complete the last frame (EnCodec's `pad_for_conv1d`).
    pad_mode: "constant" (zeros, SEANet) or "replicate" (Mimi's downsampling convolution).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, bias: bool = True, pad_mode: str = "constant"):
        super().__init__()
        if pad_mode not in ("constant", "replicate"):
            raise ValueError(f"pad_mode must be 'constant' or 'replicate', got {pad_mode!r}.")
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation, groups=groups,
                              bias=bias)
        self.stride, self.pad_mode = stride, pad_mode
        self.effective_kernel = (kernel_size - 1) * dilation + 1
        self.padding_total = self.effective_kernel - stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C', ceil(T / stride)]
        length = x.shape[-1]
        frames = -(-(length - self.effective_kernel + self.padding_total) // self.stride) + 1  # ceil
        extra = (frames - 1) * self.stride + self.effective_kernel - self.padding_total - length
        return self.conv(F.pad(x, (self.padding_total, max(extra, 0)), mode=self.pad_mode))

    def step(self, x: torch.Tensor, state: torch.Tensor | None):
        """Consume a chunk x [B, C, t]; return the outputs it completes and the unconsumed inputs."""
        if state is None and x.shape[-1] == 0:  # nothing yet (the replicated first sample is unknown)
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0), None
        if state is None:  # the left padding of the offline call
            if self.pad_mode == "replicate":
                state = x[..., :1].expand(*x.shape[:-1], self.padding_total)
            else:
                state = x.new_zeros(*x.shape[:-1], self.padding_total)
        x = torch.cat([state, x], dim=-1)
        frames = max((x.shape[-1] - self.effective_kernel) // self.stride + 1, 0)
        used = (frames - 1) * self.stride + self.effective_kernel if frames else 0
        y = self.conv(x[..., :used]) if frames else x.new_zeros(x.shape[0], self.conv.out_channels, 0)
        return y, x[..., frames * self.stride:]


class CausalConvTranspose1d(nn.Module):
    """ConvTranspose1d trimmed on the right by (kernel - stride): output sample t depends on inputs <= t.

    Streaming keeps the overlapping tail of the last chunk (without the bias) and adds it to the next.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = True):
        super().__init__()
        self.convtr = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias)
        self.stride, self.overlap = stride, kernel_size - stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C', T * stride]
        y = self.convtr(x)
        return y[..., : y.shape[-1] - self.overlap]

    def step(self, x: torch.Tensor, state: torch.Tensor | None):
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.convtr.out_channels, 0), state
        y = self.convtr(x)
        if state is not None:
            y = torch.cat([y[..., : self.overlap] + state, y[..., self.overlap:]], dim=-1)
        emitted = x.shape[-1] * self.stride
        tail = y[..., emitted:]
        if self.convtr.bias is not None:
            tail = tail - self.convtr.bias[:, None]
        return y[..., :emitted], tail


class StreamingSequential(nn.Sequential):
    """nn.Sequential whose `step` threads each layer's streaming state (a list, one entry per layer)."""

    def step(self, x: torch.Tensor, state: list | None):
        state = state or [None] * len(self)
        new_state = []
        for layer, layer_state in zip(self, state):
            if hasattr(layer, "step"):
                x, layer_state = layer.step(x, layer_state)
            else:  # pointwise (ELU): no state
                x = layer(x)
            new_state.append(layer_state)
        return x, new_state


class ResidualUnit(nn.Module):
    """SEANet residual block: x + conv1x1(ELU(conv_k(ELU(x)))), the inner width dim // compress.

    `block` holds [ELU, conv, ELU, conv] so the convolutions sit at block.1 and block.3 (Mimi's key names).
    """

    def __init__(self, dim: int, kernel_size: int = 3, dilation: int = 1, compress: int = 2):
        super().__init__()
        hidden = dim // compress
        self.block = StreamingSequential(
            nn.ELU(), CausalConv1d(dim, hidden, kernel_size, dilation=dilation), nn.ELU(), CausalConv1d(hidden, dim, 1))

    def forward(self, x):
        return x + self.block(x)

    def step(self, x, state):
        y, state = self.block.step(x, state)
        return x + y, state


class SEANetEncoder(nn.Module):
    """Waveform [B, channels, T] -> latent [B, dim, T / prod(ratios)] (Mimi: 24 kHz -> 25 Hz, dim 512).

    conv(k) -> per ratio r (in reverse order): residual units, ELU, strided conv (kernel 2r, stride r,
    doubling the width) -> ELU -> conv(last_kernel_size) to dim.
    """

    def __init__(self, channels: int = 1, dim: int = 512, num_filters: int = 64, ratios=(8, 6, 5, 4),
                 num_residual_layers: int = 1, kernel_size: int = 7, last_kernel_size: int = 3,
                 residual_kernel_size: int = 3, dilation_base: int = 2, compress: int = 2):
        super().__init__()
        layers, width = [CausalConv1d(channels, num_filters, kernel_size)], num_filters
        for ratio in reversed(ratios):
            layers += [ResidualUnit(width, residual_kernel_size, dilation_base ** j, compress)
                       for j in range(num_residual_layers)]
            layers += [nn.ELU(), CausalConv1d(width, 2 * width, 2 * ratio, stride=ratio)]
            width *= 2
        layers += [nn.ELU(), CausalConv1d(width, dim, last_kernel_size)]
        self.layers = StreamingSequential(*layers)

    def forward(self, x):
        return self.layers(x)

    def step(self, x, state):
        return self.layers.step(x, state)


class SEANetDecoder(nn.Module):
    """Latent [B, dim, T] -> waveform [B, channels, T * prod(ratios)], the mirror of SEANetEncoder:
    conv(k) -> per ratio r: ELU, transposed conv (kernel 2r, stride r, halving the width), residual
    units -> ELU -> conv(last_kernel_size) to the channels."""

    def __init__(self, channels: int = 1, dim: int = 512, num_filters: int = 64, ratios=(8, 6, 5, 4),
                 num_residual_layers: int = 1, kernel_size: int = 7, last_kernel_size: int = 3,
                 residual_kernel_size: int = 3, dilation_base: int = 2, compress: int = 2):
        super().__init__()
        width = num_filters * 2 ** len(ratios)
        layers = [CausalConv1d(dim, width, kernel_size)]
        for ratio in ratios:
            layers += [nn.ELU(), CausalConvTranspose1d(width, width // 2, 2 * ratio, stride=ratio)]
            width //= 2
            layers += [ResidualUnit(width, residual_kernel_size, dilation_base ** j, compress)
                       for j in range(num_residual_layers)]
        layers += [nn.ELU(), CausalConv1d(width, channels, last_kernel_size)]
        self.layers = StreamingSequential(*layers)

    def forward(self, x):
        return self.layers(x)

    def step(self, x, state):
        return self.layers.step(x, state)
