"""DNeRV (Zhao et al., CVPR 2023): HNeRV's content stream plus a difference stream. The differences of
each frame to its previous and next frame are encoded into a small difference embedding (transmitted,
counted in the size), decoded by one upsampling block, and merged into the content stream by the
collaborative content unit (a gated fusion) after one of the content blocks.

Where the difference stream meets the content stream follows from the geometry: the difference
embedding has the content's resolution after block `fusion_block`, divided by `diff_decoder_stride`
(2x40x80 at 1920x960 in the reference; 2x10x20 with fusion after the second block in the 3M setting
and 2x45x80 at 1280x720, supplementary C.2/C.3).

DNeRV's reference encoders are not HNeRV's ConvNeXt: every stage is conv (kernel = stride) ->
LayerNorm -> a ConvNeXt block without LayerNorm and layer scale, all stages `encoder_width` wide, then
a 1x1 convolution to the embedding; default initialisation; the difference encoder reads the two
differences' channels interleaved. `encoder_style = "dnerv"` (the default) builds those; "hnerv" builds
HNeRV's encoder. The blocks' widths are floor-divided (`width // 1.2`) and have no lower bound."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tnerv.errors import TnervError
from tnerv.models.base import ENCODER, FrameSource, ModelConfig, VideoINR
from tnerv.models.card import ModelCard
from tnerv.models.embeddings import EncodedEmbeddings
from tnerv.models.hnerv import block_widths, scale_decoder
from tnerv.models.layers import (
    ConvNeXtEncoder,
    GatedFusion,
    UpsampleBlock,
    growing_kernel_sizes,
    output_activation,
)
from tnerv.models.registry import register_model
from tnerv.models.strides import MAX_STRIDE, config_geometry, resolve_strides, split_into_strides


ENCODER_STYLES = ("dnerv", "hnerv")
# ConvNeXtEncoder's options for DNeRV's reference encoders (see the module's docstring).
DNERV_ENCODER = {"layer_scale": 0.0, "block_norm": False, "norm_after_conv": True, "convnext_init": False}


@dataclass
class DNeRVConfig(ModelConfig):
    """DNeRV's architecture; the defaults are its reference model at 1920x960, layer for layer the
    official cfgs/DNeRV.yaml (difference embeddings 2x40x80, fusion after the third block; decoder
    3,405,368 parameters; DNeRV's paper leaves the difference embeddings out of its size)."""

    height: int = 960
    width: int = 1920
    strides: tuple[int, ...] | str = (5, 4, 4, 3, 2)  # content encoder and decoder; or "auto"
    num_blocks: int = 5  # used when strides is "auto"
    target_latent_height: int = 2  # used when strides is "auto"
    embed_channels: int = 16  # content embedding (HNeRV's)
    encoder_width: int = 64
    encoder_blocks: int = 1
    encoder_style: str = "dnerv"  # both encoders: "dnerv" (the reference's) or "hnerv" (HNeRV's ConvNeXt)
    diff_channels: int = 2  # difference embedding
    diff_encoder_width: int = 64
    diff_encoder_stages: int = 3  # at least; more where the difference stream's stride product needs them
    diff_decoder_stride: int | str = 4  # its one upsampling block; "auto": the largest <= 4 that fits
    diff_kernel_size: int = 3
    fusion_block: int = 2  # the content unit merges the streams after this content block (0-based)
    channels: int = 92  # width after the content embedding's 1x1 convolution ("c2"); solved for a budget
    block_channels: tuple[int, ...] | str = "auto"  # content blocks' widths; "auto": HNeRV's rule
    reduction: float = 1.2
    lower_width: int = 1  # the reference has no lower bound
    width_rounding: str = "floor"  # "floor": width // reduction (the reference's); "round": round(width / reduction)
    first_kernel_size: int = 1  # content block i has kernel min(first + 2i, max), as HNeRV
    max_kernel_size: int = 5
    head_kernel_size: int = 3
    activation: str = "gelu"
    output_activation: str = "sigmoid"

    def follow_frames(self, reference: ModelConfig, given: Collection[str]) -> DNeRVConfig:
        """The difference embedding keeps its relation to the frame size (`_keep_difference_scale`) unless
        the fusion point is given."""
        return self if "fusion_block" in given else _keep_difference_scale(self, reference)


def diff_geometry(
    config: DNeRVConfig, strides: tuple[int, ...], latent: tuple[int, int]
) -> tuple[tuple[int, ...], tuple[int, int], int]:
    """The difference encoder's strides, the difference embedding's (h, w) and the difference decoder's
    stride for a content geometry."""
    c, n = config, len(strides)
    if not 0 <= c.fusion_block < n:
        raise TnervError(f"fusion_block {c.fusion_block} is not a content block index (there are {n} blocks)")
    up = math.prod(strides[: c.fusion_block + 1])
    h, w = latent[0] * up, latent[1] * up
    stride = c.diff_decoder_stride
    if stride == "auto":
        stride = next(s for s in (4, 3, 2, 1) if h % s == 0 and w % s == 0)
    if h % int(stride) or w % int(stride):
        raise TnervError(
            f"DNeRV: the content stream is {h}x{w} after block {c.fusion_block}, not divisible by "
            f"diff_decoder_stride {stride}; choose another fusion_block or diff_decoder_stride (or \"auto\")"
        )
    dh, dw = h // int(stride), w // int(stride)
    product = c.height // dh
    for stages in range(max(1, c.diff_encoder_stages), 9):
        diff_strides = split_into_strides(product, stages)
        if diff_strides is not None:
            return diff_strides, (dh, dw), int(stride)
    raise TnervError(f"DNeRV: no difference encoder reaches {dh}x{dw} from {c.height}x{c.width} with strides <= 5")


def _keep_difference_scale(config: ModelConfig, reference: ModelConfig) -> ModelConfig:
    """The fusion block and difference-decoder stride whose difference embedding has the
    height ratio to the frame closest to the reference's (ties: the reference's fusion block). The
    stride goes up to MAX_STRIDE, as the content blocks': with 4 at most, a frame whose content stream
    is 45x80 after its first block (90x160) could only get a difference embedding of 45x80, half the
    frame's height instead of a 16th, 25 times the parameters per frame."""
    ref_strides, ref_latent = config_geometry(reference)
    target = diff_geometry(reference, ref_strides, ref_latent)[1][0] / reference.height
    strides, latent = config_geometry(config)
    best = None
    for fusion in range(len(strides)):
        for stride in range(MAX_STRIDE, 0, -1):
            candidate = dataclasses.replace(config, fusion_block=fusion, diff_decoder_stride=stride)
            try:
                dh = diff_geometry(candidate, strides, latent)[1][0]
            except TnervError:
                continue
            score = (abs(math.log(dh / config.height / target)), abs(fusion - reference.fusion_block), -stride)
            if best is None or score < best[0]:
                best = (score, candidate)
    return best[1] if best else config


@register_model
class DNeRV(EncodedEmbeddings, VideoINR):
    """Frame in (while encoding; its neighbours too), frame out."""

    name = "dnerv"
    card = ModelCard(
        label="DNeRV", colour="#ff7f0e", marker="P", reference_preset="dnerv-3.0m-960p", content_aware=True,
        # Where the difference stream joins the content stream. Setting 2 (C.3): HNeRV's 2x4 embedding and a
        # 2x10x20 difference embedding, joining after the second content block. At 1080p (inferred): the
        # difference embedding stays 2x45x80 as at 720p, joining at 135x240.
        settings={
            "setting1": {"fusion_block": 2, "diff_decoder_stride": 4},
            "setting2": {"strides": (5, 4, 4, 3, 2), "fusion_block": 1, "diff_decoder_stride": 4},
            "davis": {"fusion_block": 1, "diff_decoder_stride": 3},
            "mcl-jcv": {"fusion_block": 2, "diff_decoder_stride": 4},
            "uvg-1080p": {"fusion_block": 1, "diff_decoder_stride": 3},
        },
    )
    config_class = DNeRVConfig
    needs_frames = True
    component_prefixes = {
        ENCODER: ("encoder.", "diff_encoder.", "diff_embed.", "embeddings_fresh"),
        "embeddings": ("embeddings",),
    }
    # DNeRV compresses as HNeRV: 8-bit weights, 6-bit embeddings, then entropy coding.
    post_training_bits = {"decoder": 8, "grids": 8, "embeddings": 6}
    latent_names = ("embeddings", "embeddings_diff")  # computed by the encoders, transmitted
    # DNeRV's reference recipe: Adam (0.5, 0.999), lr 5e-4, 20% warm-up then cosine, L2, gradient norm clipped at 0.1.
    train_defaults = {
        "lr": 5e-4, "betas": (0.5, 0.999), "warmup": 0.2, "loss": "l2", "grad_clip": 0.1, "batch_size": 1,
    }

    def __init__(self, config: DNeRVConfig, with_encoder: bool = True):
        super().__init__(config)
        c = config
        self.strides, (self.latent_h, self.latent_w) = resolve_strides(
            c.height, c.width, c.strides, c.num_blocks, c.target_latent_height
        )
        n = len(self.strides)
        self.diff_strides, (self.diff_h, self.diff_w), diff_up = diff_geometry(
            c, self.strides, (self.latent_h, self.latent_w)
        )
        if c.encoder_style not in ENCODER_STYLES:
            raise TnervError(f"unknown encoder_style {c.encoder_style!r}; available: {', '.join(ENCODER_STYLES)}")
        self.encoder = self.diff_encoder = self.diff_embed = None
        if with_encoder:
            k = len(self.diff_strides)
            if c.encoder_style == "dnerv":
                self.encoder = ConvNeXtEncoder(
                    self.strides, (c.encoder_width,) * n, (c.encoder_blocks,) * n, out_channels=c.embed_channels,
                    **DNERV_ENCODER,
                )
                self.diff_encoder = ConvNeXtEncoder(
                    self.diff_strides, (c.diff_encoder_width,) * k, (1,) * k, in_channels=6, **DNERV_ENCODER
                )
            else:
                self.encoder = ConvNeXtEncoder(
                    self.strides, (c.encoder_width,) * (n - 1) + (c.embed_channels,), (c.encoder_blocks,) * n
                )
                self.diff_encoder = ConvNeXtEncoder(
                    self.diff_strides, (c.diff_encoder_width,) * k, (1,) * k, in_channels=6
                )
            self.diff_embed = nn.Conv2d(c.diff_encoder_width, c.diff_channels, 1)
        self.init_embeddings(
            {
                "embeddings": (c.embed_channels, self.latent_h, self.latent_w),
                "embeddings_diff": (c.diff_channels, self.diff_h, self.diff_w),
            },
            with_encoder,
        )
        self.stem = nn.Conv2d(c.embed_channels, c.channels, 1)
        widths = block_widths(c, self.strides)
        kernels = growing_kernel_sizes(n, c.first_kernel_size, c.max_kernel_size)
        c_in = [c.channels, *widths[:-1]]
        self.blocks = nn.ModuleList(
            UpsampleBlock(ci, co, s, k, c.activation) for ci, co, s, k in zip(c_in, widths, self.strides, kernels)
        )
        f = c.fusion_block
        self.diff_decoder = nn.Sequential(
            nn.Conv2d(c.diff_channels, c_in[f], 1),
            UpsampleBlock(c_in[f], widths[f], diff_up, c.diff_kernel_size, c.activation),
        )
        self.fusion = GatedFusion(widths[f])
        self.head = nn.Conv2d(widths[-1], 3, c.head_kernel_size, padding=c.head_kernel_size // 2)

    @classmethod
    def scale_widths(cls, config: DNeRVConfig, factor: float) -> DNeRVConfig:
        """The decoder's widths times `factor`; the embeddings' shapes follow the frame size (C.2)."""
        return scale_decoder(config, config_geometry(config)[0], factor)

    def compute_embeddings(
        self, frame_idx: Tensor, frames: Tensor | None, source: FrameSource | None
    ) -> dict[str, Tensor]:
        if source is None:
            raise TnervError(
                "DNeRV's difference encoder reads each frame's neighbours: pass the video "
                "(fit, reconstruct(idx, frames) or encode_frames(frames) do)"
            )
        frames = source(frame_idx) if frames is None else frames
        last = self.config.num_frames - 1
        prev = source((frame_idx - 1).clamp(0, last)).to(frames)
        nxt = source((frame_idx + 1).clamp(0, last)).to(frames)
        # The first/last frame is its own neighbour. The reference interleaves the two differences'
        # channels (prev R, next R, prev G, ...); HNeRV style keeps them in two blocks.
        diff = torch.stack([frames - prev, nxt - frames], dim=2 if self.config.encoder_style == "dnerv" else 1)
        diff = diff.flatten(1, 2)
        return {"embeddings": self.encoder(frames), "embeddings_diff": self.diff_embed(self.diff_encoder(diff))}

    def forward(self, frame_idx: Tensor, frames: Tensor | None = None) -> dict[str, Tensor]:
        emb = {name: self.latent(name, value) for name, value in self.embeddings_for(frame_idx, frames).items()}
        x, diff = self.stem(emb["embeddings"]), self.diff_decoder(emb["embeddings_diff"])
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.config.fusion_block:
                x = self.fusion(x, diff)
        return {"output": output_activation(self.head(x), self.config.output_activation)}
