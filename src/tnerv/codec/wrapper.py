"""`CompressionWrapper`: a model whose transmitted parameters pass through a transform (quantisation,
pruning) while it trains, and through the same transform, hard, when it is evaluated.

A wrapper is itself a model, so `tnerv.train.fit` trains, checkpoints and resumes it unchanged.
Subclasses say what happens to a parameter (`transform`) and to a computed latent such as frame
embeddings (`transform_latent`), and give the symbols the bitstream stores (`quantized_state`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call

from tnerv.codec.entropy import counts_from_symbols
from tnerv.codec.quantize import QuantizedTensor
from tnerv.models.base import ENCODER, FrameSource, PassProgress, VideoINR


def module_key(name: str) -> str:
    """A parameter name usable as a key of nn.ModuleDict (which does not take dots)."""
    return name.replace(".", "__")


def histogram_table(name: str, symbols: np.ndarray) -> tuple[int, np.ndarray]:
    """The frequency table of the symbols themselves (post-training quantisation)."""
    qmin, qmax = int(symbols.min()), int(symbols.max())
    return qmin, counts_from_symbols(symbols, qmin, qmax)


class CompressionWrapper(VideoINR):
    """Wraps a model; its transmitted parameters are transformed in every forward pass."""

    def __init__(self, model: VideoINR, phase_start: float):
        super().__init__(model.config)
        self.model = model
        self.needs_frames = model.needs_frames
        self.phase_start = phase_start  # share of the training steps before the compression phase
        self.in_phase = False
        self.param_names = [n for n, _ in model.named_parameters() if model.component_of(n) != ENCODER]

    # --- what subclasses define -------------------------------------------------------------------

    def transform(self, name: str, value: Tensor) -> Tensor:
        """A transmitted parameter as the forward pass sees it (differentiable while training)."""
        return value

    def transform_latent(self, name: str, value: Tensor) -> Tensor:
        """A computed transmitted tensor (one of the model's latent_names) as the decoder sees it."""
        return value

    def quantized_state(self) -> dict[str, QuantizedTensor]:
        """The integer symbols of every transmitted tensor, with their steps and offsets."""
        raise NotImplementedError

    def on_phase_start(self) -> None:
        """Called once when the compression phase begins (and again after a resume inside it)."""

    def frequency_table(self, name: str, symbols: np.ndarray) -> tuple[int, np.ndarray]:
        """(qmin, frequency table) the bitstream codes a tensor's symbols with: their histogram here."""
        return histogram_table(name, symbols)

    def estimated_bits(self, quantized: dict[str, QuantizedTensor]) -> float | None:
        """The wrapper's own estimate of the coded symbols' size in bits, if it has one."""
        return None

    # --- the model contract, delegated ------------------------------------------------------------

    def parameter_counts(self) -> dict[str, int]:
        """The wrapped model's counts: the wrapper's own state is side information."""
        return self.model.parameter_counts()

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.model.on_epoch_start(epoch, epochs)

    def on_step_start(self, step: int, steps: int) -> None:
        # The phase starts at its share of the steps, not of the epochs: a plan of a few epochs (a time
        # budget's) keeps it (at epochs, a 0.8 share of fewer than 5 epochs never began).
        in_phase = step >= self.phase_start * steps
        if in_phase and not self.in_phase:
            self.in_phase = True
            self.on_phase_start()
        self.in_phase = in_phase
        self.model.on_step_start(step, steps)

    def attach_video(self, frames: FrameSource) -> None:
        self.model.attach_video(frames)

    def prepare_export(self, frames: FrameSource) -> None:
        self.model.prepare_export(frames)

    def on_fit_start(self, frame_idx: Tensor, frames: FrameSource, progress: PassProgress | None = None) -> None:
        self.model.on_fit_start(frame_idx, frames, progress)

    def after_step(self, frame_idx: Tensor, outputs: dict[str, Tensor]) -> None:
        self.model.after_step(frame_idx, outputs)

    def optimizer_groups(self) -> list[dict[str, Any]]:
        return self.model.optimizer_groups()

    def training_loss(self, outputs: dict[str, Tensor], target: Tensor, loss_fn: Any) -> Tensor:
        return self.model.training_loss(outputs, target, loss_fn)

    def forward(self, frame_idx: Tensor, frames: Tensor | None = None) -> dict[str, Tensor]:
        named = dict(self.model.named_parameters())
        params = {name: self.transform(name, named[name]) for name in self.param_names}
        self.model.latent_hook = self.transform_latent
        try:
            return functional_call(self.model, params, (frame_idx, frames), strict=False)
        finally:
            del self.model.latent_hook

    # --- evaluation: the decoder's view -----------------------------------------------------------

    @contextlib.contextmanager
    def decoded_weights(self) -> Iterator[None]:
        """Puts the values a decoder would get into the model's parameters for a while."""
        named = dict(self.model.named_parameters())
        quantized = self.quantized_parameters()
        saved = {n: named[n].detach().clone() for n in quantized}
        with torch.no_grad():
            for n, q in quantized.items():
                named[n].copy_(q.dequantize())
        self.model.latent_hook = self.decoded_latent
        try:
            yield
        finally:
            del self.model.latent_hook
            with torch.no_grad():
                for n in saved:
                    named[n].copy_(saved[n])

    def quantized_parameters(self) -> dict[str, QuantizedTensor]:
        """The quantised transmitted parameters (the latents excluded)."""
        raise NotImplementedError

    def decoded_latent(self, name: str, value: Tensor) -> Tensor:
        """A latent as the decoder gets it (quantised and dequantised); identity by default."""
        return value

    @torch.no_grad()
    def reconstruct(
        self, frame_idx: Tensor, frames: FrameSource | None, batch_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        with self.decoded_weights():
            yield from self.model.reconstruct(frame_idx, frames, batch_size)
