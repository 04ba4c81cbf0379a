"""Quantisers for transmitted tensors.

`LearnedQuantizer` is the entropy-constrained scheme's per-tensor quantiser: q = round((x + beta) /
alpha), dequantised as q * alpha - beta, with alpha (the step) and beta (the offset) learned.
Distortion sees straight-through rounding; the rate sees additive uniform noise in the integer
domain, so that its gradient reaches the density model and the step.
`uniform_quantize` is the fixed post-training quantiser (n-bit, per tensor) of the baselines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn


def as_float32(value: float) -> float:
    """The nearest float32 value: steps and offsets are stored as float32, so both sides use these."""
    return float(np.float32(value))


@dataclass
class QuantizedTensor:
    """Integer symbols with the step and offset that dequantise them: x = q * step - offset."""

    symbols: Tensor  # int64, the tensor's shape
    step: float  # float32-representable
    offset: float  # float32-representable

    def dequantize(self) -> Tensor:
        """The float tensor the decoder reconstructs."""
        return self.symbols.float() * self.step - self.offset


class LearnedQuantizer(nn.Module):
    """Per-tensor learned quantiser; alpha is kept positive through its logarithm."""

    def __init__(self, tensor: Tensor, init_bits: int = 8):
        super().__init__()
        self.init_bits = init_bits
        self.log_step = nn.Parameter(torch.zeros(()))
        self.offset = nn.Parameter(torch.zeros(()))
        self.reset(tensor)

    @torch.no_grad()
    def reset(self, tensor: Tensor) -> None:
        """Starts at a uniform n-bit grid over the tensor's range: close to what training keeps."""
        span = (tensor.detach().max() - tensor.detach().min()).clamp_min(1e-8).item()
        self.log_step.fill_(math.log(span / (2**self.init_bits - 1)))
        self.offset.zero_()

    @property
    def step(self) -> Tensor:
        """alpha, the quantisation step."""
        return self.log_step.exp()

    def scaled(self, x: Tensor) -> Tensor:
        """(x + beta) / alpha, the continuous value that is rounded."""
        return (x + self.offset) / self.step

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(dequantised x with straight-through rounding, noisy integers for the rate)."""
        u = self.scaled(x)
        rounded = u + (torch.round(u) - u).detach()
        noisy = u + torch.empty_like(u).uniform_(-0.5, 0.5)
        return rounded * self.step - self.offset, noisy

    @torch.no_grad()
    def quantize(self, x: Tensor) -> QuantizedTensor:
        """The integer symbols that are entropy-coded, with the float step and offset to store."""
        step, offset = as_float32(self.step.item()), as_float32(self.offset.item())
        # Rounded with the float32 values that the file stores, so the decoder matches exactly.
        symbols = torch.round((x.float() + offset) / step).long()
        return QuantizedTensor(symbols, step, offset)


def uniform_quantize(x: Tensor, bits: int) -> QuantizedTensor:
    """Post-training quantisation to 2^bits levels spanning the tensor's range (NeRV/HNeRV style)."""
    x = x.detach().float()
    low, high = as_float32(x.min().item()), x.max().item()
    step = as_float32(max(high - low, 1e-8) / (2**bits - 1))
    symbols = torch.round((x - low) / step).long().clamp(0, 2**bits - 1)
    return QuantizedTensor(symbols, step, -low)
