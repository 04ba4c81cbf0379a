"""T-NeRV (Saethre, Azevedo, Schroers, CVPR 2024): frame embeddings from a ConvNeXt encoder with
temporal augmentation, plus GOP features from multi-resolution temporal grids, decoded by
AdaIN-modulated upsampling blocks with FFNeRV's flow-guided aggregation.

What is transmitted (and counted in the size): the decoder (Temp. MLP, Pre-Block, T-NeRV blocks,
heads), the grids, and one embedding e_t per frame. The encoder side (ConvNeXt, temporal
augmentation MLP, per-frame weights) and the training-only buffers are not.

Every choice the paper leaves open is a config field whose default is the inference (TNeRVConfig).
docs/models.md ("T-NeRV") lists what the supplementary's Tabs. 2 and 6-8 state and what is inferred.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tnerv.errors import TnervError
from tnerv.models.base import ENCODER, FrameSource, ModelConfig, VideoINR
from tnerv.models.card import ModelCard
from tnerv.models.counting import shapes_only
from tnerv.models.embeddings import EncodedEmbeddings
from tnerv.models.flow_output import FlowGuidedOutput
from tnerv.models.layers import (
    MLP,
    ConvNeXtEncoder,
    FlowAggregator,
    ModulatedUpsampleBlock,
    PositionalEncoding,
    TemporalGrid,
    growing_kernel_sizes,
    make_activation,
    output_activation,
)
from tnerv.models.registry import register_model
from tnerv.models.strides import resolve_strides

log = logging.getLogger(__name__)

CONV_TYPES = ("hnerv", "regular")


@dataclass
class TNeRVConfig(ModelConfig):
    """T-NeRV's architecture; the defaults are the 12.4M configuration at 1280x720 (Tab. 6).

    Fields marked "inferred" are not stated by the paper or its supplementary; the default is the
    inference documented in docs/models.md."""

    # Geometry: the latent's (h, w) is the frame size divided by the product of the strides.
    strides: tuple[int, ...] | str = (5, 2, 2, 2, 2)  # or "auto": derived from the frame size
    num_blocks: int = 5  # used when strides is "auto"
    target_latent_height: int = 9  # used when strides is "auto"
    pe_base: float = 1.25  # PE(b, L) of t for the temporal augmentation and the Temp. MLP
    pe_levels: int = 80
    activation: str = "gelu"

    # Frame embeddings e_t = S + S * (w_t * T(t)) (transmitted), from the encoder side (not transmitted).
    frame_embeddings: bool = True  # False: ablation E2 (grids only)
    embed_channels: int = 35
    encoder_channels: tuple[int, ...] = (64, 128, 256, 512)  # ConvNeXt stage widths; the last stage has embed_channels
    encoder_blocks: tuple[int, ...] = (3, 3, 9, 6, 3)  # ConvNeXt blocks per stage (one stage per stride)
    encoder_layer_scale: float = 1e-6
    temporal_augmentation: bool = True  # False: ablation E3 (e_t = S)
    augment_dims: tuple[int, ...] = (512, 512)  # hidden widths of PE -> MLP -> C*h*w
    augment_act_last: bool = False  # inferred: no activation after the MLP's last layer
    frame_weight_init: float = 1.0  # inferred: one learned scalar w_t per frame, initialised to this

    # GOP features: multi-resolution temporal grids (transmitted).
    grids: bool = True  # False: ablation E1 (embeddings only)
    grid_resolutions: tuple[int, ...] = (64, 128, 256)
    grid_channels: int = 30  # per grid; the latent gets grid_channels * len(grid_resolutions)

    # Decoder (transmitted).
    temp_mlp_dims: tuple[int, ...] = (256, 256, 128)  # PE -> MLP; the last width conditions every AdaIN
    temp_mlp_act_last: bool = True  # inferred: activation after every layer, as NeRV's and E-NeRV's MLPs
    adain: bool = True  # False: ablation D2
    pre_channels: int = 231
    pre_kernel_size: int = 1  # inferred: a 1x1 Pre-Block fits the parameter split of Tab. 8 best
    block_channels: tuple[int, ...] | str = "auto"  # "auto": max(round(pre_channels / reduction**i), lower_width)
    reduction: float = 1.2
    lower_width: int = 12
    # inferred "hnerv": block i has kernel min(2i + 1, max_kernel_size) = 1,3,5,5,5; "regular" (D3): all max_kernel_size
    conv_type: str = "hnerv"
    max_kernel_size: int = 5
    flow: bool = True  # False: ablation D1 (no flow heads, output = independent frame)
    window: tuple[int, ...] = (-2, -1, 1, 2)  # neighbours aggregated by the flow-guided decoder
    flow_head_block: int = -3  # the flow head reads this block's output (index; -3 = block 3 of 5, 1/4 res)
    output_activation: str = "tanh"  # of the independent frame I(t): (tanh + 1) / 2, as FFNeRV
    aux_loss_weight: float = 0.1  # inferred (FFNeRV): loss = w * l(A) + w * l(I) + l(output)
    buffer_dtype: str = "float16"  # the training buffer of independent frames, half precision as FFNeRV keeps it

    ablations: tuple[str, ...] = ()  # E1-E5, D1-D3 (apply_ablations); the model applies them over the fields above


# Supplementary Tab. 2.
ABLATIONS = {
    "E1": "embeddings only (no grids)",
    "E2": "grids only (no frame embeddings)",
    "E3": "no temporal augmentation",
    "E4": "HNeRV's tiny ConvNeXt encoder",
    "E5": "E4 + E3",
    "D1": "no flow-guided decoder",
    "D2": "no AdaIN",
    "D3": "regular 5x5 convolutions",
}


# Where an ablation at a fixed size moves the budget (TNeRV.ablate_at_budget); every other width keeps
# the full model's. E1/E2: the removed input's parameters go to the one that is left, so that the latent
# keeps its size and the decoder stays the same network (the ablation compares the inputs). D1-D3: the
# decoder itself changed, so its widths (Pre-Block and blocks) are solved to the budget again. E3-E5
# change only the encoder side, which is not transmitted: nothing moves.
LATENT_TRANSFERS = {"E1": ("grids", "embeddings"), "E2": ("embeddings", "grids")}
DECODER_ABLATIONS = frozenset({"D1", "D2", "D3"})
WIDTH_FIELDS = ("embed_channels", "grid_channels", "pre_channels", "block_channels")


def _num_blocks(config: TNeRVConfig) -> int:
    return config.num_blocks if config.strides == "auto" else len(config.strides)


def apply_ablations(config: TNeRVConfig, names: list[str] | tuple[str, ...]) -> TNeRVConfig:
    """The config with the ablations of supplementary Tab. 2 applied (E1-E5, D1-D3), recorded in
    `ablations`. Ablations combine; E1 with E2, and E2 with E3/E4/E5, are errors."""
    all_names = tuple(dict.fromkeys(str(n).strip().upper() for n in (*config.ablations, *names)))
    unknown = [n for n in all_names if n not in ABLATIONS]
    if unknown:
        known = ", ".join(f"{k} ({v})" for k, v in ABLATIONS.items())
        raise TnervError(f"unknown T-NeRV ablation {unknown[0]!r}; available: {known}")
    chosen = set(all_names)
    if {"E1", "E2"} <= chosen:
        raise TnervError(
            "ablations E1 (no grids) and E2 (no frame embeddings) conflict: the decoder would have no input"
        )
    clash = sorted(chosen & {"E3", "E4", "E5"})
    if "E2" in chosen and clash:
        raise TnervError(
            f"ablation E2 removes the frame embeddings, so {clash[0]} ({ABLATIONS[clash[0]]}) does not apply"
        )
    n = _num_blocks(config)
    tiny_encoder = {"encoder_channels": (64,) * (n - 1), "encoder_blocks": (1,) * n}  # HNeRV's: width 64, 1 block
    fields: dict[str, dict[str, Any]] = {
        "E1": {"grids": False},
        "E2": {"frame_embeddings": False},
        "E3": {"temporal_augmentation": False},
        "E4": tiny_encoder,
        "E5": {**tiny_encoder, "temporal_augmentation": False},
        "D1": {"flow": False},
        "D2": {"adain": False},
        "D3": {"conv_type": "regular", "max_kernel_size": 5},
    }
    changes: dict[str, Any] = {"ablations": all_names}
    for name in all_names:
        changes.update(fields[name])
    return dataclasses.replace(config, **changes)


def block_widths(config: TNeRVConfig, num_blocks: int) -> tuple[int, ...]:
    """Output channels of the T-NeRV blocks: explicit, or round(pre_channels / reduction**i)."""
    if config.block_channels == "auto":
        return tuple(
            max(round(config.pre_channels / config.reduction**i), config.lower_width) for i in range(1, num_blocks + 1)
        )
    widths = tuple(int(c) for c in config.block_channels)
    if len(widths) != num_blocks:
        raise TnervError(f"block_channels has {len(widths)} widths for {num_blocks} upsampling blocks")
    return widths


def widths_changed(before: TNeRVConfig, after: TNeRVConfig) -> dict[str, tuple[Any, Any]]:
    """The channel widths that differ between two configs, {field: (before, after)}; a width of a part
    that `after` removed (grids by E1, embeddings by E2) is not a change."""
    n = _num_blocks(before)
    removed = {"grid_channels": not after.grids, "embed_channels": not after.frame_embeddings}
    changed = {}
    for name in WIDTH_FIELDS:
        if removed.get(name):
            continue
        old, new = (
            (block_widths(before, n), block_widths(after, n)) if name == "block_channels"
            else (getattr(before, name), getattr(after, name))
        )
        if old != new:
            changed[name] = (old, new)
    return changed


def kernel_sizes(config: TNeRVConfig, num_blocks: int) -> tuple[int, ...]:
    """Kernel of each T-NeRV block: HNeRV's 1, 3, 5, 5, 5 ("hnerv") or max_kernel_size everywhere."""
    if config.conv_type == "hnerv":
        return growing_kernel_sizes(num_blocks, 1, config.max_kernel_size)
    if config.conv_type == "regular":
        return (config.max_kernel_size,) * num_blocks
    raise TnervError(f"unknown conv_type {config.conv_type!r}; available: {', '.join(CONV_TYPES)}")


@register_model
class TNeRV(EncodedEmbeddings, FlowGuidedOutput, VideoINR):
    """Frame index and frame in (the frame only while encoding), frame out.

    `TNeRV(config)` is the full model that is fitted (encoder side included); `from_transmitted`
    builds the decoder alone from the transmitted state, which holds the frame embeddings.
    The frame embeddings (EncodedEmbeddings) are buffers recomputed from the frames where out of date;
    the flow-guided output, its training buffer and range decoding come from FlowGuidedOutput."""

    name = "tnerv"
    card = ModelCard(
        label="T-NeRV", colour="#d62728", marker="o", reference_preset="tnerv-12.4m-720p",
        # The paper's published configs (supplementary Tab. 6, 7, 8), used as they are in their settings.
        settings={
            "setting1": {"preset": "tnerv-12.4m-720p"},
            "setting2": {"preset": "tnerv-3.0m-960p"},
            "uvg-1080p": {"preset": "tnerv-9.3m-1080p"},
        },
    )
    config_class = TNeRVConfig
    needs_frames = True
    # "encoder" first: "embeddings_fresh" is a training-side flag, "embeddings" is transmitted.
    component_prefixes = {
        ENCODER: ("encoder.", "augment.", "frame_weights", "frame_buffer", "embeddings_fresh"),
        "grids": ("grids.",),
        "embeddings": ("embeddings",),
    }
    latent_names = ("embeddings",)  # computed by the encoder, transmitted: compression quantises them
    compression = "entropy-constrained"  # as C-NeRV, by the same group
    # FFNeRV's recipe (T-NeRV's own is not published): Adam (0.5, 0.999), lr 5e-4, 20% warm-up, cosine.
    train_defaults = {"lr": 5e-4, "betas": (0.5, 0.999), "warmup": 0.2, "loss": "fusion", "batch_size": 1}

    @classmethod
    def apply_ablations(cls, config: TNeRVConfig, names: list[str]) -> TNeRVConfig:
        """Supplementary Tab. 2's ablations (see the module-level apply_ablations)."""
        return apply_ablations(config, names)

    def __init__(self, config: TNeRVConfig, with_encoder: bool = True):
        if config.ablations:  # names given as data (e.g. --set ablations=...) take effect too
            config = apply_ablations(config, ())
        super().__init__(config)
        c = config
        if not (c.frame_embeddings or c.grids):
            raise TnervError("T-NeRV needs frame embeddings or grids (or both) as the decoder's input")
        self.strides, (self.latent_h, self.latent_w) = resolve_strides(
            c.height, c.width, c.strides, c.num_blocks, c.target_latent_height
        )
        n = len(self.strides)
        widths, kernels = block_widths(c, n), kernel_sizes(c, n)
        self.pe = PositionalEncoding(c.pe_base, c.pe_levels)

        # Frame embeddings; the encoder side exists only in the model that is fitted.
        shapes = {"embeddings": (c.embed_channels, self.latent_h, self.latent_w)} if c.frame_embeddings else {}
        self.init_embeddings(shapes, with_encoder)
        self.encoder = self.augment = self.frame_weights = None
        if self.with_encoder:
            if len(c.encoder_channels) != n - 1 or len(c.encoder_blocks) != n:
                raise TnervError(
                    f"the encoder has one stage per stride ({n}): encoder_channels needs {n - 1} widths "
                    f"(the last stage has embed_channels) and encoder_blocks {n} counts; got "
                    f"{tuple(c.encoder_channels)} and {tuple(c.encoder_blocks)}"
                )
            self.encoder = ConvNeXtEncoder(
                self.strides, (*c.encoder_channels, c.embed_channels), c.encoder_blocks, 3, c.encoder_layer_scale
            )
            if c.temporal_augmentation:
                dims = [self.pe.dim, *c.augment_dims, c.embed_channels * self.latent_h * self.latent_w]
                self.augment = MLP(dims, c.activation, act_last=c.augment_act_last)
                self.frame_weights = nn.Parameter(torch.full((c.num_frames,), float(c.frame_weight_init)))

        # GOP features.
        self.grids = None
        if c.grids:
            self.grids = TemporalGrid(c.grid_resolutions, c.grid_channels, self.latent_h, self.latent_w)

        # Decoder.
        latent_channels = (c.embed_channels if c.frame_embeddings else 0) + (self.grids.out_channels if self.grids else 0)
        self.temp_mlp, cond_dim = None, None
        if c.adain:
            self.temp_mlp = MLP([self.pe.dim, *c.temp_mlp_dims], c.activation, act_last=c.temp_mlp_act_last)
            cond_dim = c.temp_mlp_dims[-1]
        self.pre_block = nn.Sequential(
            nn.Conv2d(latent_channels, c.pre_channels, c.pre_kernel_size, padding=c.pre_kernel_size // 2),
            make_activation(c.activation),
        )
        c_in = (c.pre_channels, *widths[:-1])
        self.blocks = nn.ModuleList(
            ModulatedUpsampleBlock(ci, co, s, k, cond_dim, c.activation)
            for ci, co, s, k in zip(c_in, widths, self.strides, kernels)
        )
        if not -n <= c.flow_head_block < n:
            raise TnervError(f"flow_head_block {c.flow_head_block} is not a block index (there are {n} blocks)")
        self.flow_head_index = c.flow_head_block % n
        self.aggregator = FlowAggregator(c.window) if c.flow else None
        self.flow_head = nn.Conv2d(widths[self.flow_head_index], self.aggregator.head_channels, 1) if c.flow else None
        self.frame_head = nn.Conv2d(widths[-1], 5 if c.flow else 3, 1)  # I(t) (3) and blend logits (2)
        # Independent frames of the last training steps: saved with checkpoints, never transmitted.
        self.init_frame_buffer(persistent=with_encoder)

    # ----------------------------------------------------------------------------------------------
    # Sizes.

    @classmethod
    def transmitted_size(cls, config: TNeRVConfig) -> dict[str, int]:
        """Parameter counts of a config (built on the meta device, decoder only: no memory, fast)."""
        with shapes_only():
            return cls(config, with_encoder=False).parameter_counts()

    @classmethod
    def scale_config(
        cls, config: TNeRVConfig, budget: int, shares: dict[str, float] | None = None
    ) -> TNeRVConfig:
        """The config scaled to `budget` transmitted parameters, keeping its split between decoder,
        grids and embeddings (Appendix C.3), or giving them `shares` (fractions of the total, from a
        reference config: `tnerv.models.budget.derive_config`): the embedding and grid channels are
        set to their share of the budget, then the decoder's widths (Pre-Block and each T-NeRV block;
        the Temp. MLP and the heads' outputs keep theirs, as Tab. 7 does) are scaled by a common factor,
        found by bisection, so that the total meets the budget. Logs the size reached."""
        if budget <= 0:
            raise TnervError(f"the size budget must be positive, got {budget}")
        counts = cls.transmitted_size(config)
        total = counts["transmitted"]
        shares = shares or {k: counts[k] / total for k in ("decoder", "grids", "embeddings")}
        _, (h, w) = resolve_strides(
            config.height, config.width, config.strides, config.num_blocks, config.target_latent_height
        )
        base = config
        if config.frame_embeddings:
            share = budget * shares["embeddings"]
            base = dataclasses.replace(base, embed_channels=max(1, round(share / (config.num_frames * h * w))))
        if config.grids:
            share = budget * shares["grids"]
            per_channel = sum(config.grid_resolutions) * h * w
            base = dataclasses.replace(base, grid_channels=max(1, round(share / per_channel)))
        scaled, reached = cls.fit_decoder(base, budget)
        if abs(reached / budget - 1) > 0.03:
            raise TnervError(
                f"T-NeRV cannot be scaled to {budget:,} parameters keeping its split (closest: {reached:,}); "
                f"its fixed parts (Temp. MLP, heads) or its embeddings and grids leave no room for a decoder"
            )
        parts = cls.transmitted_size(scaled)
        log.info(
            "T-NeRV scaled to %s parameters (budget %s): decoder %.1f%%, grids %.1f%%, embeddings %.1f%%",
            f"{reached:,}", f"{budget:,}", *(100 * parts[k] / reached for k in ("decoder", "grids", "embeddings")),
        )
        return scaled

    @classmethod
    def fit_decoder(cls, config: TNeRVConfig, budget: int) -> tuple[TNeRVConfig, int]:
        """The config with its decoder's widths (Pre-Block and T-NeRV blocks) scaled by the common factor,
        found by bisection, that brings the transmitted size closest to `budget`, and that size."""
        widths = block_widths(config, _num_blocks(config))

        def widened(k: float) -> TNeRVConfig:
            return dataclasses.replace(
                config, pre_channels=max(1, round(config.pre_channels * k)),
                block_channels=tuple(max(1, round(c * k)) for c in widths),
            )

        sizes: dict[float, int] = {}

        def size(k: float) -> int:
            if k not in sizes:
                sizes[k] = cls.transmitted_size(widened(k))["transmitted"]
            return sizes[k]

        lo, hi = 1.0, 1.0
        while size(lo) > budget and lo > 1e-3:
            lo /= 2
        while size(hi) < budget and hi < 1e3:
            hi *= 2
        for _ in range(40):
            if hi / lo < 1 + 1e-5:
                break
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if size(mid) < budget else (lo, mid)
        # Ties go to the factor closest to 1: widths that need not change do not.
        best = min(sizes, key=lambda k: (abs(sizes[k] - budget), abs(math.log(k))))
        return widened(best), sizes[best]

    @classmethod
    def ablate_at_budget(
        cls, config: TNeRVConfig, names: list[str] | tuple[str, ...], budget: int, tolerance: float
    ) -> tuple[TNeRVConfig, int, dict[str, tuple[Any, Any]]]:
        """The ablations applied to a config that is already at `budget` (the full T-NeRV, scaled), and
        the budget re-spent as LATENT_TRANSFERS and DECODER_ABLATIONS say: the ablated config, its size
        and the widths that changed ({field: (full model's, ablated's)}). Every other width is the full
        model's; the decoder is also re-solved when an encoder ablation leaves the size off the budget
        by more than `tolerance`."""
        ablated = apply_ablations(config, names)
        counts = cls.transmitted_size(config)
        _, (h, w) = resolve_strides(
            config.height, config.width, config.strides, config.num_blocks, config.target_latent_height
        )
        per_channel = {"embeddings": config.num_frames * h * w, "grids": sum(config.grid_resolutions) * h * w}
        field = {"embeddings": "embed_channels", "grids": "grid_channels"}
        for name in ablated.ablations:
            if name in LATENT_TRANSFERS and name not in config.ablations:
                removed, kept = LATENT_TRANSFERS[name]
                channels = round((counts[kept] + counts[removed]) / per_channel[kept])
                ablated = dataclasses.replace(ablated, **{field[kept]: max(1, channels)})
        reached = cls.transmitted_size(ablated)["transmitted"]
        if DECODER_ABLATIONS & set(ablated.ablations) or abs(reached / budget - 1) > tolerance:
            ablated, reached = cls.fit_decoder(ablated, budget)
        if abs(reached / budget - 1) > tolerance:
            raise TnervError(
                f"T-NeRV with ablations {'+'.join(ablated.ablations)} cannot be brought to {budget:,} parameters "
                f"within {tolerance:.1%} (closest: {reached:,}) keeping the full model's other widths"
            )
        return ablated, reached, widths_changed(config, ablated)

    # ----------------------------------------------------------------------------------------------
    # Encoding and decoding.

    def encode(self, frames: Tensor, frame_idx: Tensor) -> Tensor:
        """The frame embeddings e_t = S + S * (w_t * T(t)) of frames (B, 3, H, W), with gradients;
        S is the ConvNeXt's output, T(t) the temporal augmentation, w_t the frame's learned weight."""
        s = self.encoder(frames)
        if self.augment is not None:
            aug = self.augment(self.pe(self.normalized_time(frame_idx))).view_as(s)
            s = s + s * (self.frame_weights[frame_idx].view(-1, 1, 1, 1) * aug)
        return s

    def compute_embeddings(
        self, frame_idx: Tensor, frames: Tensor | None, source: FrameSource | None
    ) -> dict[str, Tensor]:
        return {"embeddings": self.encode(frames if frames is not None else source(frame_idx), frame_idx)}

    def decode_independent(
        self, frame_idx: Tensor, frames: Tensor | None = None, source: FrameSource | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Independent frame I(t) (B, 3, H, W), flow head (B, 3K, h', w') and blend logits (B, 2, H, W)
        (None without the flow-guided decoder). The latent is concat(e_t, GOP features)."""
        t = self.normalized_time(frame_idx)
        parts = []
        if self.config.frame_embeddings:
            parts.append(self.latent("embeddings", self.embeddings_for(frame_idx, frames, source)["embeddings"]))
        if self.grids is not None:
            parts.append(self.grids(t))
        x = self.pre_block(torch.cat(parts, dim=1))
        cond = self.temp_mlp(self.pe(t)) if self.temp_mlp is not None else None
        head = None
        for i, block in enumerate(self.blocks):
            x = block(x, cond)
            if i == self.flow_head_index and self.flow_head is not None:
                head = self.flow_head(x)
        y = self.frame_head(x)
        independent = output_activation(y[:, :3], self.config.output_activation)
        return independent, head, (y[:, 3:5] if self.aggregator is not None else None)
