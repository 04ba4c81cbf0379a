"""E-NeRV (Li et al., ECCV 2022): spatial tokens from PE(x, y) and a temporal embedding from PE(t) are
mixed by two small transformers into the latent; AdaIN driven by a second temporal MLP modulates the
input of every upsampling stage.

AdaIN is the shared layer (a linear map of the temporal feature to scale and shift). E-NeRV's
reference puts a GELU after that linear map and modulates as `x_norm * gamma + beta`; both are the
defaults here (`adain_activation`, `adain_scale_offset`), and neither changes a parameter count. The
blocks' widths are floor-divided (`width // reduction`), as the reference does. The frame index is
normalised as t = i / N, the convention of the whole family here (E-NeRV's own is i / (N - 1))."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tnerv.models.base import ModelConfig, VideoINR
from tnerv.models.card import ModelCard
from tnerv.models.layers import (
    MLP,
    ModulatedDecoder,
    PositionalEncoding,
    TransformerBlock,
    latent_coordinates,
    output_activation,
    reduced_widths,
)
from tnerv.models.registry import register_model
from tnerv.models.scaling import scale_width
from tnerv.models.strides import resolve_strides


@dataclass
class ENeRVConfig(ModelConfig):
    """E-NeRV's architecture; the defaults are its reference config at 1280x720 (about 12.49M parameters)."""

    pe_base: float = 1.25
    pe_levels: int = 80  # PE(t) for both temporal MLPs
    xy_pe_levels: int = 80  # PE of each spatial coordinate of the tokens
    strides: tuple[int, ...] | str = (5, 2, 2, 2, 2)  # or "auto": derived from the frame size
    num_blocks: int = 5  # used when strides is "auto"
    target_latent_height: int = 9  # used when strides is "auto"
    stem_dims: tuple[int, ...] = (512,)  # temporal MLP PE(t) -> ... -> token_dim
    token_dim: int = 256  # width of the spatial tokens ("block_dim")
    mlp_dim: int = 128  # feed-forward width of both transformer blocks
    heads: tuple[int, int] = (1, 8)  # attention heads of the first and second transformer block
    head_dim: int = 64
    channels: int = 196  # latent channels after the tokens' last linear map ("fc_dim")
    expansion: float = 3.0  # the first stage widens the latent to int(channels * expansion)
    reduction: float = 2.0
    lower_width: int = 96
    kernel_size: int = 3
    modulation_dims: tuple[int, ...] = (128, 128)  # second temporal MLP; its output drives every AdaIN
    adain_activation: str = "gelu"  # after AdaIN's linear map (the reference's); "none": no activation
    adain_scale_offset: float = 0.0  # x_norm * (offset + gamma) + beta: 0 is the reference's, 1 starts at identity
    width_rounding: str = "floor"  # "floor": width // reduction (the reference's); "round": round(width / reduction)
    activation: str = "gelu"
    output_activation: str = "sigmoid"


@register_model
class ENeRV(VideoINR):
    """Frame index in, frame out; the latent is a transformer's mix of spatial and temporal context."""

    name = "enerv"
    card = ModelCard(label="E-NeRV", colour="#e377c2", marker="D", reference_preset="enerv-12.5m-720p")
    config_class = ENeRVConfig
    # E-NeRV's reference recipe: Adam (0.5, 0.999), lr 5e-4, 20% warm-up then cosine, 0.7 L1 + 0.3 (1-SSIM).
    train_defaults = {"lr": 5e-4, "betas": (0.5, 0.999), "warmup": 0.2, "loss": "fusion", "batch_size": 1}

    def __init__(self, config: ENeRVConfig):
        super().__init__(config)
        c = config
        self.strides, (self.latent_h, self.latent_w) = resolve_strides(
            c.height, c.width, c.strides, c.num_blocks, c.target_latent_height
        )
        self.pe = PositionalEncoding(c.pe_base, c.pe_levels)
        self.xy_pe = PositionalEncoding(c.pe_base, c.xy_pe_levels)
        self.register_buffer("coords", latent_coordinates(self.latent_h, self.latent_w), persistent=False)

        self.time_mlp = MLP([self.pe.dim, *c.stem_dims, c.token_dim], c.activation)
        self.token_mlp = MLP([2 * self.xy_pe.dim, c.token_dim], c.activation)
        self.spatial_transformer = TransformerBlock(c.token_dim, c.heads[0], c.head_dim, c.mlp_dim)
        self.fused_transformer = TransformerBlock(c.token_dim, c.heads[1], c.head_dim, c.mlp_dim)
        self.to_latent = MLP([c.token_dim, c.channels], c.activation) if c.token_dim != c.channels else nn.Identity()

        widths = reduced_widths(
            int(c.channels * c.expansion), self.strides, c.reduction, c.lower_width, c.width_rounding
        )
        self.decoder = ModulatedDecoder(
            c.channels, widths, self.strides, c.kernel_size, self.pe.dim, c.modulation_dims, c.activation,
            c.adain_activation, c.adain_scale_offset,
        )

    @classmethod
    def scale_widths(cls, config: ENeRVConfig, factor: float) -> ENeRVConfig:
        """Every width (MLPs, tokens, attention, latent, the blocks' lower bound) times `factor`."""
        scaled = lambda dims: tuple(scale_width(d, factor) for d in dims)  # noqa: E731
        return dataclasses.replace(
            config,
            stem_dims=scaled(config.stem_dims),
            token_dim=scale_width(config.token_dim, factor),
            mlp_dim=scale_width(config.mlp_dim, factor),
            head_dim=scale_width(config.head_dim, factor),
            channels=scale_width(config.channels, factor),
            lower_width=scale_width(config.lower_width, factor),
            modulation_dims=scaled(config.modulation_dims),
        )

    def forward(self, frame_idx: Tensor, frames: Tensor | None = None) -> dict[str, Tensor]:
        t = self.pe(self.normalized_time(frame_idx))
        # The spatial tokens do not depend on t: one pass, shared by the batch.
        tokens = self.token_mlp(torch.cat([self.xy_pe(self.coords[0]), self.xy_pe(self.coords[1])], dim=-1))
        tokens = self.spatial_transformer(tokens[None])
        x = self.to_latent(self.fused_transformer(tokens * self.time_mlp(t)[:, None]))
        x = x.transpose(1, 2).reshape(len(frame_idx), -1, self.latent_h, self.latent_w)
        return {"output": output_activation(self.decoder(x, t), self.config.output_activation)}
