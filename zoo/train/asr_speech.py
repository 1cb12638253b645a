"""Recipe `asr-speech`: the CTC recogniser that judges speech (WER / CER) and teaches the codec semantics.

    zoo train asr-speech --out runs/asr-speech --utterances 3000 --steps 3000

CTC over characters on zoo's espeak-ng speech (train split), with random gain and, on half the
utterances, white or pink noise at 10 to 40 dB SNR, so that the judge holds up on imperfect audio
(codec reconstructions). Batches hold utterances of similar length (`--no-group-by-length`: at random).
At the end it reports WER / CER on validation utterances.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from zoo.data.speech import SpeechDataset, add_noise
from zoo.metrics.recognizer import SpeechRecognizer, error_rates
from zoo.train.loop import TrainConfig, add_group_by_length, add_mixed_precision, train


class AugmentedSpeech(torch.utils.data.Dataset):
    """Utterances with a random gain and, half of the time, background noise: a fresh draw each time an
    utterance is read, the same sequence of draws in every run with the same seed."""

    def __init__(self, data: SpeechDataset, augment: bool = True, seed: int = 0):
        self.data, self.augment, self.seed, self.reads = data, augment, seed, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        item = self.data[index]
        wav = item["audio"]
        if self.augment:
            self.reads += 1
            g = torch.Generator().manual_seed(hash((self.seed, index, self.reads)))
            wav = wav * (10 ** (torch.empty(1).uniform_(-12, 3, generator=g) / 20))
            if torch.rand(1, generator=g) < 0.5:
                color = "pink" if torch.rand(1, generator=g) < 0.5 else "white"
                wav = add_noise(wav, float(torch.empty(1).uniform_(10, 40, generator=g)), generator=g, color=color)
        return {"audio": wav.clamp(-1, 1), "text": item["text"]}


def collate(items):
    """Pad waveforms at the end (the causal model never looks at what follows a row's end)."""
    lengths = torch.tensor([len(i["audio"]) for i in items])
    audio = torch.zeros(len(items), 1, int(lengths.max()))
    for row, item in enumerate(items):
        audio[row, 0, : len(item["audio"])] = item["audio"]
    return {"audio": audio, "lengths": lengths, "texts": [i["text"] for i in items]}


def ctc_loss(model, batch):
    logits = model(batch["audio"])  # [B, T', V]
    targets = [torch.tensor(model.encode_text(t)) for t in batch["texts"]]
    frames = model.num_frames(batch["lengths"]).clamp(max=logits.shape[1])
    loss = F.ctc_loss(logits.float().log_softmax(-1).transpose(0, 1), torch.cat(targets), frames,
                      torch.tensor([len(t) for t in targets]), blank=0, zero_infinity=True)
    return loss, {}


@torch.no_grad()
def evaluate(model, data: SpeechDataset, batch_size: int = 16) -> dict:
    """Corpus WER / CER of greedy transcripts on `data`."""
    model.eval()
    hypotheses, references = [], []
    for start in range(0, len(data), batch_size):
        batch = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
        hypotheses += model.transcribe(batch["audio"], sample_rate=model.config.sample_rate, lengths=batch["lengths"])
        references += batch["texts"]
    return {**error_rates(references, hypotheses), "utterances": len(data), "examples": list(zip(references, hypotheses))[:5]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="zoo train asr-speech", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--utterances", type=int, default=3000, help="training utterances (synthesised once, cached)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--eval-utterances", type=int, default=200)
    p.add_argument("--cache-dir", default=None, help="where the speech cache lives (default ~/.cache/zoo/speech)")
    p.add_argument("--seed", type=int, default=0)
    add_group_by_length(p)
    add_mixed_precision(p)
    args = p.parse_args(argv)
    config = TrainConfig(output_dir=args.out, max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=1e-2, warmup_steps=min(300, args.steps // 10), lr_schedule="cosine",
                         log_every=min(50, args.steps), checkpoint_every=min(500, args.steps), seed=args.seed,
                         mixed_precision=args.mixed_precision, extra=vars(args))
    model = SpeechRecognizer(hidden_size=args.hidden, num_layers=args.layers, num_heads=max(args.hidden // 48, 1),
                             ffn_dim=4 * args.hidden)
    data = AugmentedSpeech(SpeechDataset("train", args.utterances, cache_dir=args.cache_dir), seed=args.seed)
    samples = data.data.offsets.diff() if args.group_by_length else None
    model = train(model, data, ctc_loss, config, collate_fn=collate, lengths=samples)
    from accelerate import PartialState

    if PartialState().is_main_process:
        model.save_pretrained(f"{args.out}/model")
        result = evaluate(model, SpeechDataset("validation", args.eval_utterances, cache_dir=args.cache_dir))
        with open(f"{args.out}/validation.json", "w") as f:
            json.dump(result, f, indent=2)
        print(json.dumps({k: v for k, v in result.items() if k != "examples"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
