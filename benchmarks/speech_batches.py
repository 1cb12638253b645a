"""Training speed of `zoo train tts-speech`: random batches against batches of similar length.

    python benchmarks/speech_batches.py [--utterances 400] [--cache-dir runs/speech-cache] [--quick]

zoo's espeak-ng utterances last 1 to 13 s, so a random batch is padded to its longest utterance and much
of every step is spent on padding. The recipe's LM (its default sizes: characters as the text prefix, the
first 4 codebooks of `codec-speech`) trains one epoch over the same utterances, from the same weights,
with random batches (`--no-group-by-length`) and with batches of similar length (the recipe's default:
transformers' `DistributedLengthGroupedSampler`, shuffled and sorted within mega-batches). Rows: seconds
for the epoch, utterances/s, real (unpadded) frames/s, and the share of padded frames in the batches.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import claim, machine_description, report, timed_training, write_results


def padding_counter(collate):
    """`collate` that also counts real and padded frame slots of every batch it makes."""
    counts = {"real": 0, "slots": 0}

    def counted(items):
        batch = collate(items)
        counts["real"] += int(batch["num_valid"].sum())
        counts["slots"] += batch["frames"].shape[0] * batch["frames"].shape[-1]
        return batch

    return counted, counts


def main(argv=None) -> int:
    import argparse

    import zoo
    from zoo.data.speech import SpeechDataset, default_cache_dir
    from zoo.data.text import character_tokenizer
    from zoo.train.loop import TrainConfig
    from zoo.train.tts_speech import SpeechCodes, build_parser, initial_lm, make_collate, make_loss

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codec", default="codec-speech")
    p.add_argument("--utterances", type=int, default=400, help="training utterances: one epoch of them per row")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--cache-dir", default=None, help="the speech data cache (default ~/.cache/zoo/speech)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny LM on 24 utterances in batches of 2, results to speech_batches.quick.json")
    args = p.parse_args(argv)
    if args.quick:  # batches of 2: mega-batches of 6 utterances to group (of one batch, at 8)
        args.utterances, args.batch_size = 24, 2
    if args.utterances < 4 * args.batch_size:
        raise SystemExit(f"pass --utterances >= {4 * args.batch_size} (4 batches) for an epoch worth timing.")
    torch.set_num_threads(2)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()

    codec = zoo.load(args.codec).eval()
    data = SpeechDataset("train", args.utterances, cache_dir=cache)
    codes = SpeechCodes(codec, data, 4, cache / f"tts-codes-train-{args.utterances}.safetensors")
    tokenizer = character_tokenizer()
    sizes = ["--hidden", "64", "--layers", "1", "--depth-hidden", "32", "--depth-layers", "1"] if args.quick else []
    recipe = build_parser().parse_args(["--out", "unused", "--codebooks", "4", *sizes])
    torch.manual_seed(0)
    lm = initial_lm(recipe, len(tokenizer), codec.config.codebook_size)
    frames = codes.offsets.diff()
    if int(frames.max()) + 1 + lm.max_delay > lm.config.max_frames:
        raise SystemExit("an utterance does not fit the LM's context; pass fewer --utterances.")
    steps = args.utterances // args.batch_size

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        loss = make_loss(recipe.mctp_weight, recipe.mctp_frames)
        warm_up = TrainConfig(output_dir=str(Path(tmp) / "warm-up"), max_steps=2, batch_size=args.batch_size)
        timed_training(lm, codes, loss, warm_up, collate_fn=make_collate(lm, tokenizer))  # first-call costs, untimed
        for name, lengths in (("random batches", None), ("length-grouped batches", frames)):
            collate, counts = padding_counter(make_collate(lm, tokenizer, frame_rate=codec.config.frame_rate))
            config = TrainConfig(output_dir=str(Path(tmp) / name.split()[0]), max_steps=steps,
                                 batch_size=args.batch_size, lr=recipe.lr, weight_decay=0.05, warmup_steps=5,
                                 log_every=max(1, steps // 5), checkpoint_every=10**9, seed=0)
            timing = timed_training(lm, codes, loss, config, collate_fn=collate, lengths=lengths)
            rows.append({"system": name, "batch": args.batch_size, "steps": steps, "seconds": timing["seconds"],
                         "utterances_per_s": steps * args.batch_size / timing["seconds"],
                         "frames_per_s": counts["real"] / timing["seconds"],
                         "padded_share": 1 - counts["real"] / counts["slots"], "mean_loss": timing["mean_loss"]})
    shuffled, grouped = rows
    speedup = grouped["utterances_per_s"] / shuffled["utterances_per_s"]
    grouped["speedup"], shuffled["speedup"] = speedup, 1.0
    claims = [claim("length-grouped batches train the TTS LM at least 1.5x faster than random ones "
                    "(utterances/s over one epoch)", speedup >= 1.5,
                    f"{speedup:.2f}x ({grouped['seconds']:.0f} s vs {shuffled['seconds']:.0f} s; padded frames "
                    f"{100 * grouped['padded_share']:.0f}% vs {100 * shuffled['padded_share']:.0f}%)")]
    notes = (f"one epoch of the first {args.utterances} speech training utterances, batch {args.batch_size}, float32, "
             f"{sum(p.numel() for p in lm.parameters()) / 1e6:.1f}M-parameter LM (the recipe's default sizes"
             f"{', shrunk for --quick' if args.quick else ''}), same initial weights; padded_share counts frame "
             "slots (the text prefix is padded too); mean_loss: mean of the logged windows.")
    command = "python benchmarks/speech_batches.py " + " ".join(sys.argv[1:] if argv is None else argv)
    path = write_results("speech_batches", command.strip(), machine_description(2), rows, claims,
                         ["system", "batch", "steps", "seconds", "utterances_per_s", "frames_per_s", "padded_share",
                          "speedup", "mean_loss"], quick=args.quick, notes=notes)
    report(rows, claims, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
