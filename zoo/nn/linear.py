"""`Linear`: nn.Linear whose CPU inference matmul takes the faster of two float32 kernels, as measured.

The few-row products of AR decoding are memory-bound, and which float32 kernel reads the weights
fastest depends on the CPU and on the shape, so zoo measures instead of guessing. The candidates are
MKL's sgemm (what F.linear calls on CPU) and oneDNN's linear (the kernel inductor's CPU backend uses
for frozen weights). On 2-core machines (benchmarks/ar_engine.py): on a Xeon MKL was the faster (a
1.8 ms vs 3.1 ms compiled batch-1 decode step); on one AMD EPYC MKL reached a third of oneDNN's speed;
on another (Zen 1), reading the weights from memory, MKL was 1.2-1.5x faster for a 768 x 256 weight at
one or two rows and oneDNN 2x faster for a 16384 x 384 output head. No rule by vendor holds for all.

So the first time a weight shape meets a row count (rounded up to a power of two, at most
`MEASURED_ROWS`; weights of at least `MEASURED_WEIGHT` elements), both kernels are timed on random
tensors of that shape, sweeping over copies of the weight that add up to `SWEEP_BYTES` (32 MB, about the
weights of a small model), so the weights come from where a decode step reads them: from memory on a CPU
with a small last-level cache, from the cache on one that holds them (a Xeon's 260 MB L3); with many
rows, a sweep ends at `SWEEP_FLOPS` of arithmetic (compute-bound: where the weights come from hardly
matters). The choice is kept for the process. oneDNN is taken only when its time is under `MIN_GAIN` x
MKL's, so near-ties keep PyTorch's default and the choice does not flip from run to run. Larger products
(prefill, evaluation) and tiny weights use F.linear. `zoo.nn.kernel_table()` lists the choices made; the
environment variable ZOO_CPU_LINEAR=mkl|onednn forces one kernel for the process (`auto`, or unset,
measures) and `zoo.nn.cpu_kernel(mode)` does so within a block. Same weights, same layout, same results
up to float rounding; training, GPUs and other dtypes always use F.linear. Under torch.compile the
choice is made while tracing (a constant of the graph) and the oneDNN call is a library op, opaque to
inductor, which fuses everything around it.
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
HAS_ONEDNN = _ONEDNN_LINEAR is not None and torch.backends.mkldnn.is_available()  # else F.linear only
MODES = ("auto", "mkl", "onednn")  # measure per shape, or one kernel everywhere

MEASURED_ROWS = 128  # products with more rows than this are compute-bound: F.linear, unmeasured
MEASURED_WEIGHT = 1 << 16  # weights with fewer elements (256 KB) are bound by call overhead: F.linear
MIN_GAIN = 0.9  # oneDNN is chosen when its time is under MIN_GAIN x MKL's
SWEEP_BYTES = 32 << 20  # weights read per timed sweep: about a small model's (cached where it would be)
SWEEP_FLOPS = 512e6  # ... or fewer, when this much arithmetic comes first: more than ~32 rows, compute-bound
_REPEATS = 3  # timed sweeps per kernel and shape (median), after one warm-up sweep


def _kernel_mode() -> str:
    """'auto' (measure per shape), 'mkl' or 'onednn': the ZOO_CPU_LINEAR setting, checked."""
    choice = os.environ.get("ZOO_CPU_LINEAR", "").lower() or "auto"
    if choice not in MODES:
        raise ValueError(f"ZOO_CPU_LINEAR={choice!r}; set it to 'mkl', 'onednn' or 'auto', or unset it.")
    return choice if HAS_ONEDNN else "mkl"


_MODE = _kernel_mode()
_CHOICES: dict[tuple[int, int, int, bool], bool] = {}  # (rows, out, in, bias) -> oneDNN is faster


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


def time_kernels(rows: int, out_features: int, in_features: int, bias: bool = False) -> dict[str, float]:
    """Seconds of one float32 CPU product [rows, in] x [out, in]^T with each kernel ("mkl" is F.linear,
    "onednn" oneDNN's linear), as in decoding: each sweep reads copies of the weight that add up to
    `SWEEP_BYTES`, so they come from memory unless the last-level cache holds that much. Past ~32 rows a
    sweep stops at `SWEEP_FLOPS` of arithmetic instead: the product is compute-bound (on a 2-core CPU doing
    ~50 GFLOP/s and reading ~10 GB/s, the weight read is under a fifth of its time from 64 rows), and a full
    sweep would take a second.

    >>> sorted(time_kernels(2, 64, 32))
    ['mkl', 'onednn']
    """
    if min(rows, out_features, in_features) < 1:
        raise ValueError(f"rows, out_features and in_features must be >= 1, got {rows}, {out_features}, "
                         f"{in_features}.")
    if not HAS_ONEDNN:
        raise RuntimeError("this PyTorch build has no oneDNN linear; only F.linear can run (ZOO_CPU_LINEAR=mkl).")
    copies = _sweep_copies(rows, out_features, in_features)
    g = torch.Generator().manual_seed(0)  # a local stream: timing leaves the caller's random state alone
    with torch.no_grad():
        x = torch.randn(rows, in_features, generator=g)
        # copies of one random weight: a copy costs a memcpy, a fresh draw takes 10x as long (most of the timing)
        weights = torch.randn(out_features, in_features, generator=g).repeat(copies, 1, 1)
        b = torch.randn(out_features, generator=g) if bias else None
        return {"mkl": _median_seconds([lambda w=w: F.linear(x, w, b) for w in weights]),
                "onednn": _median_seconds([lambda w=w: _onednn_cpu(x, w, b) for w in weights])}


@torch.compiler.assume_constant_result
def _onednn_is_faster(rows: int, out_features: int, in_features: int, bias: bool) -> bool:
    """The kept choice for one shape, measured on first use (also while torch.compile traces: a constant)."""
    key = (rows, out_features, in_features, bias)
    if key not in _CHOICES:
        seconds = time_kernels(*key)
        _CHOICES[key] = seconds["onednn"] < MIN_GAIN * seconds["mkl"]
    return _CHOICES[key]


def kernel_table() -> dict[tuple[int, int, int, bool], str]:
    """The kernels chosen so far in this process: (rows, out, in, bias) -> "mkl" or "onednn".

    >>> with torch.no_grad():
    ...     y = linear(torch.randn(2, 512), torch.randn(512, 512))  # measured on first use
    >>> kernel_table()[(2, 512, 512, False)] in ("mkl", "onednn")
    True
    """
    return {key: "onednn" if faster else "mkl" for key, faster in _CHOICES.items()}


@contextmanager
def cpu_kernel(mode: str):
    """Within the block, float32 CPU inference products use `mode`: "mkl" (F.linear), "onednn", or "auto"
    (the measured choice), as ZOO_CPU_LINEAR does for a whole process; for comparisons such as
    benchmarks/ar_engine.py. Code compiled with torch.compile keeps the kernels it was traced with.

    >>> with cpu_kernel("mkl"):
    ...     y = linear(torch.randn(2, 8), torch.randn(4, 8))
    """
    global _MODE
    if mode not in MODES:
        raise ValueError(f"mode must be 'auto', 'mkl' or 'onednn', got {mode!r}.")
    if mode != "mkl" and not HAS_ONEDNN:
        raise RuntimeError("this PyTorch build has no oneDNN linear; only mode='mkl' can run.")
    before, _MODE = _MODE, mode
    try:
        yield
    finally:
        _MODE = before


def _rows_bucket(rows: int) -> int:
    return 1 << max(rows - 1, 0).bit_length()


def _use_onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    if _MODE != "auto":
        return _MODE == "onednn"
    rows = x.numel() // x.shape[-1]
    if rows > MEASURED_ROWS or weight.numel() < MEASURED_WEIGHT:
        return False
    return _onednn_is_faster(_rows_bucket(rows), weight.shape[0], weight.shape[1], bias is not None)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, or oneDNN's linear where it was measured faster (float32 CPU inference only)."""
    if (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and x.numel() > 0 and _use_onednn(x, weight, bias)):
        if torch.compiler.is_compiling():
            return torch.ops.zoo.onednn_linear(x, weight, bias)
        return _onednn_cpu(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """Drop-in nn.Linear (same parameters and state-dict keys) using `linear` above."""

    def forward(self, x):
        return linear(x, self.weight, self.bias)
