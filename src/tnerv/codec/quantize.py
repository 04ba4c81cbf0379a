"""Quantisers for transmitted tensors.

`LearnedQuantizer` is the entropy-constrained scheme's per-tensor quantiser: q = round((x + beta) /
alpha), dequantised as q * alpha - beta, with alpha (the step) and beta (the offset) learned.
Distortion sees straight-through rounding; the rate sees additive uniform noise in the integer
domain, so that its gradient reaches the density model and the step.
`uniform_quantize` is the fixed post-training quantiser (n-bit, per tensor) of the baselines;
`channel_quantize` HiNeRV's (n-bit, symmetric, one scale per channel of the best axis), beside
`HalfTensor` for what it keeps unquantised.
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

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape."""
        return tuple(self.symbols.shape)

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


def best_channel_axis(layout: tuple[int, ...], share: float = 0.05) -> int | None:
    """The axis per-channel quantisation takes each scale's maximum over, by HiNeRV's rule: the longest axis
    whose every index holds less than `share` of the tensor (so longer than 20), the first of equals; None
    where no axis is that long (one scale for the whole tensor)."""
    numel, best, best_length = math.prod(layout), None, 0
    for axis, length in enumerate(layout):
        # The rule's own arithmetic (not `length > 1 / share`), so that the boundary falls where it does.
        if numel / length >= numel * share:
            continue
        if length > best_length:
            best, best_length = axis, length
    return best


@dataclass
class ChannelQuantized:
    """Integer symbols with one scale per channel (HiNeRV's quantiser). Seen as (outer, reduced, group) in
    row-major order, value (o, j, r) is symbols * scales[o * group + r]: the `reduced` values along the axis
    a scale's maximum was taken over share it; values where `mask` (pruned weights) is False are 0."""

    symbols: Tensor  # int64, the tensor's shape; 0 where pruned
    scales: Tensor  # float16 (numel / reduced,), each positive
    reduced: int  # the length of the axis each scale covers
    group: int  # the product of the axes after it
    mask: Tensor | None = None  # bool, the tensor's shape; None: nothing pruned

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape."""
        return tuple(self.symbols.shape)

    def dequantize(self) -> Tensor:
        """The float tensor the decoder reconstructs."""
        flat = self.symbols.reshape(-1, self.reduced, self.group).float()
        values = flat * self.scales.float().to(flat.device).reshape(-1, 1, self.group)
        if self.mask is not None:
            values = values * self.mask.reshape(values.shape)
        return values.reshape(self.symbols.shape)


def channel_scales(x: Tensor, bits: int, layout: tuple[int, ...]) -> tuple[Tensor, int | None]:
    """HiNeRV's symmetric per-channel scales of x seen in `layout` (its official code's shape of the tensor):
    2 max|x| / (2^bits - 1) + 1e-6, the maximum taken along the best axis (`best_channel_axis`), shaped to
    broadcast over the layout; and that axis. Differentiable in x, as its quantisation-aware training has it."""
    view = x.reshape(layout)
    axis = best_channel_axis(layout)
    peak = view.abs().amax(dim=axis, keepdim=True) if axis is not None else view.abs().max()
    return 2 * peak / (2**bits - 1) + 1e-6, axis


def symmetric_symbols(view: Tensor, scale: Tensor, bits: int) -> Tensor:
    """round(x / scale) within the 2^bits symmetric levels -2^(bits-1) .. 2^(bits-1) - 1."""
    return torch.round(view / scale).clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def channel_quantize(x: Tensor, bits: int, layout: tuple[int, ...], mask: Tensor | None = None) -> ChannelQuantized:
    """x quantised per channel to `bits` (HiNeRV's post-training step); masked values are 0 first. The symbols
    are computed with the float32 scales and the scales stored as float16, as its code does both; the
    decoded tensor (`dequantize`) uses the stored ones, on either side."""
    x = x.detach().float()
    if mask is not None:
        x = x * mask
    scale, axis = channel_scales(x, bits, layout)
    stored = scale.half().float()
    symbols = symmetric_symbols(x.reshape(layout), scale, bits).long().reshape(x.shape)
    reduced = layout[axis] if axis is not None else x.numel()
    group = math.prod(layout[axis + 1 :]) if axis is not None else 1
    return ChannelQuantized(symbols, stored.reshape(-1).half(), reduced, group, None if mask is None else mask.bool())


@dataclass
class HalfTensor:
    """A tensor stored as float16 values, not quantised (HiNeRV's biases)."""

    values: Tensor  # float16

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape."""
        return tuple(self.values.shape)

    def dequantize(self) -> Tensor:
        """The float tensor the decoder reconstructs."""
        return self.values.float()
