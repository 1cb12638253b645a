"""Speech data (espeak-ng), waveform checks and WAV files."""

import numpy as np
import pytest
import torch

from zoo import audio
from zoo.data import speech

needs_espeak = pytest.mark.skipif(not speech.espeak_available(), reason="espeak-ng is not installed")


def test_utterances_are_deterministic_and_varied():
    first = [speech.utterance_spec("train", i) for i in range(50)]
    assert first == [speech.utterance_spec("train", i) for i in range(50)]
    assert speech.utterance_spec("test", 0) != speech.utterance_spec("train", 0)
    assert len({s.voice for s in first}) > 10 and len({s.text for s in first}) == 50
    assert all(set(s.text) <= set(speech.ALPHABET) for s in first)
    lengths = [len(speech.make_sentence(np.random.default_rng(i)).split()) for i in range(300)]
    assert min(lengths) <= 5 and max(lengths) >= 15
    with pytest.raises(ValueError, match="unknown split"):
        speech.utterance_spec("dev", 0)
    with pytest.raises(IndexError):
        speech.utterance_spec("test", speech.SPLIT_SIZES["test"])


@needs_espeak
def test_dataset_is_synthesised_once_and_cached(tmp_path):
    data = speech.SpeechDataset("validation", 3, cache_dir=tmp_path, progress=False)
    item = data[1]
    assert item["text"] == speech.utterance_spec("validation", 1).text
    wav = item["audio"]
    assert wav.dtype == torch.float32 and wav.dim() == 1 and 0.5 * 24_000 < len(wav) < 15 * 24_000
    assert wav.abs().max() == pytest.approx(speech.PEAK, abs=1e-4)
    again = speech.SpeechDataset("validation", 3, cache_dir=tmp_path, progress=False)  # read from the cache
    assert torch.equal(again[1]["audio"], wav) and len(list(tmp_path.iterdir())) == 1
    assert torch.allclose(speech.speak(item["spec"]), wav, atol=1 / 16_000)  # deterministic synthesis
    with pytest.raises(ValueError, match="length"):
        speech.SpeechDataset("validation", 0, cache_dir=tmp_path)


def test_noise_is_mixed_at_the_requested_snr():
    g = torch.Generator().manual_seed(0)
    clean = torch.sin(torch.linspace(0, 400, 24_000))[None]
    for color in ("white", "pink"):
        noisy = speech.add_noise(clean, 10.0, generator=g, color=color)
        snr = 10 * torch.log10(clean.pow(2).mean() / (noisy - clean).pow(2).mean())
        assert abs(snr.item() - 10.0) < 0.01
    with pytest.raises(ValueError, match="color"):
        speech.add_noise(clean, 10.0, color="brown")


def test_as_batch_layouts_and_errors():
    assert audio.as_batch(torch.zeros(100)).shape == (1, 1, 100)
    assert audio.as_batch(np.zeros((1, 100), dtype=np.float32)).shape == (1, 1, 100)
    assert audio.as_batch(torch.full((3, 1, 10), 16384, dtype=torch.int16)).max() == pytest.approx(0.5, abs=1e-4)
    for bad, match in [(torch.zeros(2, 100), "mono"), (torch.zeros(1, 2, 100), "channels"), (torch.zeros(0), "empty"),
                       (torch.tensor([0.0, float("inf")]), "NaN or infinite"), ([0.0, 1.0], "Tensor or numpy")]:
        with pytest.raises((ValueError, TypeError), match=match):
            audio.as_batch(bad)
    with pytest.raises(ValueError, match="positive int"):
        audio.prepare(torch.zeros(10), -5, 24_000)


def test_wav_round_trip(tmp_path):
    wav = 0.5 * torch.sin(torch.linspace(0, 100, 4800))
    path = audio.write_wav(tmp_path / "a.wav", wav, 24_000)
    back, rate = audio.read_wav(path)
    assert rate == 24_000 and back.shape == (1, 4800)
    assert (back[0] - wav).abs().max() < 1e-4
    with pytest.raises(FileNotFoundError):
        audio.read_wav(tmp_path / "missing.wav")
