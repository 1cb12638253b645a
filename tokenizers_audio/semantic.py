"""Semantic tokens the X-Codec way (arXiv 2408.17175, zhenye234/xcodec `models/soundstream_semantic.py`).

A frozen semantic teacher turns the waveform into features (X-Codec: the mean of all HuBERT / WavLM
hidden layers). They are pooled to the codec's frame rate, encoded, concatenated with the acoustic
latent and fused by a linear layer (X-Codec's `fc_prior`) *before* the RVQ; after the RVQ a semantic
decoder reconstructs the teacher's features (MSE, X-Codec's weight 100) from the output of the
semantic codebook, which trains that codebook to carry them.

Teachers, chosen by the codec's `semantic_teacher` config entry:
- {"kind": "zoo-recognizer", "config": {...}}: zoo's streaming CTC recogniser (`asr-speech`), the
  teacher of the built-in codec (no HuBERT / WavLM weights can be downloaded here); it streams.
- {"kind": "transformers", "model_type": "hubert" | "wavlm" | ..., "config": {...}}: any transformers
  speech encoder built from its config (load real weights into `codec.teacher.model`); it
  runs at 16 kHz on the resampled input and does not stream.
The teacher's weights are saved with the codec and never trained.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RecognizerTeacher(nn.Module):
    """zoo's `SpeechRecognizer` as a semantic teacher (50 Hz features of its hidden size)."""

    def __init__(self, config: dict):
        super().__init__()
        from zoo.metrics.recognizer import SpeechRecognizer

        self.model = SpeechRecognizer(**config)
        self.feature_dim = self.model.config.hidden_size
        self.samples_per_frame = self.model.samples_per_frame  # at the codec's 24 kHz

    def features(self, audio: torch.Tensor) -> torch.Tensor:  # [B, 1, T] -> [B, T', D]
        return self.model.features(audio)

    def features_step(self, audio: torch.Tensor, state):
        return self.model.features_step(audio, state)


class TransformersTeacher(nn.Module):
    """A transformers speech encoder (HuBERT, WavLM, ...) as a semantic teacher: mean of its hidden states."""

    def __init__(self, model_type: str, config: dict, sample_rate: int = 16_000, codec_rate: int = 24_000):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        self.model = AutoModel.from_config(AutoConfig.for_model(model_type, **config))
        self.sample_rate, self.codec_rate = sample_rate, codec_rate
        self.feature_dim = self.model.config.hidden_size
        hop = math.prod(getattr(self.model.config, "conv_stride", [320]))  # input samples per feature frame
        self.samples_per_frame = hop * codec_rate // sample_rate

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        from zoo.audio import resample

        wav = resample(audio[:, 0], self.codec_rate, self.sample_rate)
        wav = F.pad(wav, (160, 160))  # X-Codec pads 160 samples on each side at 16 kHz
        hidden = self.model(wav, output_hidden_states=True).hidden_states
        return torch.stack(hidden).mean(0)

    def features_step(self, audio, state):
        raise NotImplementedError("a transformers teacher does not stream; encode offline.")


def build_teacher(spec: dict, codec_rate: int) -> nn.Module:
    kind = spec.get("kind")
    if kind == "zoo-recognizer":
        return RecognizerTeacher(spec.get("config", {}))
    if kind == "transformers":
        return TransformersTeacher(spec["model_type"], spec.get("config", {}), codec_rate=codec_rate)
    raise ValueError(f"semantic_teacher kind {kind!r} is unknown; pass 'zoo-recognizer' or 'transformers'.")


def pool_to_frames(features: torch.Tensor, num_frames: int, ratio: int) -> torch.Tensor:
    """Average teacher frames [B, T', D] in groups of `ratio` -> [B, num_frames, D] (missing frames at the
    end are left out of the mean; extra ones are dropped)."""
    B, T, D = features.shape
    features = features[:, : num_frames * ratio]
    valid = torch.ones(B, features.shape[1], 1, device=features.device, dtype=features.dtype)
    pad = num_frames * ratio - features.shape[1]
    features, valid = F.pad(features, (0, 0, 0, pad)), F.pad(valid, (0, 0, 0, pad))
    sums = features.view(B, num_frames, ratio, D).sum(2)
    return sums / valid.view(B, num_frames, ratio, 1).sum(2).clamp(min=1)


class SemanticBranch(nn.Module):
    """Teacher features [B, frames, semantic_dim] -> an encoder (1x1 conv and a residual block) whose
    output is concatenated with the acoustic latent and fused (`fuse`, X-Codec's `fc_prior`); and a
    decoder from the semantic codebook's output back to the teacher features (used by the loss only).

    X-Codec's semantic encoder convolves over time (kernel 3, both sides); here it is pointwise, so the
    codec still streams (the teacher's features already carry their own context)."""

    def __init__(self, dim: int, semantic_dim: int, kernel_size: int = 3):
        super().__init__()
        self.encoder_in = nn.Conv1d(semantic_dim, dim, 1)
        self.encoder = nn.Sequential(nn.ELU(), nn.Conv1d(dim, dim, 1), nn.ELU(), nn.Conv1d(dim, dim, 1))
        self.fuse = nn.Conv1d(2 * dim, dim, 1)
        self.decoder = nn.Sequential(nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2), nn.ELU(),
                                     nn.Conv1d(dim, semantic_dim, 1))

    def join(self, latent: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """latent [B, dim, frames], features [B, frames, semantic_dim] -> fused latent [B, dim, frames]."""
        semantic = self.encoder_in(features.transpose(1, 2))
        semantic = semantic + self.encoder(semantic)
        return self.fuse(torch.cat([latent, semantic], dim=1))

    def predict(self, semantic_quantized: torch.Tensor) -> torch.Tensor:
        """The semantic codebook's output [B, dim, frames] -> predicted teacher features [B, frames, semantic_dim]."""
        return self.decoder(semantic_quantized).transpose(1, 2)
