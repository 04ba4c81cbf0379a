"""NeRV (Chen et al., NeurIPS 2021): PE(t) -> MLP stem -> NeRV upsampling blocks -> 1x1 head."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from torch import Tensor, nn

from tnerv.models.base import ModelConfig, VideoINR
from tnerv.models.card import ModelCard
from tnerv.models.counting import shapes_only
from tnerv.models.layers import MLP, PositionalEncoding, UpsampleBlock, output_activation, reduced_widths
from tnerv.models.registry import register_model
from tnerv.models.scaling import scale_width
from tnerv.models.strides import resolve_strides


@dataclass
class NeRVConfig(ModelConfig):
    """NeRV's architecture; the defaults are NeRV-L at 1280x720 (about 12.57M parameters)."""

    pe_base: float = 1.25
    pe_levels: int = 80
    stem_dims: tuple[int, ...] = (512,)
    channels: int = 112  # the stem's output channels at the latent resolution ("fc_dim")
    strides: tuple[int, ...] | str = (5, 2, 2, 2, 2)  # or "auto": derived from the frame size
    num_blocks: int = 5  # used when strides is "auto"
    target_latent_height: int = 9  # used when strides is "auto"
    expansion: float = 1.0  # the first block's output width is int(channels * expansion)
    reduction: float = 2.0
    lower_width: int = 96
    kernel_size: int = 3
    activation: str = "gelu"
    output_activation: str = "tanh"


def _stem_share(config: NeRVConfig) -> float:
    """The MLP stem's fraction of NeRV's parameters."""
    with shapes_only():
        model = NeRV(config)
    stem = sum(p.numel() for p in model.stem.parameters())
    return stem / sum(p.numel() for p in model.parameters())


@register_model
class NeRV(VideoINR):
    """Frame index in, frame out: all of the video is in the weights."""

    name = "nerv"
    card = ModelCard(label="NeRV", colour="#8c564b", marker="X", reference_preset="nerv-12.5m-720p")
    config_class = NeRVConfig
    # NeRV's reference recipe: Adam (0.5, 0.999), lr 5e-4, 20% warm-up then cosine, L1+SSIM loss.
    train_defaults = {"lr": 5e-4, "betas": (0.5, 0.999), "warmup": 0.2, "loss": "fusion", "batch_size": 1}
    # NeRV's compression: global magnitude pruning (40%, one of its paper's points), fine-tuning,
    # 8-bit quantisation, entropy coding.
    post_training_prune = 0.4

    def __init__(self, config: NeRVConfig):
        super().__init__(config)
        self.strides, (self.latent_h, self.latent_w) = resolve_strides(
            config.height, config.width, config.strides, config.num_blocks, config.target_latent_height
        )
        self.pe = PositionalEncoding(config.pe_base, config.pe_levels)
        stem_out = config.channels * self.latent_h * self.latent_w
        self.stem = MLP([self.pe.dim, *config.stem_dims, stem_out], config.activation)
        first = int(config.channels * config.expansion)
        widths = reduced_widths(first, self.strides, config.reduction, config.lower_width)
        c_in = [config.channels, *widths[:-1]]
        self.blocks = nn.Sequential(
            *(
                UpsampleBlock(ci, co, s, config.kernel_size, config.activation)
                for ci, co, s in zip(c_in, widths, self.strides)
            )
        )
        self.head = nn.Conv2d(widths[-1], 3, 1)

    @classmethod
    def scale_widths(cls, config: NeRVConfig, factor: float) -> NeRVConfig:
        """Every width (stem MLP, latent channels, the blocks' lower bound) times `factor`."""
        return dataclasses.replace(
            config,
            stem_dims=tuple(scale_width(d, factor) for d in config.stem_dims),
            channels=scale_width(config.channels, factor),
            lower_width=scale_width(config.lower_width, factor),
        )

    @classmethod
    def match_decoder_split(cls, config: NeRVConfig, reference: NeRVConfig) -> NeRVConfig:
        """The config with its MLP stem widened or narrowed so that the stem takes the same share of
        the model as in `reference` (another geometry makes the convolutions smaller or larger than
        the stem: 4 blocks of stride 2 at 144x256 against 5,2,2,2,2 at 720p); `scale_widths` then keeps it."""
        target = _stem_share(reference)

        def with_stem(g: float) -> NeRVConfig:
            return dataclasses.replace(config, stem_dims=tuple(scale_width(d, g) for d in config.stem_dims))

        lo, hi = 1e-3, 1e3
        for _ in range(40):
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if _stem_share(with_stem(mid)) < target else (lo, mid)
        return with_stem(hi)

    def forward(self, frame_idx: Tensor, frames: Tensor | None = None) -> dict[str, Tensor]:
        x = self.stem(self.pe(self.normalized_time(frame_idx)))
        x = x.view(-1, self.config.channels, self.latent_h, self.latent_w)
        x = self.head(self.blocks(x))
        return {"output": output_activation(x, self.config.output_activation)}
