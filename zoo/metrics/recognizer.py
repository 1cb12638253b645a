"""`SpeechRecognizer`: a small streaming CTC speech recogniser over characters.

It has two jobs. It is zoo's intelligibility judge (WER / CER of generated or reconstructed speech,
with jiwer), and it is the semantic teacher of the speech codec: the mean of its transformer layers'
outputs (X-Codec's regression target from HuBERT, here from a model zoo trains itself, since no
HuBERT / WavLM weights can be downloaded) enters the codec before its RVQ.

    log-mel (causal frames, 10 ms hop) -> 2x strided causal conv (50 Hz) -> causal transformer -> CTC head

Everything is causal, so `step` streams features with explicit state, exactly as the offline call.
The vocabulary is the blank (id 0) and `zoo.data.speech.ALPHABET`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from tokenizers_audio.seanet import CausalConv1d
from tokenizers_audio.transformer import CodecTransformer
from zoo.audio import prepare
from zoo.data.speech import ALPHABET
from zoo.metrics.audio import mel_filters
from zoo.utils.io import AtomicSaveMixin


class CausalLogMel(nn.Module):
    """Log-mel frames that only look back: frame t covers samples [(t + 1) * hop - n_fft, (t + 1) * hop).

    [B, 1, T] -> [B, n_mels, ceil(T / hop)] (offline, the last partial hop is zero-padded).
    """

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        fbanks, window = mel_filters(n_fft, n_mels, sample_rate)
        self.register_buffer("window", window.clone(), persistent=False)
        self.register_buffer("fbanks", fbanks.clone(), persistent=False)  # [freqs, n_mels]

    def _frames(self, x: torch.Tensor) -> torch.Tensor:  # x [B, T'] already padded on the left
        spec = torch.stft(x, self.n_fft, self.hop_length, window=self.window, center=False, return_complex=True)
        mel = spec.abs().pow(2).transpose(1, 2) @ self.fbanks  # [B, frames, n_mels]
        return torch.log(mel + 1e-6).transpose(1, 2)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = audio[:, 0]
        extra = -x.shape[-1] % self.hop_length
        return self._frames(F.pad(x, (self.n_fft - self.hop_length, extra)))

    def step(self, audio: torch.Tensor, state: torch.Tensor | None):
        x = audio[:, 0]
        state = x.new_zeros(x.shape[0], self.n_fft - self.hop_length) if state is None else state
        x = torch.cat([state, x], dim=-1)
        frames = max((x.shape[-1] - self.n_fft) // self.hop_length + 1, 0)
        if frames == 0:
            return x.new_zeros(x.shape[0], self.fbanks.shape[1], 0), x
        return self._frames(x[..., : (frames - 1) * self.hop_length + self.n_fft]), x[..., frames * self.hop_length:]


class SpeechRecognizer(AtomicSaveMixin, ModelMixin, ConfigMixin):
    """Streaming CTC recogniser. Defaults: 24 kHz, 80 mels every 10 ms, 50 Hz encoder of 4 x 192.

    Examples:
        >>> import torch, zoo
        >>> asr = zoo.load("asr-speech")                  # zoo train asr-speech
        >>> asr.transcribe(torch.zeros(1, 24_000), sample_rate=24_000)   # silence: nothing to say
        ['']
    """

    @register_to_config
    def __init__(self, sample_rate: int = 24_000, n_fft: int = 960, hop_length: int = 240, n_mels: int = 80,
                 hidden_size: int = 192, num_layers: int = 4, num_heads: int = 4, ffn_dim: int = 768,
                 context: int = 500, alphabet: str = ALPHABET):
        super().__init__()
        if len(set(alphabet)) != len(alphabet) or not alphabet:
            raise ValueError(f"alphabet must be distinct characters, got {alphabet!r}.")
        self.frontend = CausalLogMel(sample_rate, n_fft, hop_length, n_mels)
        self.input_norm = nn.LayerNorm(n_mels)
        self.subsample = nn.ModuleList([CausalConv1d(n_mels, hidden_size, 4, stride=2),
                                        CausalConv1d(hidden_size, hidden_size, 3)])
        self.transformer = CodecTransformer(hidden_size, num_layers, num_heads, ffn_dim, context, layer_scale=None)
        self.norm = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, len(alphabet) + 1)

    @property
    def samples_per_frame(self) -> int:
        """Audio samples per output frame (480 = 20 ms at 24 kHz)."""
        return 2 * self.config.hop_length

    def num_frames(self, num_samples: torch.Tensor | int):
        """Output frames for inputs of num_samples (the causal model ignores what follows)."""
        return -(-num_samples // self.samples_per_frame)

    def hidden(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Validated audio [B, 1, T] -> (final hidden [B, T', dim], every layer's output [B, dim, T'])."""
        h = self.input_norm(self.frontend(audio.to(self.dtype)).transpose(1, 2)).transpose(1, 2)
        h = F.gelu(self.subsample[1](F.gelu(self.subsample[0](h))))
        layers = []
        h = self.transformer(h, hidden_states=layers)
        return self.norm(h.transpose(1, 2)), layers

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Validated audio [B, 1, T] -> CTC logits [B, T', vocab] (blank = 0)."""
        return self.head(self.hidden(audio)[0])

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """The semantic teacher's features: mean of the transformer layers' outputs, [B, T', dim] (X-Codec)."""
        return torch.stack(self.hidden(audio)[1]).mean(0).transpose(1, 2)

    def features_step(self, audio: torch.Tensor, state: dict | None):
        """Streaming `features`: a chunk [B, 1, t] -> (features of the frames it completes, state)."""
        state = state or {"mel": None, "conv0": None, "conv1": None, "transformer": None}
        mel, mel_state = self.frontend.step(audio.to(self.dtype), state["mel"])
        h = self.input_norm(mel.transpose(1, 2)).transpose(1, 2)
        h, conv0 = self.subsample[0].step(h, state["conv0"])
        h, conv1 = self.subsample[1].step(F.gelu(h), state["conv1"])
        layers = []
        _, transformer = self.transformer.step(F.gelu(h), state["transformer"], hidden_states=layers)
        features = torch.stack(layers).mean(0).transpose(1, 2) if layers else h.new_zeros(h.shape[0], 0, h.shape[1])
        return features, {"mel": mel_state, "conv0": conv0, "conv1": conv1, "transformer": transformer}

    # -- text -----------------------------------------------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        """Characters -> ids (1..len(alphabet)); raises on characters outside the alphabet."""
        alphabet = self.config.alphabet
        unknown = sorted(set(text) - set(alphabet))
        if unknown:
            raise ValueError(f"characters {unknown} are not in the recogniser's alphabet {alphabet!r}; normalise "
                             f"the text first (zoo.metrics.recognizer.normalize_text).")
        return [alphabet.index(c) + 1 for c in text]

    def decode_ids(self, ids) -> str:
        """Greedy CTC collapse: merge repeats, drop blanks."""
        out, previous = [], 0
        for i in ids:
            if i != previous and i != 0:
                out.append(self.config.alphabet[i - 1])
            previous = i
        return " ".join("".join(out).split())

    @torch.no_grad()
    def transcribe(self, audio, sample_rate: int | None = None, lengths=None, resample: bool = False) -> list[str]:
        """Greedy CTC transcripts of a batch [B, 1, T] (or one waveform [T]); lengths: valid samples per row."""
        audio = prepare(audio, sample_rate, self.config.sample_rate, resample).to(self.device)
        ids = self(audio).argmax(-1).cpu()
        frames = [ids.shape[1]] * len(ids) if lengths is None else [int(self.num_frames(n)) for n in lengths]
        return [self.decode_ids(row[:n].tolist()) for row, n in zip(ids, frames)]

    @torch.no_grad()
    def align(self, audio, texts, sample_rate: int | None = None, lengths=None, resample: bool = False) -> list:
        """CTC forced alignment (torchaudio's Viterbi `forced_align`): where each character of each row's
        transcript starts, in seconds -> one float tensor [len(text)] per row, non-decreasing.

        audio [B, 1, T] (or one waveform [T]) with `texts` (one transcript per row, in the alphabet, spaces
        included); lengths: valid samples per row. The model is causal, so a character is found when the
        model has heard it: its time lags the sound's onset by about the same amount everywhere (a fixed
        offset, not drift). A transcript that needs more CTC frames than the audio has raises ValueError.
        """
        import torchaudio.functional as TAF

        if isinstance(texts, str):
            texts = [texts]
        audio = prepare(audio, sample_rate, self.config.sample_rate, resample).to(self.device)
        if not isinstance(texts, (list, tuple)) or len(texts) != len(audio) or not all(isinstance(t, str) and t
                                                                                       for t in texts):
            raise ValueError(f"texts must be one non-empty transcript per audio row ({len(audio)}), got {texts!r}.")
        log_probs = self(audio).float().log_softmax(-1).cpu()
        frames = [log_probs.shape[1]] * len(texts) if lengths is None else [int(self.num_frames(n)) for n in lengths]
        seconds_per_frame = self.samples_per_frame / self.config.sample_rate
        starts = []
        for row, text, n in zip(log_probs, texts, frames):
            targets = torch.tensor([self.encode_text(text)])
            repeats = sum(a == b for a, b in zip(text, text[1:]))  # CTC puts a blank between equal neighbours
            if len(text) + repeats > n:
                raise ValueError(f"{len(text)} characters need at least {len(text) + repeats} frames of "
                                 f"{seconds_per_frame * 1000:.0f} ms; the audio has {n}. Pass the whole utterance.")
            path, _ = TAF.forced_align(row[None, :n], targets, blank=0)
            spans = TAF.merge_tokens(path[0], torch.zeros(n))
            starts.append(torch.tensor([span.start for span in spans], dtype=torch.float32) * seconds_per_frame)
        return starts


def normalize_text(text: str) -> str:
    """Lower case, letters / apostrophes / single spaces only (the form transcripts are scored in)."""
    kept = "".join(c if c in ALPHABET else " " for c in text.lower())
    return " ".join(kept.split())


def error_rates(references: list[str], hypotheses: list[str]) -> dict:
    """Corpus WER and CER (jiwer) of hypotheses against references, after `normalize_text`."""
    import jiwer

    if len(references) != len(hypotheses) or not references:
        raise ValueError(f"need as many hypotheses as references (> 0), got {len(hypotheses)} and {len(references)}.")
    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    if not all(refs):
        raise ValueError("a reference transcript is empty after normalisation; WER is undefined for it.")
    return {"wer": jiwer.wer(refs, hyps), "cer": jiwer.cer(refs, hyps)}
