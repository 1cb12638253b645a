"""`SpeechCodec`: a streaming neural speech codec in Mimi's layout (kyutai-labs/moshi, arXiv 2410.00037).

    waveform [B, 1, T] at 24 kHz
      -> SEANet encoder (causal convs, ratios 8,6,5,4: 25 Hz)  -> bottleneck transformer (causal)
      -> learnt strided conv down to the frame rate (12.5 Hz)  -> split RVQ -> codes [B, Q, T / 1920]
    codes -> split RVQ decode (semantic + acoustic, summed) -> channel-wise transposed conv up
      -> bottleneck transformer -> SEANet decoder -> waveform

The first codebook is semantic, the rest acoustic (`SplitResidualVQ`). With a `semantic_teacher` the
codec also has X-Codec's semantic branch (arXiv 2408.17175, `tokenizers_audio/semantic.py`): the
teacher's features, pooled to the frame rate, are encoded, concatenated with the acoustic latent and
fused *before* the RVQ; a semantic decoder reconstructs them from the semantic codebook's output.

    codec = SpeechCodec.from_pretrained("path/to/codec-speech")
    codes = codec.encode(wav, sample_rate=24_000, num_codebooks=8)   # [B, 8, frames]
    wav = codec.decode(codes)                                        # [B, 1, frames * 1920]

Streaming: `encode_step(chunk, state)` / `decode_step(codes, state)` with explicit state objects
(None to start) give the same codes and samples as the offline calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput

from zoo.audio import as_batch, prepare
from zoo.nn.quantizers import SplitResidualVQ
from zoo.utils.io import AtomicSaveMixin

from .seanet import CausalConv1d, CausalConvTranspose1d, SEANetDecoder, SEANetEncoder
from .semantic import SemanticBranch, build_teacher, pool_to_frames
from .transformer import CodecTransformer


@dataclass
class CodecOutput(BaseOutput):
    """A training pass: the reconstruction and what the losses need. The fields after the first default to
    None so that accelerate can rebuild it from a dict under mixed precision (as `FlexTokOutput`)."""

    audio: torch.Tensor  # [B, 1, T']
    codes: torch.Tensor | None = None  # [B, Q, frames]
    commitment_loss: torch.Tensor | None = None
    semantic_prediction: torch.Tensor | None = None  # [B, frames, semantic_dim]: predicted teacher features
    semantic_target: torch.Tensor | None = None  # [B, frames, semantic_dim]: the teacher's pooled features


@dataclass
class EncoderState:
    seanet: list | None = None
    transformer: object = None
    downsample: torch.Tensor | None = None
    teacher: object = None
    teacher_frames: torch.Tensor | None = None  # teacher features not yet pooled into a codec frame


@dataclass
class DecoderState:
    upsample: torch.Tensor | None = None
    transformer: object = None
    seanet: list | None = None


class SpeechCodec(AtomicSaveMixin, ModelMixin, ConfigMixin):
    """Mimi's codec. The defaults are Mimi's (moshi `loaders.py`): 24 kHz, SEANet 64 filters, ratios
    8,6,5,4, dim 512, 8-layer transformers with a 250-frame context, 12.5 Hz, 32 codebooks of 2048 x 256.

    Args:
        semantic_teacher: None (no semantic branch, as Mimi, whose first codebook is distilled instead) or
            the teacher whose features enter before the RVQ (see `tokenizers_audio/semantic.py`), e.g.
            {"kind": "zoo-recognizer", "config": SpeechRecognizer config}. Its weights are part of the codec.

    Examples:
        >>> import torch, zoo
        >>> codec = zoo.load("codec-speech")
        >>> wav = torch.zeros(1, 1, 24_000)                      # one second at 24 kHz
        >>> codes = codec.encode(wav, sample_rate=24_000, num_codebooks=4)
        >>> codes.shape, codec.decode(codes).shape, codec.bitrate(4)
        (torch.Size([1, 4, 25]), torch.Size([1, 1, 24000]), 1000.0)
        >>> frame_codes, state = codec.encode_step(wav[..., :960])   # streaming, explicit state
    """

    @register_to_config
    def __init__(
        self,
        sample_rate: int = 24_000,
        channels: int = 1,
        num_filters: int = 64,
        ratios: list[int] = (8, 6, 5, 4),
        hidden_size: int = 512,
        num_residual_layers: int = 1,
        kernel_size: int = 7,
        residual_kernel_size: int = 3,
        last_kernel_size: int = 3,
        dilation_base: int = 2,
        compress: int = 2,
        num_transformer_layers: int = 8,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        context: int = 250,
        layer_scale: float = 0.01,
        rope_base: float = 10_000.0,
        frame_rate: float = 12.5,
        num_codebooks: int = 32,
        num_semantic_codebooks: int = 1,
        codebook_size: int = 2048,
        codebook_dim: int = 256,
        ema_decay: float = 0.99,
        threshold_usage_ratio: float = 0.1,
        semantic_teacher: dict | None = None,
    ):
        super().__init__()
        hop = math.prod(ratios)
        if sample_rate % hop:
            raise ValueError(f"sample_rate {sample_rate} is not a multiple of the SEANet hop prod(ratios) = {hop}.")
        stride = sample_rate / hop / frame_rate
        if stride != int(stride) or stride < 1:
            raise ValueError(f"frame_rate {frame_rate} must divide the SEANet rate {sample_rate / hop} Hz by a whole number.")
        stride = int(stride)
        seanet = dict(channels=channels, dim=hidden_size, num_filters=num_filters, ratios=ratios,
                      num_residual_layers=num_residual_layers, kernel_size=kernel_size, last_kernel_size=last_kernel_size,
                      residual_kernel_size=residual_kernel_size, dilation_base=dilation_base, compress=compress)
        transformer = dict(dim=hidden_size, num_layers=num_transformer_layers, num_heads=num_heads, ffn_dim=ffn_dim,
                           context=context, layer_scale=layer_scale, rope_base=rope_base)
        self.encoder = SEANetEncoder(**seanet)
        self.encoder_transformer = CodecTransformer(**transformer) if num_transformer_layers else None
        self.downsample = (CausalConv1d(hidden_size, hidden_size, 2 * stride, stride, bias=False, pad_mode="replicate")
                           if stride > 1 else None)
        self.quantizer = SplitResidualVQ(hidden_size, num_codebooks, codebook_size, codebook_dim, num_semantic_codebooks,
                                         decay=ema_decay, threshold_usage_ratio=threshold_usage_ratio)
        self.teacher = build_teacher(semantic_teacher, sample_rate) if semantic_teacher else None
        self.semantic = None
        if self.teacher is not None:
            self.teacher.requires_grad_(False)
            if self.frame_size % self.teacher.samples_per_frame:
                raise ValueError(f"the semantic teacher's frames ({self.teacher.samples_per_frame} samples) "
                                 f"must divide the codec's frame ({self.frame_size} samples).")
            self.semantic = SemanticBranch(hidden_size, self.teacher.feature_dim)
        # channel-wise (groups = dim), as moshi's `upsample_channel_wise_bug=True`
        self.upsample = (CausalConvTranspose1d(hidden_size, hidden_size, 2 * stride, stride, groups=hidden_size,
                                               bias=False) if stride > 1 else None)
        self.decoder_transformer = CodecTransformer(**transformer) if num_transformer_layers else None
        self.decoder = SEANetDecoder(**seanet)

    # -- sizes ----------------------------------------------------------------------------------------
    @property
    def frame_size(self) -> int:
        """Samples per code frame (Mimi: 1920 = 80 ms)."""
        return round(self.config.sample_rate / self.config.frame_rate)

    def num_frames(self, num_samples: int) -> int:
        return -(-num_samples // self.frame_size)

    def bitrate(self, num_codebooks: int | None = None) -> float:
        """Bits per second at num_codebooks (Mimi: 137.5 bps per codebook, 1.1 kbps at 8)."""
        n = self.quantizer.check_num_quantizers(num_codebooks)
        return n * math.log2(self.config.codebook_size) * self.config.frame_rate

    # -- checks ---------------------------------------------------------------------------------------
    def check_codes(self, codes: torch.Tensor):
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3 or codes.is_floating_point():
            raise ValueError(f"codes must be an integer tensor [B, num_codebooks, frames], got "
                             f"{type(codes).__name__} {tuple(getattr(codes, 'shape', ()))}.")
        if not 1 <= codes.shape[1] <= self.config.num_codebooks:
            raise ValueError(f"codes have {codes.shape[1]} codebooks; this codec has 1..{self.config.num_codebooks}.")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.config.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.config.codebook_size}), got "
                             f"[{int(codes.min())}, {int(codes.max())}].")

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # frozen: no dropout, no statistics updates
        return self

    @property
    def teacher_ratio(self) -> int:
        """Teacher frames per codec frame."""
        return self.frame_size // self.teacher.samples_per_frame

    @torch.no_grad()
    def semantic_features(self, audio: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The teacher's features of audio [B, 1, T], pooled to the codec's frames: [B, num_frames, D]."""
        return pool_to_frames(self.teacher.features(audio), num_frames, self.teacher_ratio)

    # -- offline --------------------------------------------------------------------------------------
    def encode_latent(self, audio: torch.Tensor):
        """Validated waveform [B, 1, T] -> (the latent the RVQ quantises [B, dim, frames], the teacher's
        pooled features [B, frames, D] or None)."""
        h = self.encoder(audio.to(self.dtype))
        if self.encoder_transformer is not None:
            h = self.encoder_transformer(h)
        if self.downsample is not None:
            h = self.downsample(h)
        if self.semantic is None:
            return h, None
        features = self.semantic_features(audio.to(self.dtype), h.shape[-1])
        return self.semantic.join(h, features), features

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Quantised latent [B, dim, frames] -> waveform [B, 1, frames * frame_size]."""
        if self.upsample is not None:
            latent = self.upsample(latent)
        if self.decoder_transformer is not None:
            latent = self.decoder_transformer(latent)
        return self.decoder(latent)

    @torch.no_grad()
    def encode(self, audio, sample_rate: int | None = None, num_codebooks: int | None = None,
               resample: bool = False) -> torch.Tensor:
        """audio ([T], [1, T] or [B, 1, T], at `sample_rate` Hz) -> codes [B, num_codebooks, frames] (int64).

        A last partial frame is padded (frames = ceil(T / frame_size)). resample=True converts other rates.
        """
        n = self.quantizer.check_num_quantizers(num_codebooks)
        audio = prepare(audio, sample_rate, self.config.sample_rate, resample).to(self.device)
        return self.quantizer.encode(self.encode_latent(audio)[0], n)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """codes [B, Q, frames] (Q <= num_codebooks, the first Q) -> waveform [B, 1, frames * frame_size]
        (or the first `length` samples)."""
        self.check_codes(codes)
        audio = self.decode_latent(self.quantizer.decode(codes.to(self.device)))
        return audio if length is None else audio[..., :length]

    def forward(self, audio: torch.Tensor, num_codebooks: int | None = None, decoder_only: bool = False,
                no_quantization_rate: float = 0.0) -> CodecOutput:
        """Training pass: validated audio [B, 1, T] (T a multiple of frame_size) -> CodecOutput.

        no_quantization_rate: in training, the probability that a sequence skips each RVQ (its decoder reads
        the projected latent; the codebooks still learn from it): Mimi's "quantization rate" (the Moshi
        paper quantises half of the sequences; moshi's `no_quantization_rate`). Not with decoder_only.

        decoder_only=True runs the encoder and the quantizer without gradients or codebook updates, so that
        only the decoder side learns and the codes stay those of the trained codec (an LM trained on them
        keeps working); its commitment loss is 0 and it has no semantic prediction.
        """
        if decoder_only:
            if no_quantization_rate:
                raise ValueError("decoder_only=True decodes the codes of a frozen encoder; pass no_quantization_rate=0.")
            with torch.no_grad():
                latent, _ = self.encode_latent(audio)
                codes = self.quantizer.encode(latent, num_codebooks)
                quantized = self.quantizer.decode(codes)
            return CodecOutput(self.decode_latent(quantized), codes, quantized.new_zeros(()), None, None)
        latent, target = self.encode_latent(audio)
        quantized, codes, commitment, semantic_part = self.quantizer(latent, num_codebooks, no_quantization_rate)
        prediction = self.semantic.predict(semantic_part) if self.semantic is not None else None
        return CodecOutput(self.decode_latent(quantized), codes, commitment, prediction, target)

    # -- streaming ------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_step(self, chunk: torch.Tensor, state: EncoderState | None = None, num_codebooks: int | None = None):
        """Stream a chunk of audio [B, 1, t] at the codec's rate (any t); returns (codes of the frames it
        completes [B, Q, f], new state). Chunks that add up to whole frames give exactly `encode`'s codes."""
        n = self.quantizer.check_num_quantizers(num_codebooks)
        state = state or EncoderState()
        chunk = as_batch(chunk, "chunk").to(self.device, self.dtype)
        h, seanet = self.encoder.step(chunk, state.seanet)
        transformer, downsample = state.transformer, state.downsample
        if self.encoder_transformer is not None:
            h, transformer = self.encoder_transformer.step(h, transformer)
        if self.downsample is not None:
            h, downsample = self.downsample.step(h, downsample)
        teacher, pending = state.teacher, state.teacher_frames
        if self.semantic is not None:  # the teacher completes its frames at the same samples as the codec
            features, teacher = self.teacher.features_step(chunk, teacher)
            pending = features if pending is None else torch.cat([pending, features], dim=1)
            used = h.shape[-1] * self.teacher_ratio
            if h.shape[-1]:
                h = self.semantic.join(h, pool_to_frames(pending[:, :used], h.shape[-1], self.teacher_ratio))
            pending = pending[:, used:]
        codes = self.quantizer.encode(h, n) if h.shape[-1] else h.new_zeros(h.shape[0], n, 0, dtype=torch.long)
        return codes, EncoderState(seanet, transformer, downsample, teacher, pending)

    @torch.no_grad()
    def decode_step(self, codes: torch.Tensor, state: DecoderState | None = None):
        """Stream code frames [B, Q, f]; returns (their f * frame_size samples [B, 1, ...], new state)."""
        self.check_codes(codes)
        state = state or DecoderState()
        h = self.quantizer.decode(codes.to(self.device))
        upsample, transformer = state.upsample, state.transformer
        if self.upsample is not None:
            h, upsample = self.upsample.step(h, upsample)
        if self.decoder_transformer is not None:
            h, transformer = self.decoder_transformer.step(h, transformer)
        audio, seanet = self.decoder.step(h, state.seanet)
        return audio, DecoderState(upsample, transformer, seanet)
