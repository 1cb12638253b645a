"""`Linear`: nn.Linear whose CPU inference matmul goes through oneDNN.

On the CPUs zoo is developed on, MKL's sgemm (what F.linear calls for float32 on CPU) reaches a
third of the memory bandwidth on the few-row products of AR decoding, while oneDNN's linear (the
kernel inductor's CPU backend uses for frozen weights) gets close to it. Same weights, same layout,
same results; training, GPUs and other dtypes use F.linear. Under torch.compile the oneDNN call is a
custom op, opaque to inductor, which fuses everything around it. See benchmarks/ar_engine.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_ONEDNN_LINEAR = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
_USE_ONEDNN = _ONEDNN_LINEAR is not None and torch.backends.mkldnn.is_available()


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
