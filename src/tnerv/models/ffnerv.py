"""FFNeRV (Lee et al., ACM MM 2023): multi-resolution temporal grids read at t give the latent; NeRV
blocks decode an independent frame and, at 1/4 resolution, flows and weights that aggregate the
neighbours' independent frames; the output blends the two."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import Tensor, nn

from tnerv.errors import TnervError
from tnerv.models.base import ENCODER, FrameSource, ModelConfig, VideoINR
from tnerv.models.card import ModelCard
from tnerv.models.counting import transmitted_size
from tnerv.models.flow_output import FlowGuidedOutput
from tnerv.models.layers import (
    CompactUpsampleBlock,
    FlowAggregator,
    TemporalGrid,
    UpsampleBlock,
    output_activation,
    reduced_widths,
)
from tnerv.models.registry import register_model
from tnerv.models.scaling import scale_width
from tnerv.models.strides import resolve_strides


# Fewer channels per grid than this leave each grid a near-scalar code; the --size knob stops here.
MIN_GRID_CHANNELS = 4


@dataclass
class FFNeRVConfig(ModelConfig):
    """FFNeRV's architecture; the defaults are its representation config at 1280x720 (about 12.41M)."""

    grid_resolutions: tuple[int, ...] = (64, 128, 256, 512)  # temporal slices of each grid
    grid_channels: int = 39  # per grid: the latent has grid_channels * len(grid_resolutions) (156)
    strides: tuple[int, ...] | str = (5, 2, 2, 2, 2)  # or "auto": derived from the frame size
    num_blocks: int = 5  # used when strides is "auto"
    target_latent_height: int = 9  # used when strides is "auto"
    first_width: int | str = "auto"  # width of the first block; "auto": the latent's (FFNeRV's expansion 1)
    reduction: float = 2.0
    lower_width: int = 96
    kernel_size: int = 3
    conv_type: str = "conv"  # "conv", or "compact": FFNeRV's grouped + 1x1 blocks (its compression configs)
    activation: str = "gelu"
    window: tuple[int, ...] = (-2, -1, 1, 2)  # neighbours aggregated (0 = the frame itself)
    flow_head_block: int = -3  # the flow head reads this block's output (-3: 1/4 resolution)
    output_activation: str = "tanh"  # of the independent frame
    aux_loss_weight: float = 0.1  # loss = w * l(A) + w * l(I) + l(output)
    buffer_dtype: str = "float32"  # the training buffer of independent frames


@register_model
class FFNeRV(FlowGuidedOutput, VideoINR):
    """Frame index in, frame out; the latent is read from temporal grids."""

    name = "ffnerv"
    card = ModelCard(label="FFNeRV", colour="#2ca02c", marker="^", reference_preset="ffnerv-12.4m-720p")
    config_class = FFNeRVConfig
    component_prefixes = {ENCODER: ("frame_buffer",), "grids": ("grids.",)}
    # FFNeRV's reference recipe: Adam (0.5, 0.999), lr 5e-4, 20% warm-up then cosine, 0.7 L1 + 0.3 (1-SSIM).
    post_training_qat = True  # FFNeRV's compression: 8-bit quantisation-aware training, entropy coding
    train_defaults = {"lr": 5e-4, "betas": (0.5, 0.999), "warmup": 0.2, "loss": "fusion", "batch_size": 1}

    def __init__(self, config: FFNeRVConfig):
        super().__init__(config)
        c = config
        self.strides, (self.latent_h, self.latent_w) = resolve_strides(
            c.height, c.width, c.strides, c.num_blocks, c.target_latent_height
        )
        n = len(self.strides)
        self.grids = TemporalGrid(c.grid_resolutions, c.grid_channels, self.latent_h, self.latent_w)
        first = self.grids.out_channels if c.first_width == "auto" else int(c.first_width)
        widths = reduced_widths(first, self.strides, c.reduction, c.lower_width)
        c_in = [self.grids.out_channels, *widths[:-1]]
        if c.conv_type not in ("conv", "compact"):
            raise TnervError(f"unknown conv_type {c.conv_type!r}; available: conv, compact")
        if not -n <= c.flow_head_block < n:
            raise TnervError(f"flow_head_block {c.flow_head_block} is not a block index (there are {n} blocks)")
        self.flow_head_index = c.flow_head_block % n
        aggregator = FlowAggregator(c.window)
        blocks, flow_head = [], None
        for i, (ci, co, s) in enumerate(zip(c_in, widths, self.strides)):
            blocks.append(self._block(ci, co, s))
            if i == self.flow_head_index:
                # Built right after its block, as FFNeRV builds it: the same draws from torch's generator,
                # so that seed_everything(s) gives the official initial weights (tests/test_official_init.py).
                flow_head = nn.Conv2d(co, aggregator.head_channels, 1)
        self.blocks = nn.ModuleList(blocks)
        self.aggregator = aggregator
        self.flow_head = flow_head
        self.frame_head = nn.Conv2d(widths[-1], 5, 1)  # independent frame (3) and blend logits (2)
        self.init_frame_buffer()

    def _block(self, c_in: int, c_out: int, stride: int) -> nn.Module:
        c = self.config
        # FFNeRV's compact configs keep a regular convolution in the stride-5 block.
        if c.conv_type == "compact" and stride != 5:
            return CompactUpsampleBlock(c_in, c_out, stride, c.kernel_size, c.activation)
        return UpsampleBlock(c_in, c_out, stride, c.kernel_size, c.activation)

    @classmethod
    def scale_widths(cls, config: FFNeRVConfig, factor: float) -> FFNeRVConfig:
        """Both components scaled by factor^2, keeping the split (supplementary C.3): the grids'
        channels times factor^2 (rounded, never below MIN_GRID_CHANNELS), and the decoder's widths
        (first block and lower bound, in proportion) chosen so that the decoder takes the rest of
        factor^2 times the config's size. No grid has more slices than the video has frames (slices
        that no frame reads would count in the size)."""
        config = dataclasses.replace(
            config, grid_resolutions=tuple(min(int(r), config.num_frames) for r in config.grid_resolutions)
        )
        total = transmitted_size(cls.name, config)["transmitted"]
        grid_channels = scale_width(config.grid_channels, factor**2, min(MIN_GRID_CHANNELS, config.grid_channels))
        first = config.first_width
        first = config.grid_channels * len(config.grid_resolutions) if first == "auto" else int(first)

        def with_first(width: int) -> FFNeRVConfig:
            lower = scale_width(config.lower_width, width / first)
            return dataclasses.replace(config, grid_channels=grid_channels, first_width=width, lower_width=lower)

        grids = transmitted_size(cls.name, with_first(1))["grids"]
        target = factor**2 * total - grids  # what the decoder may take

        def decoder(width: int) -> int:
            return transmitted_size(cls.name, with_first(width))["decoder"]

        lo, hi = 1, max(2, 2 * round(first * factor))
        while decoder(hi) < target and hi < 1 << 16:
            lo, hi = hi, 2 * hi
        while hi - lo > 1:  # the smallest width whose decoder reaches the target
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if decoder(mid) < target else (lo, mid)
        return with_first(min((lo, hi), key=lambda w: abs(decoder(w) - target)))

    @classmethod
    def scale_decoder(cls, config: FFNeRVConfig, factor: float) -> FFNeRVConfig:
        """The decoder's widths (first block and lower bound) times `factor`, the grids as they are:
        the knob of `tnerv.models.budget.derive_config`, which sizes the grids itself."""
        first = config.first_width
        first = config.grid_channels * len(config.grid_resolutions) if first == "auto" else int(first)
        return dataclasses.replace(
            config, first_width=scale_width(first, factor), lower_width=scale_width(config.lower_width, factor)
        )

    def decode_independent(
        self, frame_idx: Tensor, frames: Tensor | None = None, source: FrameSource | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Independent frame I(t), flow head (B, 3K, h', w') and blend logits (B, 2, H, W)."""
        x = self.grids(self.normalized_time(frame_idx))
        head = None
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.flow_head_index:
                head = self.flow_head(x)
        y = self.frame_head(x)
        return output_activation(y[:, :3], self.config.output_activation), head, y[:, 3:5]
