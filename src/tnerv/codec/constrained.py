"""Entropy-constrained training (C-NeRV, T-NeRV): every transmitted tensor gets a learned quantiser
and a learned density, and the model is trained on D + lambda * R with R in bits per pixel.

`EntropyConstrained` wraps any model and is itself a model, so `tnerv.train.fit` trains it,
checkpoints it and resumes it unchanged. After training, `quantized_state` and `frequency_table`
give what the bitstream stores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from tnerv.codec.entropy import FactorizedDensity
from tnerv.codec.quantize import LearnedQuantizer, QuantizedTensor
from tnerv.errors import TnervError
from tnerv.models.base import ENCODER, FrameSource, VideoINR


ENTROPY_CONSTRAINED = "entropy-constrained"
POST_TRAINING = "post-training"


def _key(name: str) -> str:
    return name.replace(".", "__")  # module dictionaries do not take dots


class EntropyConstrained(VideoINR):
    """A model trained with a rate term: loss = D + lambda * bpp (lambda = 0 before `lambda_start`)."""

    name = ENTROPY_CONSTRAINED

    def __init__(
        self,
        model: VideoINR,
        lam: float,
        lambda_start: float = 0.8,
        init_bits: int = 8,
        side_lr_scale: float = 10.0,
    ):
        super().__init__(model.config)
        self.model = model
        self.needs_frames = model.needs_frames
        self.lam, self.lambda_start, self.side_lr_scale = lam, lambda_start, side_lr_scale
        self.active_lambda = 0.0
        c = model.config
        self.num_pixels = c.num_frames * c.height * c.width
        self.param_names = [n for n, _ in model.named_parameters() if model.component_of(n) != ENCODER]
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
            self.quantizers[_key(name)] = LearnedQuantizer(value, init_bits)
            self.densities[_key(name)] = FactorizedDensity(init_scale=2**init_bits / 8)
        self._latent_bits: list[Tensor] = []
        self._fit_terms: list[Tensor] = []

    def parameter_counts(self) -> dict[str, int]:
        """The wrapped model's counts: quantisers and densities are side information, not parameters."""
        return self.model.parameter_counts()

    # --- training ---------------------------------------------------------------------------------

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.active_lambda = self.lam if epoch >= self.lambda_start * epochs else 0.0
        self.model.on_epoch_start(epoch, epochs)

    def attach_video(self, frames: FrameSource) -> None:
        self.model.attach_video(frames)

    def prepare_export(self, frames: FrameSource) -> None:
        self.model.prepare_export(frames)

    def on_fit_start(self, frame_idx: Tensor, frames: FrameSource) -> None:
        self.model.on_fit_start(frame_idx, frames)
        # Latent quantisers start from the latents' actual range, known only now.
        state = self.model.transmitted_state()
        for name in self.model.latent_names:
            if _key(name) in self.quantizers and name in state:
                self.quantizers[_key(name)].reset(state[name])

    def after_step(self, frame_idx: Tensor, outputs: dict[str, Tensor]) -> None:
        self.model.after_step(frame_idx, outputs)

    def optimizer_groups(self) -> list[dict[str, Any]]:
        inner = self.model.optimizer_groups()
        # Adam moves a parameter by about lr per step whatever its gradient: steps and densities get a
        # larger, undecayed rate so that they follow the rate term in the last epochs, when the
        # model's own rate has decayed.
        side = {"lr_scale": self.side_lr_scale, "scheduled": False}
        return [*inner, {"params": list(self.densities.parameters()), **side},
                {"params": list(self.quantizers.parameters()), **side}]

    def _rate(self, name: str, noisy: Tensor, scale: float = 1.0) -> Tensor:
        """Bits of one tensor (times `scale`), evaluated once for two purposes: the density learns
        to fit the symbols at all times (per-symbol bits, weight 1), while the model and quantiser
        feel the rate only through lambda * bpp. Scaling the gradient that reaches `noisy` does both."""
        density = self.densities[_key(name)]
        per_symbol = 1.0 / noisy.numel()
        k = self.active_lambda * scale / self.num_pixels / per_symbol
        steered = noisy.detach() + k * (noisy - noisy.detach())  # value of noisy, gradient times k
        bits = density.bits(steered)
        self._fit_terms.append(bits * per_symbol)
        return bits.detach() * scale

    def _quantize_latent(self, name: str, value: Tensor) -> Tensor:
        if _key(name) not in self.quantizers:
            return value
        x_hat, noisy = self.quantizers[_key(name)](value)
        if self.training:
            # Bits of this batch's latents, scaled to the whole video's.
            self._latent_bits.append(self._rate(name, noisy, self.config.num_frames / value.shape[0]))
        return x_hat

    def forward(self, frame_idx: Tensor, frames: Tensor | None = None) -> dict[str, Tensor]:
        params, bits = {}, []
        self._latent_bits, self._fit_terms = [], []
        named = dict(self.model.named_parameters())
        for name in self.param_names:
            x_hat, noisy = self.quantizers[_key(name)](named[name])
            params[name] = x_hat
            if self.training:
                bits.append(self._rate(name, noisy))
        self.model.latent_hook = self._quantize_latent
        try:
            outputs = functional_call(self.model, params, (frame_idx, frames), strict=False)
        finally:
            del self.model.latent_hook
        if self.training:
            total = torch.stack(bits + self._latent_bits).sum()
            outputs["bpp"] = total / self.num_pixels
            outputs["rate_fit"] = torch.stack(self._fit_terms).sum()
        return outputs

    def training_loss(self, outputs: dict[str, Tensor], target: Tensor, loss_fn: Any) -> Tensor:
        distortion = self.model.training_loss(outputs, target, loss_fn)
        # The value is D + lambda * bpp; the gradients are those described in _rate.
        fit = outputs["rate_fit"]
        return distortion + self.active_lambda * outputs["bpp"] + (fit - fit.detach())

    # --- evaluation and export --------------------------------------------------------------------

    @contextlib.contextmanager
    def _quantized_weights(self) -> Iterator[None]:
        """Swaps the quantised values into the model's parameters (evaluation only)."""
        named = dict(self.model.named_parameters())
        saved = {n: named[n].detach().clone() for n in self.param_names}
        with torch.no_grad():
            for n in self.param_names:
                named[n].copy_(self.quantizers[_key(n)].quantize(named[n]).dequantize())
        self.model.latent_hook = lambda name, value: (
            self.quantizers[_key(name)].quantize(value).dequantize().to(value.dtype)
            if _key(name) in self.quantizers else value
        )
        try:
            yield
        finally:
            del self.model.latent_hook
            with torch.no_grad():
                for n in self.param_names:
                    named[n].copy_(saved[n])

    @torch.no_grad()
    def reconstruct(
        self, frame_idx: Tensor, frames: FrameSource | None, batch_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        with self._quantized_weights():
            yield from self.model.reconstruct(frame_idx, frames, batch_size)

    @torch.no_grad()
    def quantized_state(self) -> dict[str, QuantizedTensor]:
        """The integer symbols of every transmitted tensor, with their steps and offsets."""
        state = self.model.transmitted_state()
        missing = [n for n in state if _key(n) not in self.quantizers]
        if missing:
            raise TnervError(f"transmitted tensor {missing[0]!r} has no quantiser")
        return {n: self.quantizers[_key(n)].quantize(v) for n, v in state.items()}

    @torch.no_grad()
    def frequency_table(self, name: str, symbols: np.ndarray) -> tuple[int, np.ndarray]:
        """The learned density of a tensor discretised over its symbols' range."""
        qmin, qmax = int(symbols.min()), int(symbols.max())
        return qmin, self.densities[_key(name)].frequency_table(qmin, qmax)

    @torch.no_grad()
    def estimated_bits(self, quantized: dict[str, QuantizedTensor]) -> float:
        """The rate the learned densities assign to the actual symbols, in bits."""
        return sum(self.densities[_key(n)].bits(q.symbols.float()).item() for n, q in quantized.items())
