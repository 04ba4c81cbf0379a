"""HiNeRV's compression as its paper and code do it (hmkx/HiNeRV @ fdb92ec, read, not copied): three stages
of training, then per-channel quantisation and entropy coding.

1. The main stage trains the model.
2. Pruning, once, when the second stage starts: a fraction of all the model's parameters is removed from
   the decoder's weight matrices and kernels (HiNeRV's positional encoders and grids are kept), those with
   the smallest |w| / n^prune_weight (n: the weights of their tensor); then fine-tuning with the masks.
3. Quantisation-aware fine-tuning (Quant-Noise): in every training step each weight tensor (grids
   included) is, at a random `quant_noise` of its entries, replaced by its per-channel quantisation; no
   gradient through the rounding, one through the scales. The rate is scaled by `quant_lr_scale`.

The file holds every tensor of two or more dimensions quantised per channel (`channel_quantize`: 6 bits,
symmetric, the best axis per tensor, scales as float16), pruned entries left out and their masks coded,
and the rest (biases) as float16 values, as the official bitstream does; each stage starts a new
optimiser and schedule (`tnerv.models.base.TrainingStage`)."""

from __future__ import annotations

import torch
from torch import Tensor

from tnerv.codec.post_training import QuantizationAware
from tnerv.codec.quantize import ChannelQuantized, HalfTensor, channel_quantize, channel_scales, symmetric_symbols
from tnerv.codec.settings import STAGED, StagedSettings
from tnerv.models.base import TRANSMITTED_COMPONENTS, FrameSource, TrainingStage, VideoINR


def quant_noise(x: Tensor, bits: int, layout: tuple[int, ...], share: float) -> Tensor:
    """x with a random `share` of its entries replaced by their per-channel quantisation; the rounding passes
    no gradient (the scales do)."""
    scale, _ = channel_scales(x, bits, layout)
    view = x.reshape(layout)
    quantized = (symmetric_symbols(view, scale, bits).detach() * scale).reshape(x.shape)
    keep = (torch.rand_like(x) > share).to(x.dtype)
    return x * keep + quantized * (1 - keep)


class StagedCompression(QuantizationAware):
    """A model trained and coded in HiNeRV's stages (`tnerv.codec.settings.StagedSettings`)."""

    name = STAGED

    def __init__(self, model: VideoINR, settings: StagedSettings):
        bits = {component: settings.bits for component in TRANSMITTED_COMPONENTS}
        super().__init__(model, bits, settings.prune, qat=False, phase_start=settings.phase_start)
        self.settings = settings
        self.in_quant = False

    def training_stages(self, epochs: int) -> list[TrainingStage]:
        """Main, pruning and quantisation-aware stages in the settings' shares (stages of no epoch left out)."""
        after = epochs - round(epochs * self.settings.phase_start)
        quant = round(after * self.settings.quant_share)
        stages = [TrainingStage("main", epochs - after), TrainingStage("prune", after - quant),
                  TrainingStage("quant", quant, self.settings.quant_lr_scale)]
        return [stage for stage in stages if stage.epochs]

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        main, prune = (self._stage_epochs(epochs, name) for name in ("main", "prune"))
        self.in_phase = epoch >= main
        if self.in_phase:
            self.on_phase_start()  # prunes once (masks kept in checkpoints)
        self.in_quant = epoch >= main + prune and self._stage_epochs(epochs, "quant") > 0
        self.model.on_epoch_start(epoch, epochs)

    def on_step_start(self, step: int, steps: int) -> None:
        self.model.on_step_start(step, steps)  # the phase follows the stages, set at each epoch's start

    def _stage_epochs(self, epochs: int, name: str) -> int:
        return sum(stage.epochs for stage in self.training_stages(epochs) if stage.name == name)

    @torch.no_grad()
    def on_phase_start(self) -> None:
        names = self._prunable()
        if not names or self.masks_ready:
            return
        named = dict(self.model.named_parameters())
        # The official count: a share of all the model's parameters, taken from the prunable weights alone.
        target = min(int(self.model.parameter_counts()["transmitted"] * self.prune), sum(named[n].numel() for n in names))
        if target > 0:
            scores = {n: named[n].detach().abs() / (named[n].numel() ** self.settings.prune_weight + 1e-6) for n in names}
            threshold = torch.sort(torch.cat([s.flatten() for s in scores.values()])).values[target - 1]
            for n in names:
                self._mask_buffer(n).copy_(scores[n] > threshold)
        self.masks_ready.fill_(True)

    def prepare_export(self, frames: FrameSource) -> None:
        self.on_phase_start()  # a fit too short for a pruning stage is pruned before it is written
        super().prepare_export(frames)

    def transform(self, name: str, value: Tensor) -> Tensor:
        mask = self._mask(name)
        if mask is not None:
            value = value * mask
        if self.in_quant and self.training and value.dim() > 1:
            value = quant_noise(value, self.settings.bits, self._layout(name, value), self.settings.quant_noise)
        return value

    def _layout(self, name: str, value: Tensor) -> tuple[int, ...]:
        return self.model.channel_layout(name, tuple(value.shape))

    def _quantize(self, name: str, value: Tensor) -> ChannelQuantized | HalfTensor:
        if value.dim() > 1:
            return channel_quantize(value, self.settings.bits, self._layout(name, value), self._mask(name))
        return HalfTensor(value.detach().half())
