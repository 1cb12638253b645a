"""`Linear`: nn.Linear whose CPU inference matmul takes the faster of MKL and oneDNN for the machine.

The few-row products of AR decoding are memory-bound, and which float32 kernel reads the weights
fastest depends on the CPU vendor. MKL's sgemm (what F.linear calls on CPU) is the fastest on Intel
CPUs (on a 2-core Xeon: 40 GB/s against oneDNN's 29 GB/s, a 1.8 ms vs 3.1 ms compiled batch-1 decode
step of the AR benchmark's model), but it takes slow generic paths on other vendors' CPUs (on a 2-core
AMD EPYC it reached a third of oneDNN's speed). So zoo calls oneDNN's linear (the kernel inductor's CPU
backend uses for frozen weights) on non-Intel CPUs and F.linear on Intel ones; the environment variable
ZOO_CPU_LINEAR=mkl|onednn overrides the choice. Same weights, same layout, same results up to float
rounding; training, GPUs and other dtypes always use F.linear. Under torch.compile the oneDNN call is a
library op, opaque to inductor, which fuses everything around it. See benchmarks/ar_engine.py.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

_ONEDNN_LINEAR = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


def _cpu_vendor() -> str:
    """The CPU's vendor id ("GenuineIntel", "AuthenticAMD", ...) from /proc/cpuinfo, "" where unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _use_onednn() -> bool:
    """Whether float32 CPU inference goes through oneDNN (see the module docstring)."""
    if _ONEDNN_LINEAR is None or not torch.backends.mkldnn.is_available():
        return False
    choice = os.environ.get("ZOO_CPU_LINEAR", "").lower()
    if choice not in ("", "mkl", "onednn"):
        raise ValueError(f"ZOO_CPU_LINEAR={choice!r}; set it to 'mkl' or 'onednn', or unset it.")
    if choice:
        return choice == "onednn"
    return not (torch.backends.mkl.is_available() and _cpu_vendor() == "GenuineIntel")


_USE_ONEDNN = _use_onednn()


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


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    if _USE_ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled():
        if torch.compiler.is_compiling():
            return torch.ops.zoo.onednn_linear(x, weight, bias)
        return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """Drop-in nn.Linear (same parameters and state-dict keys) using `linear` above."""

    def forward(self, x):
        return linear(x, self.weight, self.bias)
