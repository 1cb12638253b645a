"""AR engine speed: zoo's decode loop vs HF `generate` (static cache) vs a naive no-cache loop.

The same ~23M-parameter Llama weights (vocab 16384, hidden 384, 6 layers, 6 heads, SwiGLU 1024, the
model of shared/reference B6) run in all three, fp32 on the CPU, sampling at temperature 1 with no
top-k/top-p, a 16-token prompt and 256 new tokens. Systems are interleaved and each reports its best
of `--repeat` runs, so a noisy machine affects them alike. Also measured in the same run: the read
bandwidth of the machine, and the share of the batch-1 memory-bandwidth bound that zoo reaches.

    python benchmarks/ar_engine.py            # full run: results/ar_engine.json + BENCHMARKS.md
    python benchmarks/ar_engine.py --quick    # < 1 minute smoke run: results/ar_engine.quick.json
    zoo bench ar-engine --quick               # the same, through the CLI
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from benchmarks.common import claim, machine_description, report, write_results
from weights_registry.converters import hf_llama_to_zoo
from zoo.ar import generate
from zoo.nn import cpu_kernel

VOCAB, HIDDEN, FFN, LAYERS, HEADS, PROMPT = 16384, 384, 1024, 6, 6, 16


def build_models():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=1024,
                         tie_word_embeddings=False, bos_token_id=0, eos_token_id=None, pad_token_id=0)
    hf = LlamaForCausalLM(config).eval()
    return hf, hf_llama_to_zoo(hf, num_prefix_tokens=PROMPT)


def read_bandwidth_gb_s(num_bytes: int, repeat: int = 5) -> float:
    """Read bandwidth over a buffer of `num_bytes` (what one decode step reads): the best of `repeat` full
    reductions. Where the last-level cache holds the buffer, this is cache bandwidth, as for the weights."""
    x = torch.ones(num_bytes // 4)
    x.sum()
    best = min(_timed(x.sum) for _ in range(repeat))
    return x.numel() * 4 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def decode_bytes_per_step(model, context: int) -> int:
    """Bytes a batch-1 decode step must read: every weight but the embedding table (one row of it),
    plus the KV cache at the average context length."""
    weights = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("token_embedding"))
    kv = 2 * LAYERS * HIDDEN * context
    return 4 * (weights + HIDDEN + kv)


def runners(hf, zoo_model, new_tokens):
    def zoo_run(ids, cfg=False, compile=False, kernel="auto"):
        uncond = torch.zeros_like(ids) if cfg else None
        with cpu_kernel(kernel):
            return generate(zoo_model, new_tokens, prefix_ids=ids, uncond_prefix_ids=uncond, compile=compile,
                            guidance_scale=2.0 if cfg else 1.0, generator=torch.Generator().manual_seed(0))

    def naive_run(ids):
        return generate(zoo_model, new_tokens, prefix_ids=ids, use_cache=False)

    @torch.inference_mode()
    def hf_run(ids):
        return hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                           cache_implementation="static")

    return zoo_run, naive_run, hf_run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run for smoke tests (< 1 minute)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per system (best is kept)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    new_tokens = 32 if args.quick else 256
    batch = 4 if args.quick else 16
    repeat = args.repeat or (1 if args.quick else 4)

    hf, zoo_model = build_models()
    zoo_run, naive_run, hf_run = runners(hf, zoo_model, new_tokens)
    prompts = {b: torch.randint(1, VOCAB, (b, PROMPT), generator=torch.Generator().manual_seed(b))
               for b in (1, batch, 2 * batch)}
    # (row label, batch of samples, rows the model runs, function)
    cases = [
        ("zoo", 1, 1, lambda: zoo_run(prompts[1])),
        ("zoo_compiled", 1, 1, lambda: zoo_run(prompts[1], compile=True)),
        ("hf_static", 1, 1, lambda: hf_run(prompts[1])),
        ("zoo", batch, batch, lambda: zoo_run(prompts[batch])),
        ("zoo_compiled", batch, batch, lambda: zoo_run(prompts[batch], compile=True)),
        ("hf_static", batch, batch, lambda: hf_run(prompts[batch])),
        ("zoo_cfg", batch, 2 * batch, lambda: zoo_run(prompts[batch], cfg=True)),
        ("hf_static", 2 * batch, 2 * batch, lambda: hf_run(prompts[2 * batch])),
    ]
    for kernel in ("mkl", "onednn"):  # the measured kernel choice (zoo/nn/linear.py) against each kernel alone
        cases += [(f"zoo_{kernel}", b, b, lambda b=b, kernel=kernel: zoo_run(prompts[b], kernel=kernel))
                  for b in (1, batch)]
        # compiled too, where the choice also has inductor's generated loop (traced again under each mode)
        cases.append((f"zoo_compiled_{kernel}", 1, 1,
                      lambda kernel=kernel: zoo_run(prompts[1], compile=True, kernel=kernel)))
    naive_cases = [("naive", 1, 1, lambda: naive_run(prompts[1])), ("naive", batch, batch, lambda: naive_run(prompts[batch]))]
    warmup_s = {}
    for name, b, rows, fn in cases:  # warm-up: allocations, lazy init, and torch.compile's compilation
        warmup_s[(name, b)] = _timed(fn)
    # batch-1 runs are short and the most sensitive to what else the machine runs (they stream the weights
    # through a shared cache): they get 3x the tries, every system alike
    best: dict[tuple, float] = {}
    for i in range(3 * repeat):
        for name, b, rows, fn in cases:
            if b == 1 or i < repeat:
                key = (name, b, rows)
                best[key] = min(best.get(key, float("inf")), _timed(fn))
    for name, b, rows, fn in naive_cases:  # minutes at full size: one run each
        best[(name, b, rows)] = _timed(fn)
    step_bytes = decode_bytes_per_step(zoo_model, PROMPT + new_tokens // 2)
    bandwidth = read_bandwidth_gb_s(step_bytes)

    labels = {"zoo": "zoo engine (static KV cache)", "zoo_cfg": "zoo engine, CFG rows batched",
              "zoo_compiled": "zoo engine + torch.compile",
              "zoo_mkl": "zoo engine, MKL's sgemm only", "zoo_onednn": "zoo engine, oneDNN's linear only",
              "zoo_compiled_mkl": "zoo engine + torch.compile, MKL's sgemm only",
              "zoo_compiled_onednn": "zoo engine + torch.compile, oneDNN's linear only",
              "hf_static": "HF generate, static cache", "naive": "naive loop (no KV cache)"}
    rows = []
    for (name, b, r), seconds in best.items():
        rows.append({"system": labels[name], "batch": b, "model_rows": r, "new_tokens": new_tokens,
                     "tokens_per_s": b * new_tokens / seconds, "ms_per_step": 1e3 * seconds / new_tokens})
    tps = {(k[0], k[1]): k[1] * new_tokens / s for k, s in best.items()}
    step_ms = {(k[0], k[1]): 1e3 * s / new_tokens for k, s in best.items()}
    def zoo_best(b):  # the faster of eager and compiled decoding
        name = max(("zoo", "zoo_compiled"), key=lambda n: tps[(n, b)])
        return tps[(name, b)], labels[name]

    bound = bandwidth * 1e9 / step_bytes
    fraction = zoo_best(1)[0] / bound
    rows.append({"system": "memory-bandwidth bound, batch 1", "batch": 1, "model_rows": 1, "new_tokens": new_tokens,
                 "tokens_per_s": bound, "ms_per_step": 1e3 / bound, "read_bandwidth_gb_per_s": bandwidth,
                 "zoo_fraction_of_bound": fraction})

    def versus(b, other, target):
        (zoo_tps, zoo_label), other_tps = zoo_best(b), tps[other]
        ratio = zoo_tps / other_tps
        return ratio >= target, f"{ratio:.2f}x ({zoo_tps:.1f} vs {other_tps:.1f} tok/s; {zoo_label})"

    def kernel_choice(b, zoo="zoo"):  # zoo with the measured kernels against the faster single library kernel
        faster, slower = sorted((f"{zoo}_mkl", f"{zoo}_onednn"), key=lambda n: step_ms[(n, b)])
        ratio = step_ms[(faster, b)] / step_ms[(zoo, b)]
        what = "compiled decoding's" if zoo == "zoo_compiled" else "the"
        return claim(f"{what} measured CPU kernel choice is no slower than the faster single kernel at batch {b} "
                     f"(within 10%)", ratio >= 0.9, f"{step_ms[(zoo, b)]:.2f} vs {step_ms[(faster, b)]:.2f} ms/step "
                     f"({labels[faster]}; {step_ms[(slower, b)]:.2f} with the other)")

    cfg_vs_hf = step_ms[("hf_static", 2 * batch)] / step_ms[("zoo_cfg", batch)]
    claims = [
        claim("zoo >= 2x HF static-cache generate at batch 1", *versus(1, ("hf_static", 1), 2)),
        claim(f"zoo >= 1.5x HF static-cache generate at batch {batch}", *versus(batch, ("hf_static", batch), 1.5)),
        claim(f"zoo >= 10x the naive no-cache loop at batch {batch}", *versus(batch, ("naive", batch), 10)),
        claim(f"zoo with CFG at batch {batch} ({2 * batch} rows) steps no slower than HF at batch {2 * batch}",
              cfg_vs_hf >= 1, f"{step_ms[('zoo_cfg', batch)]:.1f} vs {step_ms[('hf_static', 2 * batch)]:.1f} ms/step "
              f"({cfg_vs_hf:.2f}x)"),
        kernel_choice(1),
        kernel_choice(batch),
        kernel_choice(1, "zoo_compiled"),
    ]
    command = "python benchmarks/ar_engine.py" + (" --quick" if args.quick else "")
    if args.repeat or args.threads != 2:
        command += f" --repeat {repeat} --threads {args.threads}"
    machine = machine_description(args.threads) + f", load average {os.getloadavg()[0]:.2f} at the end"
    path = write_results("ar_engine", command, machine, rows, claims, quick=args.quick,
                         columns=["system", "batch", "model_rows", "tokens_per_s", "ms_per_step"],
                         notes=f"zoo reaches {100 * fraction:.0f}% of the batch-1 memory-bandwidth bound "
                               f"({bound:.0f} tok/s at {bandwidth:.1f} GB/s read bandwidth). torch.compile's first "
                               f"call (compilation) took {warmup_s[('zoo_compiled', 1)]:.0f} s at batch 1, not counted. "
                               f"Best of {repeat} interleaved runs per system ({3 * repeat} at batch 1; naive: one run); fp32, "
                               f"{sum(p.numel() for p in zoo_model.parameters()) / 1e6:.1f}M parameters, "
                               f"prompt {PROMPT}, {new_tokens} new tokens.")
    report(rows, claims, path)
    if args.quick:
        print("quick run: 32 tokens and batch 4, a smoke test; the targets are judged on the full run "
              "(python benchmarks/ar_engine.py, see BENCHMARKS.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
