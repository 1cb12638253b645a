"""Waveforms in and out: validation, resampling and WAV files, shared by the codec, the recogniser,
the speech pipelines and the audio metrics.

zoo's waveform layout is float32 in [-1, 1], shaped [B, 1, T] (batch, channel, samples) like
EnCodec, Mimi and DAC; `as_batch` also accepts [T] and [1, T] and adds the missing axes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF

from zoo.utils.io import atomic_path


def as_batch(wav, name: str = "audio") -> torch.Tensor:
    """A mono waveform as [B, 1, T] float32; [T], [1, T] and [B, 1, T] are accepted.

    Raises ValueError for stereo (or any channel count other than 1), empty audio and NaN/inf samples.
    """
    if not isinstance(wav, torch.Tensor):
        if not isinstance(wav, np.ndarray):
            raise TypeError(f"{name} must be a torch.Tensor or numpy array of samples, got {type(wav).__name__}.")
        wav = torch.from_numpy(np.ascontiguousarray(wav))
    if wav.dim() == 1:
        wav = wav[None, None]
    elif wav.dim() == 2:
        if wav.shape[0] != 1:
            raise ValueError(
                f"{name} has shape {tuple(wav.shape)}: a 2D waveform must be [1, T] (mono). For a batch pass "
                f"[B, 1, T]; for stereo, mix down first: wav.mean(dim=0, keepdim=True).")
        wav = wav[None]
    elif wav.dim() != 3:
        raise ValueError(f"{name} must be [T], [1, T] or [B, 1, T], got shape {tuple(wav.shape)}.")
    if wav.shape[1] != 1:
        raise ValueError(
            f"{name} has {wav.shape[1]} channels; zoo's speech models are mono. Mix down first: "
            f"wav.mean(dim=1, keepdim=True).")
    if wav.shape[-1] == 0 or wav.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(wav.shape)}); pass at least one sample.")
    if not wav.is_floating_point():
        wav = wav.float() / float(torch.iinfo(wav.dtype).max)  # integer PCM
    if not torch.isfinite(wav).all():
        raise ValueError(f"{name} contains NaN or infinite samples; clean or clip the audio first.")
    return wav.float()


def _check_rate(sample_rate) -> None:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int in Hz, got {sample_rate!r}.")


def check_sample_rate(sample_rate, expected: int, resample: bool = False, name: str = "audio") -> None:
    """Raise unless sample_rate is a positive int equal to `expected` (or resampling was asked for)."""
    if sample_rate is None:
        raise ValueError(f"the sample rate of {name} is unknown; pass sample_rate= (this model runs at {expected} Hz).")
    _check_rate(sample_rate)
    if sample_rate != expected and not resample:
        raise ValueError(
            f"{name} is at {sample_rate} Hz but this model runs at {expected} Hz; resample it "
            f"(zoo.audio.resample(wav, {sample_rate}, {expected})) or pass resample=True.")


def resample(wav: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """Band-limited resampling along the last axis (torchaudio's windowed sinc)."""
    _check_rate(from_rate)
    _check_rate(to_rate)
    return wav if from_rate == to_rate else AF.resample(wav, int(from_rate), int(to_rate))


def prepare(wav, sample_rate, expected: int, resample_input: bool = False, name: str = "audio") -> torch.Tensor:
    """Validate a waveform and its rate for a model at `expected` Hz: [B, 1, T] float32 at `expected` Hz."""
    check_sample_rate(sample_rate, expected, resample=resample_input, name=name)
    return resample(as_batch(wav, name), int(sample_rate), expected)


def read_wav(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """A WAV file -> (float32 [1, T] mono waveform, sample rate). Multi-channel files are mixed down."""
    from scipy.io import wavfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no audio file at {path}.")
    rate, data = wavfile.read(path)
    wav = torch.from_numpy(np.ascontiguousarray(data))
    if not wav.is_floating_point():
        scale = 128.0 if wav.dtype == torch.uint8 else float(torch.iinfo(wav.dtype).max) + 1
        wav = (wav.float() - (128.0 if wav.dtype == torch.uint8 else 0.0)) / scale
    if wav.dim() == 2:  # [T, channels]
        wav = wav.float().mean(dim=1)
    return wav.float()[None], int(rate)


def write_wav(path: str | os.PathLike, wav: torch.Tensor, sample_rate: int) -> Path:
    """Write a mono waveform ([T], [1, T] or [1, 1, T]) as 16-bit PCM WAV, atomically."""
    from scipy.io import wavfile

    wav = as_batch(wav.detach().cpu())
    if wav.shape[0] != 1:
        raise ValueError(f"write_wav writes one waveform, got a batch of {wav.shape[0]}; write them one by one.")
    _check_rate(sample_rate)
    pcm = (wav[0, 0].clamp(-1, 1) * 32767).round().to(torch.int16).numpy()
    path = Path(path)
    with atomic_path(path) as tmp:
        wavfile.write(tmp, int(sample_rate), pcm)
    return path
