"""Recipe `codec-speech`: the streaming speech codec, with X-Codec's semantic branch taught by `asr-speech`.

    zoo train codec-speech --out runs/codec-speech --teacher runs/asr-speech/model --steps 4000
    zoo train codec-speech --out runs/codec-acoustic --no-semantic ...       # the ablation without it
    zoo train codec-speech --out runs/codec-dec --init codec-speech --decoder-only --steps 2000
                                            # go on training the decoder alone: the codes do not change

Random crops of zoo's espeak-ng speech; losses (weights as flags):
- multi-resolution STFT loss (spectral convergence + log magnitude at 512 / 1024 / 2048 points),
- multi-scale log-mel L1 (DAC's, windows 256..2048), the main reconstruction term,
- commitment of every RVQ level (the codebooks themselves learn by EMA),
- semantic reconstruction: MSE between the semantic decoder's output and the teacher's features
  (layer-normalised; X-Codec uses plain MSE x 100 on HuBERT features).
- optionally (`--adversarial`), EnCodec's multi-scale STFT discriminator: hinge loss and relative
  feature matching (Mimi trains with an adversarial and feature-matching loss only). The
  discriminator lives in the loss function (its own AdamW); it is not saved in checkpoints.
Quantizer dropout: each batch uses the first n ~ U{1..num_codebooks} codebooks (moshi's `q_dropout`),
so one model serves 1..8 codebooks. `--no-quantization-rate P`: each sequence skips the RVQ with probability
P (the Moshi paper trains Mimi at 0.5, its "quantization rate"; the built-in was trained at 0).
"""

from __future__ import annotations

import argparse
import json
import random

import torch
import torch.nn.functional as F

from tokenizers_audio.codec import SpeechCodec
from tokenizers_audio.discriminator import MultiScaleSTFTDiscriminator
from zoo.data.speech import SpeechDataset
from zoo.hub import resolve
from zoo.metrics.audio import log_mel
from zoo.nn.quantizers import check_rate
from zoo.train.loop import TrainConfig, add_mixed_precision, load_to_continue, train, train_only


class SpeechCrops(torch.utils.data.Dataset):
    """Random crops of `frames` codec frames from each utterance (zero-padded when shorter)."""

    def __init__(self, data: SpeechDataset, crop_samples: int, seed: int = 0):
        self.data, self.crop, self.seed, self.calls = data, crop_samples, seed, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        wav = self.data.audio(index)
        self.calls += 1
        rng = random.Random(hash((self.seed, index, self.calls)))
        if len(wav) > self.crop:
            start = rng.randrange(len(wav) - self.crop)
            wav = wav[start: start + self.crop]
        return F.pad(wav, (0, self.crop - len(wav)))[None]  # [1, crop]


def stft_loss(reference: torch.Tensor, estimate: torch.Tensor, sizes=(512, 1024, 2048)) -> torch.Tensor:
    """Multi-resolution STFT loss (Parallel WaveGAN): spectral convergence + L1 of log magnitudes."""
    total = 0.0
    for n_fft in sizes:
        window = torch.hann_window(n_fft, device=reference.device)
        ref, est = (torch.stft(x[:, 0], n_fft, n_fft // 4, window=window, return_complex=True).abs().clamp(min=1e-7)
                    for x in (reference, estimate))
        convergence = torch.linalg.norm(ref - est, dim=(1, 2)) / torch.linalg.norm(ref, dim=(1, 2)).clamp(min=1e-7)
        total = total + convergence.mean() + (ref.log() - est.log()).abs().mean()
    return total / len(sizes)


def mel_loss(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int,
             windows=(256, 512, 1024, 2048), mels=(20, 40, 80, 160)) -> torch.Tensor:
    """Multi-scale log-mel L1 (DAC)."""
    return sum((log_mel(reference, sample_rate, w, w // 4, m) - log_mel(estimate, sample_rate, w, w // 4, m)).abs().mean()
               for w, m in zip(windows, mels)) / len(windows)


def make_loss(weights: dict, num_codebooks: int, seed: int = 0, discriminator=None, lr: float = 3e-4,
              decoder_only: bool = False, no_quantization_rate: float = 0.0):
    """The codec's loss function for `train`. With a discriminator (MultiScaleSTFTDiscriminator) each call
    first takes one step of it on (real, reconstruction), then adds the generator's adversarial and
    feature-matching terms (weights "adversarial", "feature_matching"). decoder_only: the codec's
    `forward(..., decoder_only=True)`, for a codec whose encoder side is frozen. no_quantization_rate: the
    codec's `forward` option (sequences that skip the RVQ)."""
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(discriminator.parameters(), lr=lr, betas=(0.5, 0.9)) if discriminator else None

    def codec_loss(model, audio):
        n = rng.randint(1, num_codebooks)  # quantizer dropout, the same on every process for a given step
        out = model(audio, num_codebooks=n, decoder_only=decoder_only, no_quantization_rate=no_quantization_rate)
        recon = out.audio[..., : audio.shape[-1]]
        terms = {"stft": stft_loss(audio, recon), "mel": mel_loss(audio, recon, model.config.sample_rate)}
        if not decoder_only:
            terms["commitment"] = out.commitment_loss
        if out.semantic_prediction is not None:
            target = F.layer_norm(out.semantic_target, out.semantic_target.shape[-1:])
            terms["semantic"] = F.mse_loss(out.semantic_prediction, target)
        metrics = {}
        if discriminator is not None:
            d_loss = discriminator.discriminator_loss(audio, recon)
            optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            optimizer.step()
            terms["adversarial"], terms["feature_matching"] = discriminator.generator_losses(audio, recon)
            metrics["discriminator"] = d_loss.item()
        loss = sum(weights[k] * v for k, v in terms.items())
        return loss, {**{k: v.item() for k, v in terms.items()}, **metrics}

    return codec_loss


def codebook_hook(every: int):
    def hook(step, model, accelerator, log):
        if step % every == 0 and accelerator.is_main_process:
            quantizer = accelerator.unwrap_model(model).quantizer
            stats = [cb.usage_stats() for rvq in (quantizer.semantic, quantizer.acoustic) for cb in rvq.codebooks]
            log(f"step {step}: codebook entropy " + " ".join(f"{s['entropy']:.2f}" for s in stats)
                + "; live codes " + " ".join(f"{s['live_codes']:.2f}" for s in stats))
    return hook


def build_codec(args) -> SpeechCodec:
    teacher = None
    if not args.no_semantic:
        if not args.teacher:
            raise SystemExit("pass --teacher (asr-speech, or a trained recogniser's folder) or --no-semantic.")
        from zoo.metrics.recognizer import SpeechRecognizer

        recognizer = SpeechRecognizer.from_pretrained(resolve(args.teacher))
        teacher = {"kind": "zoo-recognizer", "config": {k: v for k, v in recognizer.config.items() if not k.startswith("_")}}
    codec = SpeechCodec(
        num_filters=args.filters, ratios=args.ratios, hidden_size=args.hidden, num_transformer_layers=args.layers,
        num_heads=max(args.hidden // 64, 1), ffn_dim=4 * args.hidden, context=args.context,
        frame_rate=args.frame_rate, num_codebooks=args.codebooks, codebook_size=args.codebook_size,
        codebook_dim=args.codebook_dim, semantic_teacher=teacher)
    if teacher is not None:
        codec.teacher.model.load_state_dict(recognizer.state_dict())
    return codec


def initial_codec(args) -> SpeechCodec:
    """A new codec from the flags, or the `--init` one (with all but its decoder side frozen for
    `--decoder-only`)."""
    if args.init is None:
        if args.decoder_only:
            raise SystemExit("--decoder-only goes on training a codec's decoder: pass --init (e.g. codec-speech).")
        return build_codec(args)
    codec = load_to_continue(args.init, SpeechCodec)
    return train_only(codec, ("upsample.", "decoder_transformer.", "decoder.")) if args.decoder_only else codec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="zoo train codec-speech", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--teacher", help="a trained asr-speech recogniser, the semantic teacher: the built-in asr-speech, "
                                     "a folder or a Hub id")
    p.add_argument("--no-semantic", action="store_true", help="train without the semantic branch (the ablation)")
    p.add_argument("--utterances", type=int, default=3000)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop-frames", type=int, default=24, help="training crop in codec frames")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--filters", type=int, default=16)
    p.add_argument("--ratios", type=int, nargs="+", default=[8, 6, 5, 2])
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--context", type=int, default=250)
    p.add_argument("--frame-rate", type=float, default=25.0)
    p.add_argument("--codebooks", type=int, default=8)
    p.add_argument("--codebook-size", type=int, default=1024)
    p.add_argument("--codebook-dim", type=int, default=64)
    p.add_argument("--w-stft", type=float, default=1.0)
    p.add_argument("--w-mel", type=float, default=1.0)
    p.add_argument("--w-commitment", type=float, default=1.0)
    p.add_argument("--w-semantic", type=float, default=1.0)
    p.add_argument("--adversarial", action="store_true", help="add EnCodec's MS-STFT discriminator (hinge + feature matching)")
    p.add_argument("--w-adversarial", type=float, default=1.0)
    p.add_argument("--w-feature-matching", type=float, default=3.0)
    p.add_argument("--init", help="start from a trained codec (built-in name, folder or Hub id) instead of a new one; "
                                  "the architecture flags are then ignored")
    p.add_argument("--decoder-only", action="store_true",
                   help="with --init: train the decoder side alone (upsampling, decoder transformer, SEANet decoder); "
                        "the encoder and codebooks stay frozen, so the codes, and LMs trained on them, stay valid")
    p.add_argument("--no-quantization-rate", type=float, default=0.0,
                   help="probability that a training sequence skips the RVQ (Moshi trains Mimi at 0.5); not with "
                        "--decoder-only")
    p.add_argument("--seed", type=int, default=0)
    add_mixed_precision(p)
    args = p.parse_args(argv)
    try:
        check_rate("--no-quantization-rate", args.no_quantization_rate)
    except ValueError as error:
        p.error(str(error))
    if args.decoder_only and args.no_quantization_rate:
        p.error("--decoder-only trains on the frozen encoder's codes; drop --no-quantization-rate.")
    codec = initial_codec(args)
    config = TrainConfig(output_dir=args.out, max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         betas=(0.8, 0.99), warmup_steps=min(200, args.steps // 10), lr_schedule="cosine",
                         log_every=min(50, args.steps), checkpoint_every=min(500, args.steps), seed=args.seed,
                         mixed_precision=args.mixed_precision, extra=vars(args))
    data = SpeechCrops(SpeechDataset("train", args.utterances, cache_dir=args.cache_dir),
                       args.crop_frames * codec.frame_size, args.seed)
    weights = {"stft": args.w_stft, "mel": args.w_mel, "commitment": args.w_commitment, "semantic": args.w_semantic,
               "adversarial": args.w_adversarial, "feature_matching": args.w_feature_matching}
    discriminator = MultiScaleSTFTDiscriminator() if args.adversarial else None
    loss = make_loss(weights, codec.config.num_codebooks, args.seed, discriminator, decoder_only=args.decoder_only,
                     no_quantization_rate=args.no_quantization_rate)
    codec = train(codec, data, loss, config, hooks=[codebook_hook(250)])
    from accelerate import PartialState

    if PartialState().is_main_process:
        codec.save_pretrained(f"{args.out}/model")
        print(json.dumps({"parameters_M": sum(p.numel() for p in codec.parameters()) / 1e6,
                          "bitrate_8": codec.bitrate(min(8, codec.config.num_codebooks))}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
