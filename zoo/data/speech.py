"""Speech: generated English sentences spoken by espeak-ng, at 24 kHz, with fixed splits.

Every utterance is a pure function of (split, index): the sentence (from a small grammar), the voice
(accent + espeak-ng variant), the speaking rate and the pitch. espeak-ng speaks at 22,050 Hz; zoo
resamples to 24 kHz, the rate of Mimi and of zoo's codec.

    "the quiet doctor found seven green boxes near the river"

A split is synthesised once and cached on disk as one safetensors file (16-bit samples, offsets and
the texts in its metadata), then loaded from there. espeak-ng is a Debian package
(`apt-get install espeak-ng`); it is needed only to build a cache, not to read one.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from zoo.audio import resample

SAMPLE_RATE = 24_000
ESPEAK_RATE = 22_050
SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}
SPLIT_SIZES = {"train": 20_000, "validation": 1_000, "test": 1_000}
ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029"]
VARIANTS = ["m1", "m3", "m5", "m7", "f1", "f2", "f3", "f4"]  # espeak-ng voice variants (timbre)
RATES = (130, 190)  # words per minute
PITCHES = (30, 70)  # espeak-ng pitch, 0..99
PEAK = 0.7  # every utterance is scaled to this peak amplitude
CACHE_VERSION = 1

# the grammar's word lists; every word is lower case a-z, so transcripts use ALPHABET only
ADJECTIVES = ["red", "green", "blue", "yellow", "small", "large", "quiet", "loud", "old", "young", "bright", "dark",
              "heavy", "light", "quick", "slow", "happy", "tired", "warm", "cold", "clean", "empty", "strange",
              "gentle", "famous", "little", "wooden", "golden", "silver", "broken"]
NOUNS = ["dog", "cat", "bird", "horse", "doctor", "teacher", "farmer", "child", "river", "garden", "window", "table",
         "letter", "market", "train", "boat", "house", "forest", "mountain", "kitchen", "chair", "apple", "clock",
         "bridge", "road", "city", "village", "storm", "song", "book", "box", "lamp", "door", "ship", "field"]
PLURALS = {"box": "boxes", "child": "children", "city": "cities", "village": "villages"}
VERBS_PAST = ["found", "saw", "painted", "carried", "opened", "closed", "watched", "followed", "moved", "cleaned",
              "built", "sold", "bought", "heard", "lost", "kept", "pushed", "pulled", "visited", "counted"]
VERBS = ["find", "see", "paint", "carry", "open", "close", "watch", "follow", "move", "clean", "build", "sell"]
PREPOSITIONS = ["near", "behind", "under", "above", "beside", "inside", "across", "around", "past"]
NAMES = ["anna", "peter", "maria", "john", "lucy", "david", "emma", "oliver", "sarah", "thomas", "grace", "henry"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve"]
TIMES = ["today", "yesterday", "this morning", "last night", "in the evening", "every day", "on monday",
         "after lunch", "before the rain"]
ALPHABET = " abcdefghijklmnopqrstuvwxyz'"  # the transcript characters (CTC vocabulary without the blank)


def _pick(rng: np.random.Generator, words: list[str]) -> str:
    return words[int(rng.integers(len(words)))]


def _noun_phrase(rng: np.random.Generator) -> str:
    roll = rng.random()
    noun = _pick(rng, NOUNS)
    if roll < 0.3:
        count = _pick(rng, NUMBERS)
        return f"{count} {_pick(rng, ADJECTIVES)} {PLURALS.get(noun, noun + 's')}"
    if roll < 0.7:
        return f"the {_pick(rng, ADJECTIVES)} {noun}"
    return f"the {noun}"


def _clause(rng: np.random.Generator) -> str:
    subject = _pick(rng, NAMES) if rng.random() < 0.4 else _noun_phrase(rng)
    kind = rng.random()
    if kind < 0.45:
        clause = f"{subject} {_pick(rng, VERBS_PAST)} {_noun_phrase(rng)}"
    elif kind < 0.75:
        clause = f"{subject} {_pick(rng, VERBS_PAST)} {_noun_phrase(rng)} {_pick(rng, PREPOSITIONS)} {_noun_phrase(rng)}"
    elif kind < 0.9:
        clause = f"please {_pick(rng, VERBS)} {_noun_phrase(rng)} {_pick(rng, PREPOSITIONS)} {_noun_phrase(rng)}"
    else:
        clause = f"did {subject} {_pick(rng, VERBS)} {_noun_phrase(rng)}"
    if rng.random() < 0.3:
        clause += " " + _pick(rng, TIMES)
    return clause


def make_sentence(rng: np.random.Generator) -> str:
    """One sentence of the grammar: one to three clauses joined by "and" / "but" / "so" (3 to about 30 words)."""
    clauses = [_clause(rng) for _ in range(1 + int(rng.choice(3, p=[0.65, 0.27, 0.08])))]
    sentence = clauses[0]
    for clause in clauses[1:]:
        sentence += f" {_pick(rng, ['and', 'but', 'so'])} {clause}"
    return sentence


@dataclass(frozen=True)
class UtteranceSpec:
    """Everything that determines an utterance."""

    text: str
    accent: str
    variant: str
    rate: int  # words per minute
    pitch: int

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}"


def sample_spec(rng: np.random.Generator) -> UtteranceSpec:
    return UtteranceSpec(
        text=make_sentence(rng), accent=_pick(rng, ACCENTS), variant=_pick(rng, VARIANTS),
        rate=int(rng.integers(RATES[0], RATES[1] + 1)), pitch=int(rng.integers(PITCHES[0], PITCHES[1] + 1)),
    )


def utterance_spec(split: str, index: int) -> UtteranceSpec:
    """The utterance at `index` of `split` (the same on every machine)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; pass one of {list(SPLIT_SEEDS)}.")
    if not 0 <= index < SPLIT_SIZES[split]:
        raise IndexError(f"{split} has {SPLIT_SIZES[split]} utterances; index {index} is out of range.")
    return sample_spec(np.random.default_rng([SPLIT_SEEDS[split], index]))


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


# espeak-ng's US English IPA: every symbol of the grammar's sentences, and a few more English ones
PHONEME_VOICE = "en-us"
PHONEMES = " abdefhijklmnopstuvwzæðŋɑɔəɚɛɜɡɪɹɾʃʊʌʒˈˌːθᵻɐɒʔçxʍɬ"


def phonemize(texts: list[str], voice: str = PHONEME_VOICE) -> list[str]:
    """espeak-ng's IPA of each text (one espeak-ng call for the whole list): "the cat" -> "ðə kˈæt".
    Texts are single lines of words (as `normalize_text` leaves them); "" stays "" (the empty prompt)."""
    if not espeak_available():
        raise RuntimeError("phonemes come from espeak-ng, which is not installed; `apt-get install -y espeak-ng`.")
    if any(not isinstance(t, str) or "\n" in t for t in texts):
        raise ValueError("phonemize takes a list of single-line strings.")
    spoken = [t for t in texts if t.strip()]
    if not spoken:
        return ["" for _ in texts]
    result = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", voice], input="\n".join(spoken) + "\n",
                            capture_output=True, text=True, check=True)
    lines = [" ".join(line.split()) for line in result.stdout.splitlines() if line.strip()]
    if len(lines) != len(spoken):
        raise RuntimeError(f"espeak-ng gave {len(lines)} lines of phonemes for {len(spoken)} texts.")
    it = iter(lines)
    return [next(it) if t.strip() else "" for t in texts]


def speak(spec: UtteranceSpec) -> torch.Tensor:
    """Synthesise one utterance with espeak-ng: float32 [T] at 24 kHz, peak PEAK, leading/trailing silence
    trimmed to 0.1 s."""
    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed; `apt-get install -y espeak-ng` (Debian/Ubuntu) to make speech.")
    result = subprocess.run(
        ["espeak-ng", "--stdout", "-v", spec.voice, "-s", str(spec.rate), "-p", str(spec.pitch), spec.text],
        capture_output=True, check=True,
    )
    with wave.open(io.BytesIO(result.stdout)) as f:
        if f.getsampwidth() != 2 or f.getnchannels() != 1:
            raise RuntimeError(f"espeak-ng returned {f.getnchannels()} channels of {8 * f.getsampwidth()} bits; expected mono 16-bit.")
        rate = f.getframerate()
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16)
    wav = _trim_silence(resample(torch.from_numpy(pcm.astype(np.float32) / 32768.0), rate, SAMPLE_RATE))
    return wav * (PEAK / wav.abs().max().clamp(min=1e-4))  # espeak-ng speaks close to full scale: leave headroom


def _trim_silence(wav: torch.Tensor, threshold: float = 1e-3, keep_seconds: float = 0.1) -> torch.Tensor:
    loud = (wav.abs() > threshold).nonzero().flatten()
    if len(loud) == 0:
        return wav
    keep = int(keep_seconds * SAMPLE_RATE)
    return wav[max(int(loud[0]) - keep, 0): int(loud[-1]) + keep + 1]


def add_noise(wav: torch.Tensor, snr_db: float, generator: torch.Generator | None = None,
              color: str = "white") -> torch.Tensor:
    """Mix Gaussian noise into wav [..., T] at a signal-to-noise ratio of snr_db (per waveform).

    color: "white" (flat spectrum) or "pink" (1/f power, closer to real background noise).
    """
    if color not in ("white", "pink"):
        raise ValueError(f"color must be 'white' or 'pink', got {color!r}.")
    if not isinstance(snr_db, (int, float)) or not np.isfinite(snr_db):
        raise ValueError(f"snr_db must be a finite number of decibels, got {snr_db!r}.")
    noise = torch.randn(wav.shape, generator=generator, device=wav.device)
    if color == "pink":
        spectrum = torch.fft.rfft(noise)
        freqs = torch.arange(spectrum.shape[-1], device=wav.device).clamp(min=1).float()
        noise = torch.fft.irfft(spectrum / freqs.sqrt(), n=wav.shape[-1])
    signal_power = wav.pow(2).mean(-1, keepdim=True).clamp(min=1e-12)
    noise_power = noise.pow(2).mean(-1, keepdim=True).clamp(min=1e-12)
    return wav + noise * (signal_power / noise_power / 10 ** (snr_db / 10)).sqrt()


def default_cache_dir() -> Path:
    return Path(os.environ.get("ZOO_CACHE", Path.home() / ".cache" / "zoo")) / "speech"


class SpeechDataset(torch.utils.data.Dataset):
    """The first `length` utterances of a split: items are dicts with "audio" (float32 [T] at 24 kHz),
    "text" and "spec" (the UtteranceSpec).

    The audio comes from a cache file under `cache_dir` (default $ZOO_CACHE/speech or ~/.cache/zoo/speech),
    synthesised with espeak-ng on first use (about 20 utterances a second on 2 CPU cores).
    """

    def __init__(self, split: str = "train", length: int | None = None, cache_dir: str | os.PathLike | None = None,
                 progress: bool = True):
        if split not in SPLIT_SEEDS:
            raise ValueError(f"unknown split {split!r}; pass one of {list(SPLIT_SEEDS)}.")
        length = SPLIT_SIZES[split] if length is None else length
        if not isinstance(length, int) or not 1 <= length <= SPLIT_SIZES[split]:
            raise ValueError(f"length must be an int in 1..{SPLIT_SIZES[split]} for {split}, got {length!r}.")
        self.split, self.length = split, length
        self.path = Path(cache_dir or default_cache_dir()) / f"{split}-{length}-v{CACHE_VERSION}.safetensors"
        if not self.path.is_file():
            self._build(progress)
        self._load()

    def _build(self, progress: bool):
        from safetensors.torch import save_file
        from tqdm.auto import tqdm

        from zoo.utils.io import atomic_path

        specs = [utterance_spec(self.split, i) for i in range(self.length)]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            waves = list(tqdm(pool.map(speak, specs), total=len(specs), disable=not progress,
                              desc=f"speaking {self.split}"))
        pcm = torch.cat([(w.clamp(-1, 1) * 32767).round().to(torch.int16) for w in waves])
        offsets = torch.tensor([0] + [len(w) for w in waves]).cumsum(0)
        metadata = {"specs": json.dumps([asdict(s) for s in specs]), "sample_rate": str(SAMPLE_RATE)}
        with atomic_path(self.path) as tmp:
            save_file({"audio": pcm, "offsets": offsets}, tmp, metadata=metadata)

    def _load(self):
        from safetensors import safe_open

        with safe_open(self.path, "pt") as f:
            self.pcm, self.offsets = f.get_tensor("audio"), f.get_tensor("offsets")
            self.specs = [UtteranceSpec(**s) for s in json.loads(f.metadata()["specs"])]
        if len(self.specs) != self.length or len(self.offsets) != self.length + 1:
            raise RuntimeError(f"the speech cache {self.path} is corrupt; delete it and it will be rebuilt.")

    def __len__(self) -> int:
        return self.length

    def audio(self, index: int) -> torch.Tensor:
        return self.pcm[self.offsets[index]: self.offsets[index + 1]].float() / 32767.0

    def __getitem__(self, index: int) -> dict:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} utterances.")
        index %= self.length
        return {"audio": self.audio(index), "text": self.specs[index].text, "spec": self.specs[index]}

    @property
    def seconds(self) -> float:
        """Total duration of the audio."""
        return float(self.offsets[-1]) / SAMPLE_RATE
