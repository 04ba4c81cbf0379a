"""C-NeRV (Gomes, Azevedo, Schroers, CVPR 2023): the positional encodings of (t, y, x) on the latent's
grid, mixed by two convolutions into the latent, then E-NeRV's AdaIN-modulated upsampling stages.

C-NeRV has no public code. The layout follows the paper's description (docs/models.md, "C-NeRV"); the
stem's widths and kernels are inferred so that the 720p model has E-NeRV's size (12.5M, Tab. 1).
Its entropy-constrained training belongs to the codec; here it is fitted plainly."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tnerv.models.base import ModelConfig, VideoINR
from tnerv.models.card import ModelCard
from tnerv.models.layers import (
    ModulatedDecoder,
    PositionalEncoding,
    latent_coordinates,
    make_activation,
    output_activation,
    reduced_widths,
)
from tnerv.models.registry import register_model
from tnerv.models.scaling import scale_width
from tnerv.models.strides import resolve_strides


@dataclass
class CNeRVConfig(ModelConfig):
    """C-NeRV's architecture; the defaults are a 1280x720 model of about 12.50M parameters."""

    pe_base: float = 1.25
    pe_levels: int = 80  # PE of each of t, y, x (the input has 3 * 2 * pe_levels channels) and of t for AdaIN
    strides: tuple[int, ...] | str = (5, 2, 2, 2, 2)  # or "auto": derived from the frame size
    num_blocks: int = 5  # used when strides is "auto"
    target_latent_height: int = 9  # used when strides is "auto"
    stem_channels: int = 480  # inferred: width between the two stem convolutions
    stem_kernel_sizes: tuple[int, int] = (1, 3)  # inferred
    channels: int = 196  # latent channels (E-NeRV's)
    expansion: float = 3.0  # the first stage widens the latent to int(channels * expansion)
    reduction: float = 2.0
    lower_width: int = 96
    kernel_size: int = 3
    modulation_dims: tuple[int, ...] = (128, 128)  # MLP(PE(t)) that drives every AdaIN
    activation: str = "gelu"
    output_activation: str = "sigmoid"


@register_model
class CNeRV(VideoINR):
    """Frame index in, frame out; the latent is a convolution of spatio-temporal coordinates."""

    name = "cnerv"
    card = ModelCard(label="C-NeRV", colour="#9467bd", marker="v", reference_preset="cnerv-12.5m-720p")
    compression = "entropy-constrained"  # C-NeRV is trained with the rate term
    config_class = CNeRVConfig
    # Not published; E-NeRV's recipe, on which C-NeRV builds: Adam (0.5, 0.999), lr 5e-4, 20% warm-up, cosine.
    train_defaults = {"lr": 5e-4, "betas": (0.5, 0.999), "warmup": 0.2, "loss": "fusion", "batch_size": 1}

    def __init__(self, config: CNeRVConfig):
        super().__init__(config)
        c = config
        self.strides, (self.latent_h, self.latent_w) = resolve_strides(
            c.height, c.width, c.strides, c.num_blocks, c.target_latent_height
        )
        self.pe = PositionalEncoding(c.pe_base, c.pe_levels)
        self.register_buffer("coords", latent_coordinates(self.latent_h, self.latent_w), persistent=False)
        k1, k2 = c.stem_kernel_sizes
        self.stem = nn.Sequential(
            nn.Conv2d(3 * self.pe.dim, c.stem_channels, k1, padding=k1 // 2),
            make_activation(c.activation),
            nn.Conv2d(c.stem_channels, c.channels, k2, padding=k2 // 2),
            make_activation(c.activation),
        )
        widths = reduced_widths(int(c.channels * c.expansion), self.strides, c.reduction, c.lower_width)
        self.decoder = ModulatedDecoder(
            c.channels, widths, self.strides, c.kernel_size, self.pe.dim, c.modulation_dims, c.activation
        )

    @classmethod
    def scale_widths(cls, config: CNeRVConfig, factor: float) -> CNeRVConfig:
        """Every width (stem, latent, AdaIN MLP, the blocks' lower bound) times `factor`."""
        return dataclasses.replace(
            config,
            stem_channels=scale_width(config.stem_channels, factor),
            channels=scale_width(config.channels, factor),
            lower_width=scale_width(config.lower_width, factor),
            modulation_dims=tuple(scale_width(d, factor) for d in config.modulation_dims),
        )

    def forward(self, frame_idx: Tensor, frames: Tensor | None = None) -> dict[str, Tensor]:
        t = self.pe(self.normalized_time(frame_idx))  # (B, 2L)
        b, hw = len(frame_idx), self.latent_h * self.latent_w
        space = torch.cat([self.pe(self.coords[0]), self.pe(self.coords[1])], dim=-1)  # (hw, 4L)
        x = torch.cat([t[:, None].expand(b, hw, -1), space[None].expand(b, -1, -1)], dim=-1)
        x = self.stem(x.transpose(1, 2).reshape(b, -1, self.latent_h, self.latent_w))
        return {"output": output_activation(self.decoder(x, t), self.config.output_activation)}
