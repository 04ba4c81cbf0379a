"""Entropy-constrained training (C-NeRV, T-NeRV): every transmitted tensor gets a learned quantiser
and a learned density, and the model is trained on D + lambda * R with R in bits per pixel
(lambda = 0 before the compression phase, the last 20% of epochs by default).

After training, `quantized_state` and `frequency_table` give what the bitstream stores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tnerv.codec.entropy import FactorizedDensity
from tnerv.codec.quantize import LearnedQuantizer, QuantizedTensor
from tnerv.codec.settings import ENTROPY_CONSTRAINED, PHASE_START
from tnerv.codec.wrapper import CompressionWrapper, module_key
from tnerv.errors import TnervError
from tnerv.models.base import FrameSource, PassProgress, VideoINR


class EntropyConstrained(CompressionWrapper):
    """A model trained with a rate term: loss = D + lambda * bpp."""

    name = ENTROPY_CONSTRAINED

    def __init__(
        self,
        model: VideoINR,
        lam: float,
        phase_start: float = PHASE_START,
        init_bits: int = 8,
        side_lr_scale: float = 10.0,
    ):
        super().__init__(model, phase_start)
        self.lam, self.side_lr_scale = lam, side_lr_scale
        c = model.config
        self.num_pixels = c.num_frames * c.height * c.width
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        self.quantizers = nn.ModuleDict()
        self.densities = nn.ModuleDict()
        for name in (*self.param_names, *model.latent_names):
            if name in params:
                value = params[name]
            elif name in buffers:
                value = torch.ones(1)  # the latent's range is known in on_fit_start
            else:
                continue  # a latent switched off by the config (e.g. T-NeRV without embeddings)
            self.quantizers[module_key(name)] = LearnedQuantizer(value, init_bits)
            self.densities[module_key(name)] = FactorizedDensity(init_scale=2**init_bits / 8)
        self._bits: list[Tensor] = []
        self._fit_terms: list[Tensor] = []

    @property
    def active_lambda(self) -> float:
        """lambda in the compression phase, 0 before it."""
        return self.lam if self.in_phase else 0.0

    # --- training ---------------------------------------------------------------------------------

    def on_fit_start(self, frame_idx: Tensor, frames: FrameSource, progress: PassProgress | None = None) -> None:
        super().on_fit_start(frame_idx, frames, progress)
        # Latent quantisers start from the latents' actual range, known only now.
        state = self.model.transmitted_state()
        for name in self.model.latent_names:
            if module_key(name) in self.quantizers and name in state:
                self.quantizers[module_key(name)].reset(state[name])

    def optimizer_groups(self) -> list[dict[str, Any]]:
        # Adam moves a parameter by about lr per step whatever its gradient: steps and densities get a
        # larger, undecayed rate so that they follow the rate term in the last epochs, when the
        # model's own rate has decayed.
        side = {"lr_scale": self.side_lr_scale, "scheduled": False}
        return [*super().optimizer_groups(), {"params": list(self.densities.parameters()), **side},
                {"params": list(self.quantizers.parameters()), **side}]

    def _rate(self, name: str, noisy: Tensor, scale: float = 1.0) -> Tensor:
        """Bits of one tensor (times `scale`), evaluated once for two purposes: the density learns
        to fit the symbols at all times (per-symbol bits, weight 1), while the model and quantiser
        feel the rate only through lambda * bpp. Scaling the gradient that reaches `noisy` does both."""
        density = self.densities[module_key(name)]
        per_symbol = 1.0 / noisy.numel()
        k = self.active_lambda * scale / self.num_pixels / per_symbol
        steered = noisy.detach() + k * (noisy - noisy.detach())  # value of noisy, gradient times k
        bits = density.bits(steered)
        self._fit_terms.append(bits * per_symbol)
        return bits.detach() * scale

    def transform(self, name: str, value: Tensor) -> Tensor:
        x_hat, noisy = self.quantizers[module_key(name)](value)
        if self.training:
            self._bits.append(self._rate(name, noisy))
        return x_hat

    def transform_latent(self, name: str, value: Tensor) -> Tensor:
        if module_key(name) not in self.quantizers:
            return value
        x_hat, noisy = self.quantizers[module_key(name)](value)
        if self.training:
            # Bits of this batch's latents, scaled to the whole video's.
            self._bits.append(self._rate(name, noisy, self.config.num_frames / value.shape[0]))
        return x_hat

    def forward(self, frame_idx: Tensor, frames: Tensor | None = None) -> dict[str, Tensor]:
        self._bits, self._fit_terms = [], []
        outputs = super().forward(frame_idx, frames)
        if self.training:
            outputs["bpp"] = torch.stack(self._bits).sum() / self.num_pixels
            outputs["rate_fit"] = torch.stack(self._fit_terms).sum()
        return outputs

    def training_loss(self, outputs: dict[str, Tensor], target: Tensor, loss_fn: Any) -> Tensor:
        distortion = super().training_loss(outputs, target, loss_fn)
        # The value is D + lambda * bpp; the gradients are those described in _rate.
        fit = outputs["rate_fit"]
        return distortion + self.active_lambda * outputs["bpp"] + (fit - fit.detach())

    # --- evaluation and export --------------------------------------------------------------------

    def quantized_parameters(self) -> dict[str, QuantizedTensor]:
        named = dict(self.model.named_parameters())
        return {n: self.quantizers[module_key(n)].quantize(named[n]) for n in self.param_names}

    def decoded_latent(self, name: str, value: Tensor) -> Tensor:
        if module_key(name) not in self.quantizers:
            return value
        return self.quantizers[module_key(name)].quantize(value).dequantize().to(value.dtype)

    @torch.no_grad()
    def quantized_state(self) -> dict[str, QuantizedTensor]:
        state = self.model.transmitted_state()
        missing = [n for n in state if module_key(n) not in self.quantizers]
        if missing:
            raise TnervError(f"transmitted tensor {missing[0]!r} has no quantiser")
        return {n: self.quantizers[module_key(n)].quantize(v) for n, v in state.items()}

    @torch.no_grad()
    def frequency_table(self, name: str, symbols: np.ndarray) -> tuple[int, np.ndarray]:
        """The learned density of a tensor discretised over its symbols' range."""
        qmin, qmax = int(symbols.min()), int(symbols.max())
        return qmin, self.densities[module_key(name)].frequency_table(qmin, qmax)

    @torch.no_grad()
    def estimated_bits(self, quantized: dict[str, QuantizedTensor]) -> float:
        """The rate the learned densities assign to the actual symbols, in bits."""
        return sum(self.densities[module_key(n)].bits(q.symbols.float()).item() for n, q in quantized.items())
