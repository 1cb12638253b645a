"""`Linear`: nn.Linear whose CPU inference matmul takes the fastest of its float32 kernels, as measured.

The few-row products of AR decoding are memory-bound, and which float32 kernel reads the weights
fastest depends on the CPU and on the shape, so zoo measures instead of guessing. The candidates are
MKL's sgemm (what F.linear calls on CPU), oneDNN's linear (the kernel inductor's CPU backend uses
for frozen weights) and, in code that torch.compile traces, the product written as one multiply-sum
(`reduce_linear`) that inductor turns into its own vectorised loop: a GEMV per row that streams the
weight, with no library call. On 2-core machines (benchmarks/ar_engine.py): on a
Xeon MKL was the faster library (a 1.8 ms vs 3.1 ms compiled batch-1 decode step); on one AMD EPYC MKL
reached a third of oneDNN's speed; on another (Zen 1), reading the weights from memory, MKL was
1.2-1.5x faster for a 768 x 256 weight at one or two rows and oneDNN 2x faster for a 16384 x 384 output
head; there, in one-off probes, inductor's loop read 68 MB of decode weights at 15.5 GB/s against 7-8 GB/s
for either library at one row (it reads the weight once per row: for up to `REDUCE_ROWS` rows). No rule
by vendor holds for all.

So the first time a weight shape meets a row count (rounded up to a power of two, at most
`MEASURED_ROWS`; weights of at least `MEASURED_WEIGHT` elements), the kernels are timed on random
tensors of that shape, sweeping over copies of the weight that add up to `SWEEP_BYTES` (32 MB, about the
weights of a small model), so the weights come from where a decode step reads them: from memory on a CPU
with a small last-level cache, from the cache on one that holds them (a Xeon's 260 MB L3); with many
rows, a sweep ends at `SWEEP_FLOPS` of arithmetic (compute-bound: where the weights come from hardly
matters). The choice is kept for the process, apart for eager and compiled code (only compiled code
can run the generated loop, which is timed through one small compiled probe with dynamic shapes,
compiled once per process). MKL is the default; oneDNN, then the generated loop, replaces the kernel
chosen so far only when its time is under `MIN_GAIN` x that kernel's, so near-ties keep PyTorch's default
and the choice does not flip from run to run. Larger products (prefill, evaluation) and tiny weights use
F.linear. `zoo.nn.kernel_table()` lists the choices made; the environment variable ZOO_CPU_LINEAR=mkl|onednn
forces one library kernel for the process, compiled code included (`auto`, or unset, measures) and
`zoo.nn.cpu_kernel(mode)` does so within a block. Same weights, same layout, same results up to float
rounding; training, GPUs and other dtypes always use F.linear. Under torch.compile the choice is made
while tracing (a constant of the graph); the oneDNN call is a library op, opaque to inductor, which
fuses everything around it.
"""

from __future__ import annotations

import os
import statistics
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

_ONEDNN_LINEAR = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
HAS_ONEDNN = _ONEDNN_LINEAR is not None and torch.backends.mkldnn.is_available()  # else no "onednn" kernel
MODES = ("auto", "mkl", "onednn")  # measure per shape, or one library kernel everywhere

MEASURED_ROWS = 128  # products with more rows than this are compute-bound: F.linear, unmeasured
MEASURED_WEIGHT = 1 << 16  # weights with fewer elements (256 KB) are bound by call overhead: F.linear
MIN_GAIN = 0.9  # a kernel replaces the one chosen so far (MKL first) only under MIN_GAIN x that one's time
# the generated loop reads the weight once per row: products of more rows never take it (one-off probes of
# benchmarks/ar_engine.py's compiled decode step on an AMD EPYC: 8.5 / 11.8 / 15.4 ms a step at 1 / 2 / 4
# rows against 11.3 / 14.7 / 17.5 with the libraries)
REDUCE_ROWS = 4
SWEEP_BYTES = 32 << 20  # weights read per timed sweep: about a small model's (cached where it would be)
SWEEP_FLOPS = 512e6  # ... or fewer, when this much arithmetic comes first: more than ~32 rows, compute-bound
_REPEATS = 3  # timed sweeps per kernel and shape (median), after one warm-up sweep


def _kernel_mode() -> str:
    """'auto' (measure per shape), 'mkl' or 'onednn': the ZOO_CPU_LINEAR setting, checked."""
    choice = os.environ.get("ZOO_CPU_LINEAR", "").lower() or "auto"
    if choice not in MODES:
        raise ValueError(f"ZOO_CPU_LINEAR={choice!r}; set it to 'mkl', 'onednn' or 'auto', or unset it.")
    return "mkl" if choice == "onednn" and not HAS_ONEDNN else choice


_MODE = _kernel_mode()
# (rows, out, in, bias, compiled) -> "mkl", "onednn" or "reduce"
_CHOICES: dict[tuple[int, int, int, bool, bool], str] = {}


def _onednn_cpu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")


# A plain library op (not torch.library.custom_op, whose Python wrapper costs 40 us a call, more than
# the matmul of a small layer): inductor calls it as an extern kernel and fuses what lies between.
_LIBRARY = torch.library.Library("zoo", "FRAGMENT")
_LIBRARY.define("onednn_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor")
_LIBRARY.impl("onednn_linear", _onednn_cpu, "CPU")


@torch.library.register_fake("zoo::onednn_linear")
def _(x, weight, bias):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def reduce_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear written as one multiply-sum, for code that torch.compile traces: inductor fuses it into a
    vectorised loop that streams the weight once per row of x (a generated GEMV). Run eagerly it would
    build a [..., out, in] tensor; `linear` calls it only while compiling. (Summing [out, in, rows] over
    `in` instead would read the weight once for all rows, but inductor fused that loop with the KV-cache
    write after it into a kernel 8x slower than the libraries' at 2 and 4 rows.)

    >>> x, w = torch.randn(2, 3, 8), torch.randn(5, 8)
    >>> torch.allclose(reduce_linear(x, w), torch.nn.functional.linear(x, w), atol=1e-5)
    True
    """
    y = (x.unsqueeze(-2) * weight).sum(-1)  # [..., 1, in] * [out, in] summed over in -> [..., out]
    return y if bias is None else y + bias


_REDUCE_PROBE = None


def _time_reduce(x: torch.Tensor, weights: torch.Tensor) -> float:
    """Seconds per weight of the generated loop over `weights` [copies, out, in]: one compiled call of
    `reduce_linear` reads them all, as [copies, 1, out, in] against x [rows, in] (a per-weight call would
    time dynamo's guards, which a compiled graph does not pay)."""
    global _REDUCE_PROBE
    if _REDUCE_PROBE is None:  # dynamic shapes: one compilation serves every shape (a second for one row)
        _REDUCE_PROBE = torch.compile(reduce_linear, dynamic=True)
    stacked = weights[:, None]  # -> outputs [copies, rows, out]
    return _median_seconds([lambda: _REDUCE_PROBE(x, stacked)]) / len(weights)


def _median_seconds(calls) -> float:
    """Median seconds per call of one sweep over `calls`, after a warm-up sweep."""
    for call in calls:
        call()
    sweeps = []
    for _ in range(_REPEATS):
        start = time.perf_counter()
        for call in calls:
            call()
        sweeps.append((time.perf_counter() - start) / len(calls))
    return statistics.median(sweeps)


def _sweep_copies(rows: int, out_features: int, in_features: int) -> int:
    """How many copies of a float32 [out, in] weight one timed sweep reads: `SWEEP_BYTES` of them, or fewer
    when that much arithmetic (`SWEEP_FLOPS`) comes first; 2 to 64.

    >>> _sweep_copies(1, 768, 256), _sweep_copies(128, 768, 256)
    (42, 10)
    """
    weight_elements = out_features * in_features
    copies = min(SWEEP_BYTES // (4 * weight_elements), int(SWEEP_FLOPS // (2 * rows * weight_elements)))
    return min(max(2, copies), 64)  # at least two; few for tiny weights


def time_kernels(rows: int, out_features: int, in_features: int, bias: bool = False,
                 compiled: bool = False) -> dict[str, float]:
    """Seconds of one float32 CPU product [rows, in] x [out, in]^T with each kernel ("mkl" is F.linear,
    "onednn" oneDNN's linear where PyTorch has it, and with compiled=True for at most `REDUCE_ROWS` rows
    "reduce", inductor's loop from `reduce_linear`), as in decoding: each sweep reads copies of the weight
    that add up to `SWEEP_BYTES`, so they come from memory unless the last-level cache holds that much.
    Past ~32 rows a sweep stops at `SWEEP_FLOPS` of arithmetic instead: the product is compute-bound (on a
    2-core CPU doing ~50 GFLOP/s and reading ~10 GB/s, the weight read is under a fifth of its time from 64
    rows), and a full sweep would take a second. The first compiled=True call compiles the loop's probe
    (seconds).

    >>> sorted(time_kernels(2, 64, 32))
    ['mkl', 'onednn']
    """
    if min(rows, out_features, in_features) < 1:
        raise ValueError(f"rows, out_features and in_features must be >= 1, got {rows}, {out_features}, "
                         f"{in_features}.")
    copies = _sweep_copies(rows, out_features, in_features)
    g = torch.Generator().manual_seed(0)  # a local stream: timing leaves the caller's random state alone
    with torch.no_grad():
        x = torch.randn(rows, in_features, generator=g)
        # copies of one random weight: a copy costs a memcpy, a fresh draw takes 10x as long (most of the timing)
        weights = torch.randn(out_features, in_features, generator=g).repeat(copies, 1, 1)
        b = torch.randn(out_features, generator=g) if bias else None
        seconds = {"mkl": _median_seconds([lambda w=w: F.linear(x, w, b) for w in weights])}
        if HAS_ONEDNN:
            seconds["onednn"] = _median_seconds([lambda w=w: _onednn_cpu(x, w, b) for w in weights])
        if compiled and rows <= REDUCE_ROWS:  # the bias add is one more pass over the output, left out
            seconds["reduce"] = _time_reduce(x, weights)
    return seconds


@torch.compiler.assume_constant_result
def _measured_kernel(rows: int, out_features: int, in_features: int, bias: bool, compiled: bool) -> str:
    """The kept choice for one shape, measured on first use (also while torch.compile traces: a constant)."""
    key = (rows, out_features, in_features, bias, compiled)
    if key not in _CHOICES:
        seconds = time_kernels(*key)
        chosen = "mkl"
        for kernel in ("onednn", "reduce"):
            if kernel in seconds and seconds[kernel] < MIN_GAIN * seconds[chosen]:
                chosen = kernel
        _CHOICES[key] = chosen
    return _CHOICES[key]


def kernel_table() -> dict[tuple[int, int, int, bool, bool], str]:
    """The kernels chosen so far in this process: (rows, out, in, bias, compiled) -> "mkl", "onednn" or
    "reduce" (compiled code only).

    >>> with torch.no_grad():
    ...     y = linear(torch.randn(2, 512), torch.randn(512, 512))  # measured on first use
    >>> kernel_table()[(2, 512, 512, False, False)] in ("mkl", "onednn")
    True
    """
    return dict(_CHOICES)


@contextmanager
def cpu_kernel(mode: str):
    """Within the block, float32 CPU inference products use `mode`: "mkl" (F.linear), "onednn", or "auto"
    (the measured choice), as ZOO_CPU_LINEAR does for a whole process; for comparisons such as
    benchmarks/ar_engine.py. torch.compile traces the mode in force at its call (a change recompiles).

    >>> with cpu_kernel("mkl"):
    ...     y = linear(torch.randn(2, 8), torch.randn(4, 8))
    """
    global _MODE
    if mode not in MODES:
        raise ValueError(f"mode must be 'auto', 'mkl' or 'onednn', got {mode!r}.")
    if mode == "onednn" and not HAS_ONEDNN:
        raise RuntimeError("this PyTorch build has no oneDNN linear; use mode='mkl' or 'auto'.")
    before, _MODE = _MODE, mode
    try:
        yield
    finally:
        _MODE = before


def _rows_bucket(rows: int) -> int:
    return 1 << max(rows - 1, 0).bit_length()


def _kernel(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> str:
    if _MODE != "auto":
        return _MODE
    rows = x.numel() // x.shape[-1]
    if rows > MEASURED_ROWS or weight.numel() < MEASURED_WEIGHT:
        return "mkl"
    return _measured_kernel(_rows_bucket(rows), weight.shape[0], weight.shape[1], bias is not None,
                            torch.compiler.is_compiling())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, or the kernel measured faster (float32 CPU inference only; see the module's docstring)."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_grad_enabled() or x.numel() == 0:
        return F.linear(x, weight, bias)
    kernel = _kernel(x, weight, bias)
    if kernel == "reduce":
        return reduce_linear(x, weight, bias)
    if kernel == "onednn":
        if torch.compiler.is_compiling():
            return torch.ops.zoo.onednn_linear(x, weight, bias)
        return _onednn_cpu(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """Drop-in nn.Linear (same parameters and state-dict keys) using `linear` above."""

    def forward(self, x):
        return linear(x, self.weight, self.bias)
