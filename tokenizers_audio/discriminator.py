"""EnCodec's multi-scale STFT discriminator (MS-STFTD), with hinge and feature-matching losses.

Each scale takes the complex STFT of the waveform (real and imaginary parts as two channels) through
2D convolutions dilated along time and strided along frequency, and returns logits plus every layer's
feature map; feature matching compares the maps of real and generated audio (L1, relative to the
real maps' mean magnitude, as EnCodec). Used by `zoo train codec-speech --adversarial`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class STFTDiscriminator(nn.Module):
    def __init__(self, n_fft: int, filters: int = 32, dilations=(1, 2, 4)):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [nn.Conv2d(2, filters, (3, 9), padding=(1, 4))]
        for dilation in dilations:
            layers.append(nn.Conv2d(filters, filters, (3, 9), stride=(1, 2), dilation=(dilation, 1),
                                    padding=(dilation, 4)))
        layers.append(nn.Conv2d(filters, filters, (3, 3), padding=(1, 1)))
        self.layers = nn.ModuleList(nn.utils.parametrizations.weight_norm(layer) for layer in layers)
        self.out = nn.utils.parametrizations.weight_norm(nn.Conv2d(filters, 1, (3, 3), padding=(1, 1)))

    def forward(self, audio: torch.Tensor):  # [B, 1, T] -> (logits [B, 1, frames, freqs'], feature maps)
        spec = torch.stft(audio[:, 0], self.n_fft, self.n_fft // 4, window=self.window, return_complex=True)
        x = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # [B, 2, frames, freqs]
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
            features.append(x)
        return self.out(x), features


class MultiScaleSTFTDiscriminator(nn.Module):
    def __init__(self, scales=(2048, 1024, 512), filters: int = 32):
        super().__init__()
        self.discriminators = nn.ModuleList(STFTDiscriminator(n, filters) for n in scales)

    def forward(self, audio):
        return [d(audio) for d in self.discriminators]

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Hinge loss of the discriminators (fake is detached)."""
        loss = 0.0
        for (real_logits, _), (fake_logits, _) in zip(self(real), self(fake.detach())):
            loss = loss + F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
        return loss / len(self.discriminators)

    def generator_losses(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(adversarial hinge loss, relative feature-matching loss) for the generator."""
        adversarial, matching, count = 0.0, 0.0, 0
        with torch.no_grad():
            real_out = self(real)
        for (_, real_features), (fake_logits, fake_features) in zip(real_out, self(fake)):
            adversarial = adversarial + F.relu(1 - fake_logits).mean()
            for r, f in zip(real_features, fake_features):
                matching = matching + (r - f).abs().mean() / r.abs().mean().clamp(min=1e-5)
                count += 1
        return adversarial / len(self.discriminators), matching / count
