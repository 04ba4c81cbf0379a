"""Compression the way the baselines' papers do it: n-bit uniform quantisation per tensor (8-bit
weights; HNeRV's and DNeRV's embeddings 6-bit), optionally after magnitude pruning (NeRV) and with
quantisation-aware fine-tuning (FFNeRV), then entropy coding of the symbols' histogram.

Pruning and quantisation-aware training happen in the last epochs of the fit (the compression
phase, the last 20% by default), which plays the part of the papers' fine-tuning after training.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tnerv.codec.quantize import QuantizedTensor, uniform_quantize
from tnerv.codec.settings import PHASE_START, POST_TRAINING
from tnerv.codec.wrapper import CompressionWrapper
from tnerv.models.base import VideoINR


def fake_quantize(x: Tensor, bits: int) -> Tensor:
    """x rounded to its n-bit uniform grid in the forward pass, unchanged in the backward pass."""
    low, high = x.detach().min(), x.detach().max()
    step = (high - low).clamp_min(1e-8) / (2**bits - 1)
    rounded = torch.round((x - low) / step) * step + low
    return x + (rounded - x).detach()


class QuantizationAware(CompressionWrapper):
    """Post-training compression of a model, with pruning and quantisation-aware fine-tuning."""

    name = POST_TRAINING

    def __init__(
        self, model: VideoINR, bits: dict[str, int], prune: float = 0.0, qat: bool = False, phase_start: float = PHASE_START
    ):
        super().__init__(model, phase_start)
        self.bits, self.prune, self.qat = dict(bits), prune, qat
        # Pruning masks, fixed when the phase starts; saved in checkpoints so that a resume keeps them.
        named = dict(model.named_parameters())
        for name in self._prunable():
            self.register_buffer(_mask_name(name), torch.ones_like(named[name], dtype=torch.bool))
        self.register_buffer("masks_ready", torch.zeros((), dtype=torch.bool))

    def _prunable(self) -> list[str]:
        # NeRV prunes the decoder's weight matrices and kernels (not biases, grids or embeddings); a model
        # may exclude more (`pruning_excludes`).
        if self.prune <= 0:
            return []
        named = dict(self.model.named_parameters())
        return [n for n in self.param_names if self.model.component_of(n) == "decoder" and named[n].dim() > 1
                and not n.startswith(self.model.pruning_excludes)]

    def _mask(self, name: str) -> Tensor | None:
        return getattr(self, _mask_name(name), None) if self.masks_ready else None

    def _mask_buffer(self, name: str) -> Tensor:
        """The buffer that holds a prunable parameter's mask (True: kept), ready or not."""
        return getattr(self, _mask_name(name))

    @torch.no_grad()
    def on_phase_start(self) -> None:
        names = self._prunable()
        if not names or self.masks_ready:
            return  # nothing to prune, or masks restored from a checkpoint
        named = dict(self.model.named_parameters())
        magnitudes = torch.cat([named[n].detach().abs().flatten() for n in names])
        threshold = torch.quantile(magnitudes.float().cpu()[: 2**24], self.prune).item()  # global, as NeRV
        for n in names:
            self._mask_buffer(n).copy_(named[n].detach().abs() > threshold)
        self.masks_ready.fill_(True)

    def _bits_of(self, name: str) -> int:
        return self.bits[self.model.component_of(name)]

    def transform(self, name: str, value: Tensor) -> Tensor:
        mask = self._mask(name)
        if mask is not None:
            value = value * mask
        if self.qat and self.in_phase:
            value = fake_quantize(value, self._bits_of(name))
        return value

    def _quantize(self, name: str, value: Tensor) -> QuantizedTensor:
        mask = self._mask(name)  # pruned weights are zero in the file
        return uniform_quantize(value * mask if mask is not None else value, self._bits_of(name))

    def quantized_parameters(self) -> dict[str, QuantizedTensor]:
        named = dict(self.model.named_parameters())
        return {n: self._quantize(n, named[n]) for n in self.param_names}

    @torch.no_grad()
    def quantized_state(self) -> dict[str, QuantizedTensor]:
        return {n: self._quantize(n, v) for n, v in self.model.transmitted_state().items()}

    def decoded_latent(self, name: str, value: Tensor) -> Tensor:
        # Embeddings are quantised per tensor over all frames; a batch's range differs, so the
        # evaluation pass uses them unquantised (the file's PSNR is measured on the decoded file).
        return value


def _mask_name(name: str) -> str:
    return "mask__" + name.replace(".", "__")
