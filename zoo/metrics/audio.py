"""Speech quality metrics: mel distance, SI-SDR, STOI, PESQ, DNSMOS, WER / CER, bitrate, real-time factor.

Each takes a reference and an estimate (float waveforms at `sample_rate`, [T] or [B, 1, T]) and
returns one float, the mean over the batch. STOI (pystoi) and PESQ (pesq) come through torchmetrics
and need `pip install zoo[audio]`; PESQ runs at 16 kHz (wide band), so other rates are resampled.
DNSMOS needs the `speechmos` package (and onnxruntime, librosa) and is skipped when absent.
"""

from __future__ import annotations

import functools
import statistics
import time

import torch
import torchaudio.functional as AF

from zoo.audio import as_batch, resample


def _pair(reference, estimate) -> tuple[torch.Tensor, torch.Tensor]:
    reference, estimate = as_batch(reference, "reference"), as_batch(estimate, "estimate")
    if reference.shape[0] != estimate.shape[0]:
        raise ValueError(f"reference and estimate batches differ: {reference.shape[0]} vs {estimate.shape[0]}.")
    length = min(reference.shape[-1], estimate.shape[-1])  # codecs may pad the last frame
    if length < 0.9 * max(reference.shape[-1], estimate.shape[-1]):
        raise ValueError(f"reference ({reference.shape[-1]} samples) and estimate ({estimate.shape[-1]}) differ by more "
                         "than 10% in length; are they the same utterance at the same rate?")
    return reference[..., :length], estimate[..., :length]


@functools.lru_cache(maxsize=32)
def mel_filters(n_fft: int, n_mels: int, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Slaney mel filterbank [n_fft // 2 + 1, n_mels], Hann window [n_fft]), made once per size."""
    fbanks = AF.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate, norm="slaney",
                                mel_scale="slaney")
    return fbanks, torch.hann_window(n_fft)


def log_mel(audio: torch.Tensor, sample_rate: int, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 80):
    """Log-mel spectrogram [B, n_mels, frames] of audio [B, 1, T] (natural log, floor 1e-5)."""
    fbanks, window = (t.to(audio) for t in mel_filters(n_fft, n_mels, sample_rate))
    spec = torch.stft(audio[:, 0], n_fft, hop_length, window=window, return_complex=True)
    return torch.log((spec.abs().pow(2).transpose(1, 2) @ fbanks).clamp(min=1e-5)).transpose(1, 2)


def mel_distance(reference, estimate, sample_rate: int) -> float:
    """Mean absolute difference of log-mel spectrograms (80 mels, 1024 / 256), lower is better."""
    reference, estimate = _pair(reference, estimate)
    return (log_mel(reference, sample_rate) - log_mel(estimate, sample_rate)).abs().mean().item()


def si_sdr(reference, estimate) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (higher is better)."""
    from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio

    reference, estimate = _pair(reference, estimate)
    return scale_invariant_signal_distortion_ratio(estimate[:, 0], reference[:, 0]).mean().item()


def stoi(reference, estimate, sample_rate: int) -> float:
    """Short-time objective intelligibility (pystoi), 0..1."""
    from torchmetrics.functional.audio import short_time_objective_intelligibility

    reference, estimate = _pair(reference, estimate)
    return short_time_objective_intelligibility(estimate[:, 0], reference[:, 0], sample_rate).mean().item()


def pesq(reference, estimate, sample_rate: int) -> float:
    """Wide-band PESQ (ITU-T P.862.2) at 16 kHz, -0.5..4.64."""
    from torchmetrics.functional.audio import perceptual_evaluation_speech_quality

    reference, estimate = _pair(reference, estimate)
    reference, estimate = resample(reference, sample_rate, 16_000), resample(estimate, sample_rate, 16_000)
    return perceptual_evaluation_speech_quality(estimate[:, 0], reference[:, 0], 16_000, "wb").mean().item()


def dnsmos(audio, sample_rate: int) -> float | None:
    """DNSMOS P.835 overall quality (speechmos), or None when speechmos is not installed."""
    try:
        from speechmos import dnsmos as _dnsmos
    except ImportError:
        return None
    audio = resample(as_batch(audio), sample_rate, 16_000)
    scores = [_dnsmos.run(row[0].numpy(), sr=16_000)["ovrl_mos"] for row in audio]
    return float(sum(scores) / len(scores))


def real_time_factor(fn, audio_seconds: float, repeats: int = 3) -> float:
    """Median wall time of fn() over `repeats` calls (after one warm-up), divided by the audio duration."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) / audio_seconds
