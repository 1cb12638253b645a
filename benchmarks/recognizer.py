"""The intelligibility judge: how the speech recogniser reads clean speech and speech through common channels.

    python benchmarks/recognizer.py --recognizers asr-speech runs/asr-v2/model --utterances 50

`asr-speech` scores every speech model in zoo (WER / CER of reconstructions and generated speech), so its
errors on audio that people understand well are errors of the metric. Each recogniser reads the same test
utterances (espeak-ng speech, 24 kHz) clean and through: white noise at 20 and 10 dB SNR, a low-pass at
4 kHz (one biquad), a telephone band (resampled to 8 kHz and back), and a room (a synthetic reverberation
tail, rt60 0.4 s, 30% reverberant). None of these is a codec; a judge that holds up through them and
still fails a codec's output is reading the codec's own errors.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torchaudio.functional as AF

from benchmarks.common import claim, machine_description, report, write_results
from zoo.data.speech import SAMPLE_RATE, SpeechDataset, add_noise
from zoo.metrics.recognizer import error_rates
from zoo.train.asr_speech import narrow_band, room


def conditions() -> dict:
    """name -> wav [T] -> the same speech through that channel (deterministic)."""
    return {
        "clean": lambda wav: wav,
        "white noise 20 dB": lambda wav: add_noise(wav, 20.0, generator=torch.Generator().manual_seed(0)),
        "white noise 10 dB": lambda wav: add_noise(wav, 10.0, generator=torch.Generator().manual_seed(0)),
        "low-pass 4 kHz": lambda wav: AF.lowpass_biquad(wav, SAMPLE_RATE, 4000.0),
        "telephone band (8 kHz)": lambda wav: narrow_band(wav, 8000),
        "room (rt60 0.4 s)": lambda wav: room(wav, 0.4, 0.3, torch.Generator().manual_seed(0)),
    }


def judge_rows(name: str, recognizer, utterances: list[dict]) -> list[dict]:
    references = [u["text"] for u in utterances]
    rows = []
    for condition, channel in conditions().items():
        hypotheses = [recognizer.transcribe(channel(u["audio"]).clamp(-1, 1), sample_rate=SAMPLE_RATE)[0]
                      for u in utterances]
        rows.append({"system": name, "condition": condition, **error_rates(references, hypotheses)})
    return rows


def main(argv=None) -> int:
    import zoo

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recognizers", nargs="+", default=["asr-speech"], help="built-in names or folders")
    p.add_argument("--utterances", type=int, default=50)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--name", default="recognizer")
    p.add_argument("--quick", action="store_true", help="5 utterances; results to recognizer.quick.json")
    args = p.parse_args(argv)
    if args.quick:
        args.utterances = min(args.utterances, 5)
    if args.utterances < 1:
        raise SystemExit(f"--utterances must be >= 1, got {args.utterances}.")
    torch.set_num_threads(2)
    data = SpeechDataset("test", args.utterances, cache_dir=args.cache_dir)
    utterances = [data[i] for i in range(len(data))]
    rows, claims = [], []
    for name in args.recognizers:
        judged = judge_rows(name, zoo.load(name).eval(), utterances)
        rows += judged
        clean, phone = judged[0], next(r for r in judged if r["condition"].startswith("telephone"))
        claims.append(claim(f"{name} reads telephone-band speech within 2x of its clean WER",
                            phone["wer"] <= 2 * clean["wer"],
                            f"{100 * phone['wer']:.1f}% vs {100 * clean['wer']:.1f}%"))
    command = " ".join(["python benchmarks/recognizer.py", *(sys.argv[1:] if argv is None else argv)])
    seconds = sum(len(u["audio"]) for u in utterances) / SAMPLE_RATE
    path = write_results(args.name, command, machine_description(2), rows, claims, quick=args.quick,
                         columns=["system", "condition", "wer", "cer"],
                         notes=f"{len(utterances)} test utterances ({seconds:.0f} s); greedy CTC decoding; corpus "
                               "WER / CER (jiwer) after lower-casing.")
    report(rows, claims, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
