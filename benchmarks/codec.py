"""Speech codec: quality vs bitrate on the test split, the semantic branch's effect, and speed.

    python benchmarks/codec.py --codec codec-speech --ablation codec-speech-acoustic --utterances 50

Quality rows: the first 1, 2, 4 and 8 codebooks of each codec on `--utterances` test utterances
(espeak-ng speech, 24 kHz): bitrate, mel distance, STOI, PESQ (wide band), SI-SDR, and the WER / CER
of the `asr-speech` recogniser on the reconstructions, next to its WER on the original audio, and DNSMOS
(overall) where the `speechmos` package is installed.
`--ablation` is the same codec trained without the semantic branch. Speed rows: encode and decode
real-time factors (wall time / audio duration; < 1 is faster than real time) on `--rtf-seconds` of
audio, batch 1, next to transformers' `MimiModel`, `EncodecModel` (24 kHz, 8 codebooks) and
`DacModel` (24 kHz, 8 codebooks) with random weights (same machine, same run).
"""

from __future__ import annotations

import argparse
import sys

import torch

from benchmarks.common import claim, machine_description, mean_dnsmos, report, write_results
from zoo.data.speech import SAMPLE_RATE, SpeechDataset
from zoo.metrics import audio as metrics
from zoo.metrics.recognizer import error_rates


def quality_rows(name: str, codec, recognizer, utterances: list[dict], levels: list[int]) -> list[dict]:
    """One row per number of codebooks: the codec's reconstructions of every utterance, scored."""
    codes = [codec.encode(u["audio"], sample_rate=SAMPLE_RATE) for u in utterances]
    rows = []
    for n in levels:
        recon = [codec.decode(c[:, :n], length=len(u["audio"]))[0, 0] for c, u in zip(codes, utterances)]
        pairs = list(zip([u["audio"] for u in utterances], recon))
        hypotheses = [recognizer.transcribe(r, sample_rate=SAMPLE_RATE)[0] for r in recon]
        rows.append({
            "system": name, "codebooks": n, "bitrate_bps": codec.bitrate(n),
            "mel_distance": sum(metrics.mel_distance(a, b, SAMPLE_RATE) for a, b in pairs) / len(pairs),
            "stoi": sum(metrics.stoi(a, b, SAMPLE_RATE) for a, b in pairs) / len(pairs),
            "pesq_wb": sum(metrics.pesq(a, b, SAMPLE_RATE) for a, b in pairs) / len(pairs),
            "si_sdr_db": sum(metrics.si_sdr(a, b) for a, b in pairs) / len(pairs),
            **error_rates([u["text"] for u in utterances], hypotheses),
            **mean_dnsmos([r for _, r in pairs], SAMPLE_RATE),
        })
    return rows


def speed_rows(codec, seconds: float, repeats: int, peers: bool = True) -> list[dict]:
    """Encode / decode real-time factors of zoo's codec and of transformers' codecs (random weights)."""
    from transformers import DacConfig, DacModel, EncodecConfig, EncodecModel, MimiConfig, MimiModel

    wav = 0.1 * torch.randn(1, 1, int(seconds * SAMPLE_RATE), generator=torch.Generator().manual_seed(0))
    rows = []

    def add(system, params, encode, decode):
        codes = encode()
        rows.append({"system": system, "parameters_M": params / 1e6,
                     "encode_rtf": metrics.real_time_factor(encode, seconds, repeats),
                     "decode_rtf": metrics.real_time_factor(lambda: decode(codes), seconds, repeats)})

    n = min(8, codec.config.num_codebooks)
    add(f"zoo SpeechCodec ({n} codebooks)", sum(p.numel() for p in codec.parameters()),
        lambda: codec.encode(wav, sample_rate=SAMPLE_RATE, num_codebooks=n), codec.decode)
    if not peers:
        return rows
    mimi = MimiModel(MimiConfig()).eval()
    add("transformers MimiModel (random, 8 codebooks)", sum(p.numel() for p in mimi.parameters()),
        lambda: mimi.encode(wav, num_quantizers=8).audio_codes, lambda c: mimi.decode(c).audio_values)
    encodec = EncodecModel(EncodecConfig()).eval()
    add("transformers EncodecModel 24 kHz (random, 6 kbps = 8 codebooks)", sum(p.numel() for p in encodec.parameters()),
        lambda: encodec.encode(wav, bandwidth=6.0).audio_codes, lambda c: encodec.decode(c, [None]).audio_values)
    dac = DacModel(DacConfig(sampling_rate=24_000, downsampling_ratios=[2, 4, 5, 8], upsampling_ratios=[8, 5, 4, 2],
                             n_codebooks=32, hop_length=320)).eval()
    add("transformers DacModel 24 kHz (random, 8 codebooks)", sum(p.numel() for p in dac.parameters()),
        lambda: dac.encode(wav, n_quantizers=8).audio_codes[:, :8], lambda c: dac.decode(audio_codes=c).audio_values)
    return rows


@torch.no_grad()
def main(argv=None) -> int:
    import zoo

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codec", default="codec-speech")
    p.add_argument("--ablation", help="the same codec trained without the semantic branch (a built-in name or a folder)")
    p.add_argument("--recognizer", default="asr-speech")
    p.add_argument("--utterances", type=int, default=50)
    p.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--rtf-seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--no-peers", action="store_true", help="skip transformers' Mimi / EnCodec / DAC speed rows")
    p.add_argument("--quick", action="store_true", help="5 utterances, 2 s of audio for speed; results to codec.quick.json")
    p.add_argument("--name", default="codec", help="results/<name>.json and its BENCHMARKS.md section (another name "
                                                   "keeps a side comparison apart from the main table)")
    args = p.parse_args(argv)
    if args.quick:
        args.utterances, args.rtf_seconds, args.repeats = min(args.utterances, 5), 2.0, 1
    torch.set_num_threads(2)
    codec, recognizer = zoo.load(args.codec).eval(), zoo.load(args.recognizer).eval()
    data = SpeechDataset("test", args.utterances, cache_dir=args.cache_dir)
    utterances = [data[i] for i in range(len(data))]
    levels = [n for n in args.levels if n <= codec.config.num_codebooks]

    original = error_rates([u["text"] for u in utterances],
                           [recognizer.transcribe(u["audio"], sample_rate=SAMPLE_RATE)[0] for u in utterances])
    rows = [{"system": "original audio", "bitrate_bps": 16 * SAMPLE_RATE, **original,
             **mean_dnsmos([u["audio"] for u in utterances], SAMPLE_RATE)}]
    rows += quality_rows(f"{args.codec}", codec, recognizer, utterances, levels)
    if args.ablation:
        rows += quality_rows(f"{args.ablation} (no semantic branch)", zoo.load(args.ablation).eval(), recognizer,
                             utterances, levels)
    speed = speed_rows(codec, args.rtf_seconds, args.repeats, peers=not args.no_peers)

    top = [r for r in rows if r["system"] == args.codec and r["codebooks"] == max(levels)][0]
    claims = [claim(f"recogniser WER on reconstructions at {max(levels)} codebooks is within 1.5x of its WER on the "
                    "original audio", top["wer"] <= 1.5 * original["wer"],
                    f"{100 * top['wer']:.1f}% vs {100 * original['wer']:.1f}% ({top['wer'] / max(original['wer'], 1e-9):.2f}x)")]
    if args.ablation:
        for n in sorted({levels[0], max(levels)}):
            semantic = [r for r in rows if r["system"] == args.codec and r["codebooks"] == n][0]
            acoustic = [r for r in rows if r["system"].startswith(args.ablation) and r["codebooks"] == n][0]
            claims.append(claim(f"the semantic branch lowers WER at {n} codebook(s) (X-Codec)",
                                semantic["wer"] < acoustic["wer"],
                                f"{100 * semantic['wer']:.1f}% with vs {100 * acoustic['wer']:.1f}% without"))
    zoo_speed = speed[0]
    claims.append(claim("zoo's codec encodes and decodes faster than real time on this CPU (batch 1)",
                        zoo_speed["encode_rtf"] < 1 and zoo_speed["decode_rtf"] < 1,
                        f"encode RTF {zoo_speed['encode_rtf']:.3f}, decode RTF {zoo_speed['decode_rtf']:.3f}"))
    command = " ".join(["python benchmarks/codec.py", *(sys.argv[1:] if argv is None else argv)])
    path = write_results(args.name, command, machine_description(2), rows + speed, claims, quick=args.quick,
                         columns=["system", "codebooks", "bitrate_bps", "mel_distance", "stoi", "pesq_wb", "si_sdr_db",
                                  "wer", "cer", "dnsmos_ovrl", "parameters_M", "encode_rtf", "decode_rtf"],
                         notes=f"{len(utterances)} test utterances ({sum(len(u['audio']) for u in utterances) / SAMPLE_RATE:.0f} s); "
                               f"speed on {args.rtf_seconds:g} s of audio, median of {args.repeats}.")
    report(rows + speed, claims, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
