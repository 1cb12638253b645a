"""The AR engine on a GPU, in one go: correctness in bf16 and speed of eager vs compiled decoding.

Written for a lent GPU machine (one short run): a LlamaGen-B-sized class-conditional model (111M,
vocab 16384, 16x16 grid, random weights), 256 tokens per sample.

1. cached == recomputed: greedy tokens of the KV-cache loop against full recomputation (float32),
   and the agreement rate in bfloat16 (rounding may flip near-ties).
2. tokens/s of eager decoding and of `compile=True` (torch.compile, mode="reduce-overhead": CUDA
   graphs over fixed-shape cache reads), bf16, at batch 1, 16 and 16 with CFG (32 rows).
3. speech frames: a Moshi-sized temporal + depth transformer (`SpeechLM`, random weights: backbone 1024
   wide x 8 layers, depth transformer 512 x 4 over 8 codebooks of 2048, 4 MCTP modules), batch 1, 100
   frames: compiled == eager greedy codes (float32), and frames/s eager against compiled (CUDA graphs for
   the backbone's and the depth transformer's steps) in bf16, plain decoding and MCTP [1, 4].

    python benchmarks/gpu_engine.py [--quick] [--device cuda] [--out DIR]

Writes <out>/gpu_engine.json (default benchmarks/results/), in the format of DESIGN.md section 7.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import RESULTS_DIR, claim, report, write_results
from zoo.ar import ARTransformer, generate
from zoo.ar.speech import FrameStep, SpeechLM


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny model and few tokens (a smoke test, CPU ok)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.quick:
        model = ARTransformer(vocab_size=256, hidden_size=64, num_layers=2, num_heads=4, num_classes=10,
                              grid_size=(4, 4))
        num_tokens, batches = 16, (1, 4)
    else:
        model = ARTransformer.llamagen("B", zero_init_head=False)
        num_tokens, batches = 256, (1, 16)
    model = model.to(device).eval()
    labels = {b: torch.arange(b, device=device) % 10 for b in (*batches, 2 * batches[-1])}

    # 1. correctness
    exact = {}
    for dtype in (torch.float32, torch.bfloat16):
        model.to(dtype)
        cached = generate(model, num_tokens, class_labels=labels[batches[-1]], temperature=0, guidance_scale=2.0)
        full = generate(model, num_tokens, class_labels=labels[batches[-1]], temperature=0, guidance_scale=2.0,
                        use_cache=False)
        exact[dtype] = (cached.tokens == full.tokens).float().mean().item()

    # 2. speed, bf16
    rows = []
    for b in batches:
        for cfg in ((1.0, 2.0) if b == batches[-1] else (1.0,)):
            for compiled in (False, True):
                run = lambda: generate(model, num_tokens, class_labels=labels[b], guidance_scale=cfg,  # noqa: E731
                                       compile=compiled, generator=torch.Generator(device).manual_seed(0))
                first = timed(run, device)  # includes compilation / CUDA-graph capture
                best = min(timed(run, device) for _ in range(3))
                rows.append({"system": f"zoo {'compiled (CUDA graphs)' if compiled else 'eager'}"
                                       + (" + CFG" if cfg != 1.0 else ""),
                             "batch": b, "model_rows": b * (2 if cfg != 1.0 else 1), "dtype": "bfloat16",
                             "tokens_per_s": b * num_tokens / best, "ms_per_step": 1e3 * best / num_tokens,
                             "first_call_s": first})
    speech_rows, speech_exact = speech_frames(device, args.quick)
    rows += speech_rows
    speed = {(r["system"], r["batch"]): r["tokens_per_s"] for r in rows if "tokens_per_s" in r}
    b1 = speed[("zoo compiled (CUDA graphs)", 1)] / speed[("zoo eager", 1)]
    frames = {r["system"]: r["frames_per_s"] for r in speech_rows}
    speech_gain = frames["speech frames compiled, plain"] / frames["speech frames eager, plain"]
    claims = [
        claim("cached decoding gives the tokens of full recomputation (float32, greedy)", exact[torch.float32] == 1.0,
              f"{100 * exact[torch.float32]:.1f}% of tokens equal"),
        claim("bf16 cached and recomputed greedy tokens mostly agree (rounding flips near-ties)",
              exact[torch.bfloat16] >= 0.9, f"{100 * exact[torch.bfloat16]:.1f}% equal"),
        claim("CUDA graphs speed up batch-1 decoding", b1 > 1, f"{b1:.2f}x over eager"),
        claim("compiled speech frames give the eager codes (float32, greedy, plain and MCTP [1, 4])", speech_exact == 1.0,
              f"{100 * speech_exact:.1f}% of codes equal"),
        claim("compiled backbone and depth steps speed up speech frames (batch 1, plain decoding)", speech_gain > 1,
              f"{speech_gain:.2f}x over eager"),
    ]
    name = "gpu_engine" if device.type == "cuda" else "gpu_engine_on_cpu"
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke run)"
    command = "python benchmarks/gpu_engine.py" + (" --quick" if args.quick else "")
    path = write_results(name, command, f"{machine}, torch {torch.__version__}", rows, claims,
                         columns=["system", "batch", "model_rows", "tokens_per_s", "ms_per_step", "frames_per_s",
                                  "first_call_s"],
                         quick=args.quick or device.type != "cuda", results_dir=args.out)
    report(rows, claims, path)
    return 0


def speech_frames(device, quick: bool) -> tuple[list[dict], float]:
    """Part 3: -> (speed rows, the share of greedy codes equal between eager and compiled decoding)."""
    torch.manual_seed(0)
    if quick:
        lm = SpeechLM(text_vocab_size=31, max_text_tokens=8, num_codebooks=3, codebook_size=32, max_frames=24,
                      hidden_size=64, num_layers=2, num_heads=4, depth_hidden_size=32, depth_layers=1, depth_heads=2,
                      num_mctp_modules=4)
        num_frames = 12
    else:
        lm = SpeechLM(text_vocab_size=31, max_text_tokens=32, num_codebooks=8, codebook_size=2048, max_frames=128,
                      hidden_size=1024, num_layers=8, num_heads=16, depth_hidden_size=512, depth_layers=4,
                      depth_heads=8, num_mctp_modules=4)
        num_frames = 100
    lm = lm.to(device).eval()
    text = torch.randint(1, 31, (1, lm.config.max_text_tokens), device=device)
    mask = torch.ones_like(text, dtype=torch.bool)

    def run(schedule, compiled, **sampling):
        step = FrameStep(lm, schedule, compile=compiled)
        return generate(lm.backbone, num_frames * lm.num_streams, prefix_ids=text, prefix_mask=mask, step=step,
                        compile=compiled, **sampling).tokens

    equal = []
    for schedule in (None, [1, 4]):
        lm.float()
        eager, compiled = (run(schedule, c, temperature=0) for c in (False, True))
        equal.append((eager == compiled).float().mean().item())
    lm.to(torch.bfloat16)
    rows = []
    for schedule in (None, [1, 4]):
        for compiled in (False, True):
            def sample(schedule=schedule, compiled=compiled):
                return run(schedule, compiled, generator=torch.Generator(device).manual_seed(0))

            first = timed(sample, device)
            best = min(timed(sample, device) for _ in range(3))
            rows.append({"system": f"speech frames {'compiled' if compiled else 'eager'}, "
                                   f"{'plain' if schedule is None else 'MCTP [1, 4]'}", "batch": 1, "model_rows": 1,
                         "frames_per_s": num_frames / best,
                         "first_call_s": first})
    return rows, sum(equal) / len(equal)


if __name__ == "__main__":
    sys.exit(main())
