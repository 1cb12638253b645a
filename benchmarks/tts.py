"""Text-to-speech on codec tokens: intelligibility, naturalness and speed, semantic vs acoustic codec, MCTP.

    python benchmarks/tts.py --tts tts-speech-prefix --ablation runs/tts-acoustic/pipeline --utterances 50
    python benchmarks/tts.py --phonemes runs/tts-phonemes/pipeline ...   # adds the phoneme-input row
    python benchmarks/tts.py --text-stream tts-speech ...                 # adds the aligned-text-stream row

`--tts` is the text-prefix TTS every other row is compared with (default `tts-speech-prefix`; the built-in
`tts-speech` has the aligned text stream).

Quality rows: the transcripts of `--utterances` test utterances said by each TTS pipeline (one seed per
utterance, at most twice the original's duration plus 1 s), scored by the `asr-speech` recogniser (WER / CER) next to its WER on the espeak-ng originals,
and DNSMOS (overall) where `speechmos` is installed. `--ablation` is the same TTS recipe on the codec
trained without the semantic branch (X-Codec's claim: semantic tokens lower the WER of generated speech).
Codec rows: the originals encoded and decoded by each pipeline's codec at its LM's codebooks, the floor
under any LM's WER on that codec.
Sampling rows (`--sampling T,K ...`): the main pipeline (`--text-stream`, else `--tts`) at other temperatures
and top-k than the default (the pipelines' own: Moshi's temperature 0.8, top-k 250).
Decoding rows: plain decoding (the backbone emits every frame) and each `--schedules` MCTP schedule
(VITA-Audio's claim: several-fold faster, much lower first-audio latency, small quality cost): WER on
the same texts, real-time factor (generation + decoding wall time / audio duration, batch 1) and time to
first audio (stream=True, 2-frame chunks), medians over `--speed-utterances` texts.
Compiled rows (`--compile`): plain decoding and each schedule timed again with compile=True (torch.compile of
the backbone's and the depth transformer's decode steps; the warm-up call compiles), in the same run.
The decodings of `--tts` (plain, schedules, compiled) take turns text by text when timed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from benchmarks.common import claim, machine_description, mean_dnsmos, report, write_results
from pipelines.speech import TEMPERATURE, TOP_K
from zoo.data.speech import SAMPLE_RATE, SpeechDataset
from zoo.metrics.recognizer import error_rates


def say_all(pipe, texts: list[str], limits: list[float], schedule=None, **options):
    """Each text said with seed = its index, one at a time (as a user would), up to its time limit. options:
    the pipeline's guidance_scale, temperature, top_k."""
    return [torch.as_tensor(pipe(t, generator=torch.Generator().manual_seed(i), mctp_schedule=schedule,
                                 max_seconds=limit, output_type="pt", **options).audios[0])
            for i, (t, limit) in enumerate(zip(texts, limits))]


def quality_row(system: str, audios, texts, recognizer) -> dict:
    hypotheses = [recognizer.transcribe(a, sample_rate=SAMPLE_RATE)[0] if len(a) else "" for a in audios]
    seconds = [len(a) / SAMPLE_RATE for a in audios]
    return {"system": system, **error_rates(texts, hypotheses), "mean_seconds": sum(seconds) / len(seconds),
            **mean_dnsmos(audios, SAMPLE_RATE)}


@torch.no_grad()
def reconstruction_row(name: str, pipe, audios, texts, recognizer) -> dict:
    """The originals through `pipe`'s codec at the codebooks its LM predicts: what any LM on it can reach."""
    q = pipe.lm.config.num_codebooks
    recon = [pipe.codec.decode(pipe.codec.encode(a, SAMPLE_RATE, num_codebooks=q), length=len(a))[0, 0].cpu()
             for a in audios]
    return quality_row(f"{name}'s codec: reconstructions ({q} codebooks)", recon, texts, recognizer)


def sampling_setting(text: str) -> tuple[float, int]:
    """ "T,K" -> (temperature T >= 0, top-k K >= 0), for --sampling."""
    try:
        temperature, top_k = text.split(",")
        temperature, top_k = float(temperature), int(top_k)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a sampling setting is TEMPERATURE,TOP_K (e.g. 1,0), got {text!r}") from None
    if temperature < 0 or top_k < 0:
        raise argparse.ArgumentTypeError(f"temperature and top-k must be >= 0, got {text!r}")
    return temperature, top_k


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def speed_rows(pipe, texts: list[str], limits: list[float], systems: list[tuple]) -> list[dict]:
    """Median real-time factor and time to first audio over `texts` (batch 1) for each system (mctp_schedule,
    options): one warm-up call each (a compiled one compiles), then the systems take turns text by text, so
    a machine whose speed drifts during the run slows them alike."""
    for schedule, options in systems:
        pipe(texts[0], max_seconds=1.0, mctp_schedule=schedule, generator=torch.Generator().manual_seed(0), **options)
    rtfs, first_audio = [[] for _ in systems], [[] for _ in systems]
    for i, (text, limit) in enumerate(zip(texts, limits)):
        for j, (schedule, options) in enumerate(systems):
            start = time.perf_counter()
            audio = pipe(text, generator=torch.Generator().manual_seed(i), mctp_schedule=schedule, max_seconds=limit,
                         **options).audios[0]
            rtfs[j].append((time.perf_counter() - start) / max(len(audio) / SAMPLE_RATE, 1e-3))
            start = time.perf_counter()
            stream = pipe(text, generator=torch.Generator().manual_seed(i), mctp_schedule=schedule, stream=True,
                          chunk_frames=2, **options)
            next(stream)
            first_audio[j].append(time.perf_counter() - start)
            stream.close()
    return [{"rtf": statistics.median(r), "first_audio_s": statistics.median(f)} for r, f in zip(rtfs, first_audio)]


def main(argv=None) -> int:
    import zoo

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tts", default="tts-speech-prefix", help="the text-prefix TTS (the baseline of every row)")
    p.add_argument("--ablation", help="the same TTS recipe on the acoustic-only codec (pipeline folder)")
    p.add_argument("--phonemes", help="the same TTS recipe reading espeak-ng phonemes instead of letters "
                                      "(pipeline folder; a row, no paper claim)")
    p.add_argument("--text-stream", help="the same TTS recipe with an aligned text stream, `--text-stream` (DSM-TTS; "
                                          "pipeline folder or built-in name, e.g. tts-speech)")
    p.add_argument("--recognizer", default="asr-speech")
    p.add_argument("--utterances", type=int, default=50)
    p.add_argument("--speed-utterances", type=int, default=10)
    p.add_argument("--schedules", nargs="*", default=["turbo", "balance"],
                   help="MCTP schedules to compare with plain decoding (names or M,m,... lists)")
    p.add_argument("--guidance-scale", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=TEMPERATURE, help="token sampling (the pipelines' default)")
    p.add_argument("--top-k", type=int, default=TOP_K, help="token sampling (the pipelines' default; 0 = off)")
    p.add_argument("--sampling", nargs="*", default=[], type=sampling_setting, metavar="T,K",
                   help="other (temperature, top-k) settings, e.g. 1,0: quality rows of the --text-stream pipeline "
                        "(else --tts) said with each")
    p.add_argument("--compile", action="store_true", help="also time plain decoding and each schedule with "
                   "compile=True (speed rows of the --tts pipeline)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--quick", action="store_true", help="3 utterances, 2 for speed; results to tts.quick.json")
    p.add_argument("--name", default="tts", help="results/<name>.json and its BENCHMARKS.md section (another name "
                                                 "keeps a partial comparison apart from the main table)")
    args = p.parse_args(argv)
    if args.quick:
        args.utterances, args.speed_utterances = min(args.utterances, 3), min(args.speed_utterances, 2)
    torch.set_num_threads(2)
    pipe, recognizer = zoo.load(args.tts), zoo.load(args.recognizer).eval()
    pipe.set_progress_bar_config(disable=True)
    data = SpeechDataset("test", args.utterances, cache_dir=args.cache_dir)
    texts = [data[i]["text"] for i in range(len(data))]
    limits = [2 * len(data[i]["audio"]) / SAMPLE_RATE + 1 for i in range(len(data))]  # a model that never ends stops
    g, n = args.guidance_scale, args.speed_utterances
    options = {"guidance_scale": g, "temperature": args.temperature, "top_k": args.top_k}

    audios = [data[i]["audio"] for i in range(len(data))]
    original = quality_row("espeak-ng originals", audios, texts, recognizer)
    rows = [original]
    plain = quality_row(f"{args.tts} (plain decoding)", say_all(pipe, texts, limits, None, **options), texts,
                        recognizer)  # its speed comes below, timed in turns with the MCTP and compiled rows
    rows.append(plain)
    variants, loaded = {}, {}  # the same recipe with one thing changed: its row (for the claims below); its pipeline
    for what, source in [("acoustic-only codec", args.ablation), ("phoneme input", args.phonemes),
                         ("aligned text stream", args.text_stream)]:
        if source:
            variant = zoo.load(source)
            variant.set_progress_bar_config(disable=True)
            loaded[source] = variant
            said = say_all(variant, texts, limits, None, **options)
            variants[what] = {**quality_row(f"{source} ({what})", said, texts, recognizer),
                              **speed_rows(variant, texts[:n], limits[:n], [(None, options)])[0]}
            rows.append(variants[what])
    codecs = {args.tts: pipe}  # one reconstruction row per distinct codec (weights and codebooks)
    for source, variant in loaded.items():
        if not any(same_weights(variant.codec, c.codec) and variant.lm.config.num_codebooks == c.lm.config.num_codebooks
                   for c in codecs.values()):
            codecs[source] = variant
    rows[1:1] = [reconstruction_row(name, c, audios, texts, recognizer) for name, c in codecs.items()]
    name, main_pipe = (args.text_stream, loaded[args.text_stream]) if args.text_stream else (args.tts, pipe)
    main_row = variants.get("aligned text stream", plain)
    sampled = {}  # (temperature, top_k) -> its row
    for temperature, top_k in args.sampling:
        said = say_all(main_pipe, texts, limits, None, **{**options, "temperature": temperature, "top_k": top_k})
        sampled[temperature, top_k] = quality_row(f"{name} (temperature {temperature:g}, top-k {top_k or 'off'})",
                                                  said, texts, recognizer)
        rows.append(sampled[temperature, top_k])
    schedules = args.schedules if len(pipe.lm.mctp) else []
    mctp_rows = [quality_row(f"{args.tts} (MCTP {schedule})", say_all(pipe, texts, limits, schedule, **options),
                             texts, recognizer) for schedule in schedules]
    rows += mctp_rows
    compiled_schedules = [None, *schedules] if args.compile else []
    compiled = [{"system": f"{args.tts} ({'plain decoding' if schedule is None else f'MCTP {schedule}'}, torch.compile)"}
                for schedule in compiled_schedules]
    timed = [(schedule, options) for schedule in [None, *schedules]]
    timed += [(schedule, {**options, "compile": True}) for schedule in compiled_schedules]
    for row, speed in zip([plain, *mctp_rows, *compiled], speed_rows(pipe, texts[:n], limits[:n], timed)):
        row.update(speed)

    claims = [
        claim("generated speech: recogniser WER within 2x of its WER on the espeak-ng originals",
              plain["wer"] <= 2 * original["wer"],
              f"{100 * plain['wer']:.1f}% vs {100 * original['wer']:.1f}% ({plain['wer'] / max(original['wer'], 1e-9):.1f}x)"),
        claim("generation is faster than real time on this CPU (batch 1, plain decoding)", plain["rtf"] < 1,
              f"RTF {plain['rtf']:.2f}, first audio after {1000 * plain['first_audio_s']:.0f} ms"),
    ]
    if "acoustic-only codec" in variants:
        acoustic = variants["acoustic-only codec"]
        claims.append(claim("semantic codec tokens lower the WER of generated speech (X-Codec)",
                            plain["wer"] < acoustic["wer"],
                            f"{100 * plain['wer']:.1f}% on the semantic codec vs {100 * acoustic['wer']:.1f}% on the "
                            "acoustic-only one"))
    if "aligned text stream" in variants:
        aligned = variants["aligned text stream"]
        claims.append(claim("an aligned text stream lowers the WER of generated speech (DSM-TTS against a text prefix)",
                            aligned["wer"] < plain["wer"],
                            f"{100 * aligned['wer']:.1f}% with the text stream vs {100 * plain['wer']:.1f}% with the "
                            "prefix alone"))
        claims.append(claim("with the aligned text stream: WER within 2x of the originals'",
                            aligned["wer"] <= 2 * original["wer"],
                            f"{100 * aligned['wer']:.1f}% vs {100 * original['wer']:.1f}%"))
    if (1.0, 0) in sampled and (args.temperature, args.top_k) != (1.0, 0):
        whole = sampled[1.0, 0]
        claims.append(claim(f"sampling at temperature {args.temperature:g}, top-k {args.top_k or 'off'} (Moshi's "
                            "0.8, 250) lowers the WER against sampling the whole distribution",
                            main_row["wer"] < whole["wer"],
                            f"{100 * main_row['wer']:.1f}% vs {100 * whole['wer']:.1f}%"))
    for row, schedule in zip(mctp_rows, schedules):
        speedup = plain["rtf"] / row["rtf"]
        claims.append(claim(f"MCTP {schedule}: several-fold faster than plain decoding (VITA-Audio: 3-5x at 7B)",
                            speedup >= 2, f"{speedup:.2f}x (RTF {row['rtf']:.2f} vs {plain['rtf']:.2f})"))
        # "much lower" (VITA-Audio): at least 20% earlier, so timing noise of a few percent does not count
        claims.append(claim(f"MCTP {schedule}: much lower time to first audio (at least 20% earlier)",
                            row["first_audio_s"] <= 0.8 * plain["first_audio_s"],
                            f"{1000 * row['first_audio_s']:.1f} ms vs {1000 * plain['first_audio_s']:.1f} ms"))
        claims.append(claim(f"MCTP {schedule}: small quality cost (WER within 1.2x of plain decoding)",
                            row["wer"] <= 1.2 * plain["wer"], f"{100 * row['wer']:.1f}% vs {100 * plain['wer']:.1f}%"))
    if compiled:
        speedup = plain["rtf"] / compiled[0]["rtf"]
        claims.append(claim("compiled decode steps make plain decoding faster (RTF at least 1.2x lower, batch 1)",
                            speedup >= 1.2, f"{speedup:.2f}x (RTF {compiled[0]['rtf']:.2f} vs {plain['rtf']:.2f}), first "
                            f"audio after {1000 * compiled[0]['first_audio_s']:.0f} ms vs "
                            f"{1000 * plain['first_audio_s']:.0f} ms"))
        rows += compiled
    command = " ".join(["python benchmarks/tts.py", *(sys.argv[1:] if argv is None else argv)])
    path = write_results(args.name, command, machine_description(2), rows, claims, quick=args.quick,
                         columns=["system", "wer", "cer", "dnsmos_ovrl", "mean_seconds", "rtf", "first_audio_s"],
                         notes=f"{len(texts)} test transcripts, one seed each; speed: medians over "
                               f"{args.speed_utterances} of them, batch 1, guidance scale {g:g}; sampling: temperature "
                               f"{args.temperature:g}, top-k {args.top_k or 'off'}.")
    report(rows, claims, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
