"""Convolutions through NNPACK: Winograd (3x3) and FFT (up to 16x16) kernels that do 2-4x fewer
multiplications than a direct convolution, for float32 on CPUs.

PyTorch's CPU wheels bundle NNPACK but only use it for batches of 16 or more, and after oneDNN, so the
decoders (batch 1 or 2, 3x3 and 5x5 kernels) never reach it. On CPUs without bf16 units oneDNN's
direct kernels already run those convolutions at 55-75% of the fp32 matmul peak, so fewer
multiplications are the remaining lever (benchmarks/speed.py). `use_nnpack(model)` sends each eligible
convolution there (`torch._nnpack_spatial_convolution`, a private op, hence guarded: where it is
missing everything runs as before), with a backward pass whose input gradient is NNPACK's too (a
convolution of the output gradient with the flipped kernel) and whose weight gradient is PyTorch's.

Results are float32 sums in another order, plus the transforms' rounding: about 1e-5 relative
for 3x3 Winograd, 1e-6 for the FFT; decoders check the 8-bit frames against fp32's before use."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Below this many output pixels NNPACK's tile transforms cost more than they save (measured on the
# decoders' first blocks: slower at 9x16 and 8x16, faster from 16x32 and 18x32 on).
MIN_PIXELS = 512
MAX_KERNEL = 16  # NNPACK's FFT tiles are 16x16 at most


def available() -> bool:
    """Whether NNPACK runs on this machine. The check also initialises it: before that its
    convolutions fail, so call this before using any."""
    check = getattr(torch, "_nnpack_available", None)
    try:
        return bool(check()) and hasattr(torch, "_nnpack_spatial_convolution")
    except RuntimeError:
        return False


def eligible(conv: nn.Module) -> bool:
    """Whether NNPACK can run this module's convolution: a plain 2-D one of stride 1, no groups or
    dilation, zero padding smaller than the kernel."""
    if type(conv) not in (nn.Conv2d, NNPACKConv2d):
        return False
    k, p = conv.kernel_size, conv.padding
    return (conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and not isinstance(p, str)
            and all(0 <= pi < ki <= MAX_KERNEL for pi, ki in zip(p, k)))


class _Convolution(torch.autograd.Function):
    """A stride-1 convolution whose output and input gradient are NNPACK's."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: list[int],
                module: NNPACKConv2d):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias, ctx.module = padding, bias is not None, module
        return torch._nnpack_spatial_convolution(x, weight, bias, padding, [1, 1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = None
        if ctx.needs_input_grad[0]:
            # The input gradient is the output gradient convolved with the kernel flipped and its
            # in/out channels swapped, padded by k - 1 - p (a "full" convolution): same size as x.
            flipped = weight.flip(2, 3).transpose(0, 1).contiguous()
            padding = [k - 1 - p for k, p in zip(weight.shape[2:], ctx.padding)]
            ctx.module.nnpack_calls += 1
            try:
                grad_x = torch._nnpack_spatial_convolution(grad, flipped, None, padding, [1, 1])
            except RuntimeError as exc:  # a shape NNPACK refuses: PyTorch's kernels, below (recorded)
                ctx.module.record_fallback(exc)
        want_input = ctx.needs_input_grad[0] and grad_x is None
        want_bias = ctx.has_bias and ctx.needs_input_grad[2]
        grad_weight = grad_bias = None
        if want_input or ctx.needs_input_grad[1] or want_bias:
            pytorch_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if ctx.has_bias else None, [1, 1], ctx.padding, [1, 1],
                False, [0, 0], 1, [want_input, ctx.needs_input_grad[1], want_bias],
            )
            grad_x = pytorch_x if want_input else grad_x
        return grad_x, grad_weight, grad_bias, None, None


class NNPACKConv2d(nn.Conv2d):
    """An nn.Conv2d that runs through NNPACK when its input allows it (float32 NCHW on the CPU, no
    autocast, at least MIN_PIXELS output pixels), else exactly as nn.Conv2d. Same parameters and
    state_dict: `use_nnpack` turns an nn.Conv2d into one in place and back. It counts the NNPACK calls it
    made and those NNPACK failed (PyTorch's kernels ran instead), with the last failure's message, so that
    a report never says "nnpack" for work PyTorch did (`fallbacks`)."""

    # Class defaults: `use_nnpack` switches the class of existing modules, so no __init__ sets them.
    nnpack_calls = 0
    nnpack_fallbacks = 0
    last_fallback = ""

    def record_fallback(self, exc: RuntimeError) -> None:
        """Counts one NNPACK call that failed and keeps its message (one line)."""
        self.nnpack_fallbacks += 1
        self.last_fallback = " ".join(str(exc).split())

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        out_pixels = (x.shape[-2] + 2 * self.padding[0] - self.kernel_size[0] + 1) * (
            x.shape[-1] + 2 * self.padding[1] - self.kernel_size[1] + 1)
        if (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and x.dim() == 4 and len(x) > 0
                and x.is_contiguous() and out_pixels >= MIN_PIXELS and not torch.is_autocast_enabled("cpu")):
            self.nnpack_calls += 1
            try:
                return _Convolution.apply(x, weight.contiguous(), bias, list(self.padding), self)
            except RuntimeError as exc:  # NNPACK refuses some shapes (its workspace limits), or runs out
                self.record_fallback(exc)  # of memory: PyTorch's kernels, and the report says so
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def use_nnpack(model: nn.Module, enabled: bool = True) -> int:
    """Sends the model's eligible convolutions through NNPACK (or back to PyTorch's own with
    `enabled=False`), in place; returns how many. Nothing changes where NNPACK is unavailable."""
    if enabled and not available():
        return 0
    target = NNPACKConv2d if enabled else nn.Conv2d
    changed = 0
    for module in model.modules():
        if eligible(module):
            # A class swap keeps the parameters, hooks and state_dict keys of the module as they are.
            module.__class__ = target
            for counter in ("nnpack_calls", "nnpack_fallbacks", "last_fallback"):
                module.__dict__.pop(counter, None)  # back to the class's zeros: counts start here
            changed += 1
    return changed


def fallbacks(model: nn.Module) -> tuple[int, int, str]:
    """(NNPACK calls that failed and ran on PyTorch's kernels instead, NNPACK calls made, a failure's
    message) over the model's NNPACK convolutions since `use_nnpack` last switched them."""
    modules = [m for m in model.modules() if isinstance(m, NNPACKConv2d)]
    failed = sum(m.nnpack_fallbacks for m in modules)
    reasons = [m.last_fallback for m in modules if m.nnpack_fallbacks]
    return failed, sum(m.nnpack_calls for m in modules), reasons[-1] if reasons else ""
