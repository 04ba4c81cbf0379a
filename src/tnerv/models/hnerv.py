"""HNeRV (Chen et al., CVPR 2023): a tiny ConvNeXt encodes each frame into a small embedding (transmitted);
a 1x1 convolution widens it and HNeRV blocks (kernels 1, 3, 5, 5, 5; widths divided by 1.2 per block)
decode the frame.

HNeRV's reference only fits 2:1 video (strides 5,4,4,3,2 from a 2x4 embedding at 960x1920). Here the
embedding's shape follows the strides, explicit or "auto" (derived from any frame size): 16x9x16 with
strides 5,2,2,2,2 at 1280x720 (supplementary C.2). The decoder's first width `channels` ("fc_dim") is
what the size solver sets to meet a budget, as HNeRV's reference solves it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from tnerv.errors import TnervError
from tnerv.models.base import ENCODER, FrameSource, ModelConfig, VideoINR
from tnerv.models.card import ModelCard
from tnerv.models.embeddings import EncodedEmbeddings
from tnerv.models.layers import (
    ConvNeXtEncoder,
    UpsampleBlock,
    growing_kernel_sizes,
    make_activation,
    output_activation,
    reduced_widths,
)
from tnerv.models.registry import register_model
from tnerv.models.scaling import scale_width
from tnerv.models.strides import config_geometry, resolve_strides


@dataclass
class HNeRVConfig(ModelConfig):
    """HNeRV's architecture; the defaults are its 3.0M model for 600 frames of 1920x960."""

    height: int = 960
    width: int = 1920
    strides: tuple[int, ...] | str = (5, 4, 4, 3, 2)  # encoder and decoder; or "auto": from the frame size
    num_blocks: int = 5  # used when strides is "auto"
    target_latent_height: int = 2  # used when strides is "auto"
    embed_channels: int = 16
    encoder_width: int = 64  # ConvNeXt width of every stage but the last (which has embed_channels)
    encoder_blocks: int = 1  # ConvNeXt blocks per stage
    channels: int = 92  # width after the embedding's 1x1 convolution ("fc_dim"); solved for a budget
    block_channels: tuple[int, ...] | str = "auto"  # output widths of the blocks; "auto": HNeRV's rule below
    reduction: float = 1.2  # "auto" widths: every block divides the width by this, rounded...
    lower_width: int = 12  # ...but not below this
    width_rounding: str = "round"  # "round": round(width / reduction), the reference's; or "floor"
    first_kernel_size: int = 1  # block i has kernel min(first + 2i, max)
    max_kernel_size: int = 5
    head_kernel_size: int = 3
    activation: str = "gelu"
    output_activation: str = "tanh"


def block_widths(config: HNeRVConfig, strides: tuple[int, ...]) -> tuple[int, ...]:
    """Output widths of HNeRV's (and DNeRV's) blocks: explicit, or HNeRV's rule: every upsampling
    block, the first included, divides the width by `reduction` (rounded as `width_rounding` says, at
    least `lower_width`)."""
    if config.block_channels == "auto":
        args = (config.channels, (1, *strides), config.reduction, config.lower_width, config.width_rounding)
        return tuple(reduced_widths(*args)[1:])
    widths = tuple(int(w) for w in config.block_channels)
    if len(widths) != len(strides):
        raise TnervError(f"block_channels has {len(widths)} widths for {len(strides)} upsampling blocks")
    return widths


def scale_decoder(config: Any, strides: tuple[int, ...], factor: float) -> Any:
    """The decoder's widths (the first and every block's) times `factor`. The blocks' widths are
    scaled one by one, so that the size moves in small steps (a budget is met closely)."""
    widths = block_widths(config, strides)
    return dataclasses.replace(
        config,
        channels=scale_width(config.channels, factor),
        block_channels=tuple(scale_width(w, factor) for w in widths),
    )


@register_model
class HNeRV(EncodedEmbeddings, VideoINR):
    """Frame in (while encoding), frame out; the decoder reads one small embedding per frame."""

    name = "hnerv"
    card = ModelCard(
        label="HNeRV", colour="#1f77b4", marker="s", reference_preset="hnerv-3.0m-960p", content_aware=True,
        settings={"setting2": {"strides": (5, 4, 4, 3, 2)}},  # its own 2x4 embedding in its own setting (C.3)
    )
    config_class = HNeRVConfig
    needs_frames = True
    component_prefixes = {ENCODER: ("encoder.", "embeddings_fresh"), "embeddings": ("embeddings",)}
    latent_names = ("embeddings",)  # computed by the encoder, transmitted: compression quantises them
    # HNeRV's compression: 8-bit weights, 6-bit embeddings, then entropy coding.
    post_training_bits = {"decoder": 8, "grids": 8, "embeddings": 6}
    # HNeRV's reference recipe: Adam (default betas), lr 1e-3, 10% warm-up from 0.1x then cosine, L2.
    train_defaults = {
        "lr": 1e-3, "betas": (0.9, 0.999), "warmup": 0.1, "warmup_start": 0.1, "loss": "l2", "batch_size": 1,
    }

    def __init__(self, config: HNeRVConfig, with_encoder: bool = True):
        super().__init__(config)
        c = config
        self.strides, (self.latent_h, self.latent_w) = resolve_strides(
            c.height, c.width, c.strides, c.num_blocks, c.target_latent_height
        )
        n = len(self.strides)
        self.encoder = None
        if with_encoder:
            self.encoder = ConvNeXtEncoder(
                self.strides, (c.encoder_width,) * (n - 1) + (c.embed_channels,), (c.encoder_blocks,) * n
            )
        self.init_embeddings({"embeddings": (c.embed_channels, self.latent_h, self.latent_w)}, with_encoder)
        self.stem = nn.Sequential(nn.Conv2d(c.embed_channels, c.channels, 1), make_activation(c.activation))
        widths = block_widths(c, self.strides)
        kernels = growing_kernel_sizes(n, c.first_kernel_size, c.max_kernel_size)
        c_in = [c.channels, *widths[:-1]]
        self.blocks = nn.Sequential(
            *(UpsampleBlock(ci, co, s, k, c.activation) for ci, co, s, k in zip(c_in, widths, self.strides, kernels))
        )
        self.head = nn.Conv2d(widths[-1], 3, c.head_kernel_size, padding=c.head_kernel_size // 2)

    @classmethod
    def scale_widths(cls, config: HNeRVConfig, factor: float) -> HNeRVConfig:
        """The decoder's widths times `factor`; the embedding's shape depends on the frame size only (as
        in HNeRV's reference), so the decoder takes the rest of a budget."""
        return scale_decoder(config, config_geometry(config)[0], factor)

    def compute_embeddings(
        self, frame_idx: Tensor, frames: Tensor | None, source: FrameSource | None
    ) -> dict[str, Tensor]:
        return {"embeddings": self.encoder(frames if frames is not None else source(frame_idx))}

    def forward(self, frame_idx: Tensor, frames: Tensor | None = None) -> dict[str, Tensor]:
        emb = self.latent("embeddings", self.embeddings_for(frame_idx, frames)["embeddings"])
        x = self.blocks(self.stem(emb))
        return {"output": output_activation(self.head(x), self.config.output_activation)}
