"""How a model runs: numeric precision and memory layout, and the choice of the fastest safe path.

The fast paths are switches with a measured cost (benchmarks/speed.py): channels_last keeps the float32
arithmetic (only the order of the sums changes) and lets oneDNN/cuDNN run the convolutions without
converting layouts; bfloat16 autocast halves the memory traffic and uses the bf16 units where the
hardware has them (CUDA with bf16, CPUs with AVX-512-BF16 or AMX). Without such units bf16 is emulated
and far slower than float32, so `auto` never picks it there; on such CPUs NNPACK's Winograd and FFT
convolutions (tnerv.models.nnpack) do the same float32 work with 2-4x fewer multiplications."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from tnerv.models.nnpack import available as nnpack_available
from tnerv.models.nnpack import use_nnpack

PATH_PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class ExecutionPath:
    """A way to run a model: its arithmetic precision, whether its tensors are channels_last and whether
    its float32 convolutions run through NNPACK (NCHW: NNPACK has no other layout)."""

    precision: str = "fp32"
    channels_last: bool = False
    nnpack: bool = False

    def apply(self, model: nn.Module) -> nn.Module:
        """Puts the model's 4-D weights in this path's memory layout and its convolutions on this path's
        kernels (in place), and returns it."""
        use_nnpack(model, self.nnpack)
        return model.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The context the model's forward pass runs in: bf16 autocast, or nothing."""
        if self.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def describe(self) -> str:
        """E.g. "bf16, channels_last", "fp32, nnpack" or "fp32"."""
        return ", ".join([self.precision] + [flag for flag in ("channels_last", "nnpack") if getattr(self, flag)])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FP32 = ExecutionPath()


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes in bf16 natively (else bf16 is emulated: slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # oneDNN's own test: AVX-512-BF16 or AMX. A private function: guarded in case it moves.
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        try:
            return bool(check()) if check is not None else False
        except RuntimeError:
            return False
    return False


REFERENCE = ExecutionPath("fp32", channels_last=True)  # the fp32 decode the others are checked against
NNPACK = ExecutionPath("fp32", nnpack=True)


def candidate_paths(device: torch.device, precision: str = "auto") -> list[ExecutionPath]:
    """Paths to try, fastest first, ending with the fp32 reference: `precision` "auto" (bf16 only where
    native, NNPACK on CPUs where it runs), "fp32" (the reference alone) or "bf16"."""
    if precision not in ("auto", *PATH_PRECISIONS):
        raise ValueError(f"unknown precision {precision!r}; available: auto, {', '.join(PATH_PRECISIONS)}")
    paths = []
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        paths.append(ExecutionPath("bf16", channels_last=True))
    if precision == "auto" and device.type == "cpu" and nnpack_available():
        paths.append(NNPACK)
    return paths + [REFERENCE]
