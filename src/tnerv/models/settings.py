"""The paper's evaluation settings as data, every model's config in each (supplementary Appendix C),
and the one rule that derives a model's config at another scale in the same proportions.

A setting fixes the frame size, the frame count and the size budget. A model's config in a setting is
its reference config with the geometry of that frame size (the latent's shape and the strides: C.2 for
16:9, C.3 for 2:1), scaled to the budget keeping the model's split between components (content-agnostic
models and T-NeRV, C.3: `derive_config`), or with the decoder taking what the embeddings leave
(content-aware HNeRV and DNeRV, whose embedding shapes depend on the frame size only, C.2). A published
config that a setting names (T-NeRV's Tab. 6/7/8) is used as it is.

`derive_config` is the rule for any other scale: same latent shape, grids in the same relation to the
frame count, each component's share of the budget kept (`cpu_config`: the bench's CPU scale)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from tnerv.errors import TnervError
from tnerv.models.base import ModelConfig
from tnerv.models.registry import list_models, load_preset, model_class
from tnerv.models.sizing import (
    MAX_STRIDE,
    config_geometry,
    derive_strides,
    scale_width,
    solve_for_budget,
    split_of,
    transmitted_parts,
    transmitted_size,
)

# The settings' budgets are met within this: integer widths move a size in steps (FFNeRV's grid channels by
# up to 4% at 3M); the sizes reached are mostly within 1% (see size_table), as the paper reports them.
SETTING_TOLERANCE = 0.03


@dataclass(frozen=True)
class Setting:
    """One evaluation setting of the paper."""

    name: str
    height: int
    width: int
    budget: int  # transmitted parameters
    num_frames: int  # the default frame count (the size of content-aware models depends on it)
    description: str


SETTINGS = {
    s.name: s
    for s in (
        Setting("setting1", 720, 1280, 12_400_000, 600, "UVG at 1280x720, 12.4M parameters (supp. C.2, Tab. 1)"),
        Setting("setting2", 960, 1920, 3_000_000, 600, "UVG at 1920x960, 3.0M parameters (supplementary C.3, Tab. 1)"),
        Setting("davis", 1080, 1920, 2_000_000, 60, "DAVIS validation at 1920x1080, first 60 frames, 2M (Tab. 4)"),
        Setting("mcl-jcv", 720, 1280, 5_000_000, 150, "MCL-JCV at 1280x720, 150 frames, 5M (Tab. 4)"),
        Setting("uvg-1080p", 1080, 1920, 9_300_000, 600, "UVG at 1920x1080 for compression, 9.3M (supp. Tab. 8, Fig. 4)"),
    )
}

# The geometry of each setting: strides (and for DNeRV where its difference stream joins). 16:9 frames
# keep the 720p latent's 9x16 (C.2: strides 5,2,2,2,2 at 720p, 5,3,2,2,2 at 1080p as T-NeRV's Tab. 8);
# 2:1 frames get an 8x16 latent with strides 5,3,2,2,2 (C.3), except HNeRV and DNeRV, which keep their
# own 2x4 embedding with strides 5,4,4,3,2 in their own setting.
_STRIDES_16_9 = {720: (5, 2, 2, 2, 2), 1080: (5, 3, 2, 2, 2)}
_GEOMETRY: dict[str, dict[str, dict[str, Any]]] = {
    # T-NeRV's published Tab. 6 config, as it is.
    "setting1": {
        "*": {"strides": _STRIDES_16_9[720]},
        "dnerv": {"fusion_block": 2, "diff_decoder_stride": 4},
        "tnerv": {"preset": "tnerv-12.4m-720p"},
        "hinerv": {"strides": (5, 2, 2, 2), "patch_size": (80, 80)},  # its official Bunny 720p geometry
    },
    "setting2": {
        "*": {"strides": (5, 3, 2, 2, 2)},
        "hnerv": {"strides": (5, 4, 4, 3, 2)},
        # C.3: difference embedding 2x10x20, the content unit after the second block.
        "dnerv": {"strides": (5, 4, 4, 3, 2), "fusion_block": 1, "diff_decoder_stride": 4},
        "tnerv": {"preset": "tnerv-3.0m-960p"},
        "hinerv": {"strides": (5, 3, 2, 2), "patch_size": (120, 120)},  # 16x32 base, its 1080p patches
    },
    # Inferred for 1080p: DNeRV's difference embedding stays 2x45x80 (as at 720p), joining at 135x240.
    "davis": {
        "*": {"strides": _STRIDES_16_9[1080]},
        "dnerv": {"fusion_block": 1, "diff_decoder_stride": 3},
        "hinerv": {"strides": (5, 3, 2, 2), "patch_size": (120, 120)},  # HiNeRV's official UVG geometry
    },
    "mcl-jcv": {
        "*": {"strides": _STRIDES_16_9[720]},
        "dnerv": {"fusion_block": 2, "diff_decoder_stride": 4},
        "hinerv": {"strides": (5, 2, 2, 2), "patch_size": (80, 80)},
    },
    # Compression at 1080p (as DAVIS's geometry); T-NeRV uses its published 9.3M config (Tab. 8).
    "uvg-1080p": {
        "*": {"strides": _STRIDES_16_9[1080]},
        "dnerv": {"fusion_block": 1, "diff_decoder_stride": 3},
        "tnerv": {"preset": "tnerv-9.3m-1080p"},
        "hinerv": {"strides": (5, 3, 2, 2), "patch_size": (120, 120)},
    },
}


def get_setting(name: str) -> Setting:
    """A setting by name; a clear error for an unknown one."""
    if name not in SETTINGS:
        raise TnervError(f"unknown setting {name!r}; available: {', '.join(SETTINGS)}")
    return SETTINGS[name]


def _reference(model: str, setting: str) -> tuple[ModelConfig, dict[str, Any], str | None]:
    """The reference config a setting derives a model's config from (the preset the setting names for
    it, a published config, else the reference preset on the model's card), the setting's geometry for
    the model, and the name of the preset the setting names, if any."""
    card = model_class(model).card
    overrides = {**_GEOMETRY[setting]["*"], **_GEOMETRY[setting].get(model, {})}
    named = overrides.pop("preset", None)
    return load_preset(named or card.reference_preset).config(), overrides, named


def base_config(model: str, setting: str, num_frames: int | None = None) -> ModelConfig:
    """A model's reference config with a setting's geometry (and grids sized to the frame count, as
    `derive_config` does), before it is scaled to the budget."""
    s = get_setting(setting)
    reference, overrides, _ = _reference(model, setting)
    return with_geometry(reference, s.height, s.width, num_frames or s.num_frames, overrides)


def setting_config(model: str, setting: str, num_frames: int | None = None, budget: int | None = None) -> ModelConfig:
    """A model's config in a setting (optionally with another frame count or size budget).

    A published config that the setting names (T-NeRV's Tab. 6/7/8) is used as it is. Content-aware
    models (HNeRV, DNeRV) get the setting's geometry and the decoder width that meets the budget (C.2);
    every other model is derived from its reference config by `derive_config` (C.3: same split)."""
    s = get_setting(setting)
    frames, size = num_frames or s.num_frames, budget or s.budget
    reference, overrides, named = _reference(model, setting)
    if named and frames == reference.num_frames and size == s.budget:
        return dataclasses.replace(reference, height=s.height, width=s.width)
    if model_class(model).card.content_aware:  # C.2: their split differs from setting to setting
        config = with_geometry(reference, s.height, s.width, frames, overrides)
        return solve_for_budget(model, config, size, SETTING_TOLERANCE)[0]
    return derive_config(model, reference, s.height, s.width, frames, size, SETTING_TOLERANCE, overrides)


def cpu_config(
    model: str, setting: str, height: int, width: int, num_frames: int, budget: int, tolerance: float = 0.05
) -> ModelConfig:
    """A model's config at another scale of a setting (the bench's CPU scale): `derive_config` of the
    model's paper-scale config in that setting."""
    return derive_config(model, setting_config(model, setting), height, width, num_frames, budget, tolerance)


# --------------------------------------------------------------------------------------------------
# The rule: a model's config for another frame size, frame count and budget, in the same proportions.

_CHANNEL_FIELDS = {"grid_channels": "grids", "embed_channels": "embeddings"}


def scale_grid_resolutions(resolutions: tuple[int, ...], num_frames: int, reference_frames: int) -> tuple[int, ...]:
    """Temporal grid sizes for `num_frames` frames in the relation the reference's have to its frame
    count (64/128/256/512 slices for 600 frames: 6/13/26/51 for 60), never more slices than frames:
    every slice is read by some frame (a grid of T slices read at t = i/N reads slice floor(i*T/N))."""
    return tuple(max(1, min(num_frames, round(int(r) * num_frames / reference_frames))) for r in resolutions)


def with_geometry(
    reference: ModelConfig, height: int, width: int, num_frames: int, geometry: dict[str, Any] | None = None
) -> ModelConfig:
    """The reference config at another frame size and count. The latent keeps the reference's
    spatial shape (9x16 for 16:9, HNeRV's 2x4 for 2:1) with as many blocks, the strides taking up
    the difference (144x256 from 9x16: 2,2,2,2,1), or the shape nearest to it that the frame size
    allows; explicit `geometry` (a setting's strides, DNeRV's fusion point) wins. Temporal grids
    follow the frame count (`scale_grid_resolutions`); DNeRV's difference embedding keeps its
    relation to the frame size as closely as the content stream's resolutions allow."""
    geometry = dict(geometry or {})
    ref_strides, (ref_h, _) = config_geometry(reference)
    changes: dict[str, Any] = {"height": height, "width": width, "num_frames": num_frames}
    if "strides" not in geometry:
        strides, _ = derive_strides(height, width, len(ref_strides), ref_h)
        geometry.update(strides=strides, num_blocks=len(ref_strides), target_latent_height=ref_h)
    changes.update(geometry)
    if hasattr(reference, "grid_resolutions"):
        changes["grid_resolutions"] = scale_grid_resolutions(
            reference.grid_resolutions, num_frames, reference.num_frames
        )
    if hasattr(reference, "grid_frames"):  # HiNeRV's base grid
        changes["grid_frames"] = scale_grid_resolutions((reference.grid_frames,), num_frames, reference.num_frames)[0]
    if hasattr(reference, "patch_size") and "patch_size" not in geometry:
        changes["patch_size"] = (0, 0)  # training patches are the geometry's to give; else whole frames
    config = dataclasses.replace(reference, **changes)
    if hasattr(reference, "fusion_block") and "fusion_block" not in geometry:
        config = _keep_difference_scale(config, reference)
    return config


def _keep_difference_scale(config: ModelConfig, reference: ModelConfig) -> ModelConfig:
    """DNeRV: the fusion block and difference-decoder stride whose difference embedding has the
    height ratio to the frame closest to the reference's (ties: the reference's fusion block). The
    stride goes up to MAX_STRIDE, as the content blocks': with 4 at most, a frame whose content stream
    is 45x80 after its first block (90x160) could only get a difference embedding of 45x80, half the
    frame's height instead of a 16th, 25 times the parameters per frame."""
    from tnerv.models.dnerv import diff_geometry

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


def derive_config(
    model: str,
    reference: ModelConfig,
    height: int,
    width: int,
    num_frames: int,
    budget: int,
    tolerance: float = SETTING_TOLERANCE,
    geometry: dict[str, Any] | None = None,
) -> ModelConfig:
    """THE rule that derives a model's config for a frame size, frame count and budget from a
    reference config (a paper-scale one), keeping the reference's proportions:

    1. geometry (`with_geometry`): the latent's spatial shape as the reference's (the strides take
       up the frame size), grids' temporal sizes in the reference's relation to the frame count;
    2. split: the grids' and embeddings' channels are chosen so that each takes the reference's share
       of the budget (decoder / grids / embeddings, supplementary C.3), and a model whose decoder has
       parts that another geometry unbalances (NeRV's MLP stem against its convolutions) restores the
       reference's balance (`match_decoder_split`);
    3. the decoder is scaled (the model's `scale_widths`, or T-NeRV's `fit_decoder`) to take the rest
       of the budget; widths that knob keeps (T-NeRV's Temp. MLP; the encoder side, not transmitted,
       down to HNeRV's width 64) shrink with the square root of the budget below the reference's.

    Raises where the budget cannot be met within `tolerance`."""
    cls = model_class(model)
    ref_counts = transmitted_parts(model, reference)
    shares = split_of(ref_counts)
    config = with_geometry(reference, height, width, num_frames, geometry)
    if hasattr(cls, "match_decoder_split"):
        config = cls.match_decoder_split(config, reference)
    shrink = math.sqrt(budget / ref_counts["transmitted"])
    if shrink < 1:
        config = _shrink_fixed_widths(config, shrink)
    try:
        cls.scale_widths(config, 1.0)
    except NotImplementedError:  # T-NeRV: the channels as below, then its decoder knob takes the rest
        config = dataclasses.replace(config, **_fit_channels(model, config, shares, budget))
        scaled, reached = cls.fit_decoder(config, budget)
        if abs(reached / budget - 1) > tolerance:
            raise TnervError(
                f"{model} cannot be scaled to {budget:,} parameters at {height}x{width}, {num_frames} frames "
                f"within {tolerance:.1%} keeping its split (closest: {reached:,})"
            ) from None
        return scaled
    scale = getattr(cls, "scale_decoder", cls.scale_widths)  # a knob of the decoder alone where the model has one
    config = scale(config, 1.0)  # widths that follow other fields ("auto") made explicit before those change
    held = _fit_channels(model, config, shares, budget)
    if hasattr(config, "grid_resolutions"):
        held["grid_resolutions"] = config.grid_resolutions
    config = dataclasses.replace(config, **held)

    def knob(cfg: ModelConfig, factor: float) -> ModelConfig:  # the decoder only: grids and embeddings held
        return dataclasses.replace(scale(cfg, factor), **held)

    return solve_for_budget(model, config, budget, tolerance, knob)[0]


# Widths that the models' budget knobs leave alone. The decoder's: T-NeRV's Temp. MLP (transmitted). The
# encoder side's (not transmitted, so not in the split, but its cost is): the ConvNeXt encoders and
# T-NeRV's temporal augmentation, which never go below HNeRV's encoder width, the narrowest of the family.
_FIXED_DECODER_WIDTHS = ("temp_mlp_dims",)
_ENCODER_WIDTHS = ("encoder_width", "encoder_channels", "diff_encoder_width", "augment_dims")
MIN_ENCODER_WIDTH = 64


def _shrink_fixed_widths(config: ModelConfig, factor: float) -> ModelConfig:
    """The widths no budget knob scales, times `factor` (the square root of the budget's ratio)."""
    changes: dict[str, Any] = {}
    for name in (*_FIXED_DECODER_WIDTHS, *_ENCODER_WIDTHS):
        if not hasattr(config, name):
            continue
        value = getattr(config, name)
        floor = 1 if name in _FIXED_DECODER_WIDTHS else MIN_ENCODER_WIDTH
        widths = value if isinstance(value, tuple) else (value,)
        scaled = [max(min(int(w), floor), scale_width(int(w), factor)) for w in widths]
        changes[name] = tuple(scaled) if isinstance(value, tuple) else scaled[0]
    return dataclasses.replace(config, **changes)


@dataclass(frozen=True)
class ChannelCost:
    """A component whose size is linear in a channel count: fixed + channels * per_channel parameters."""

    field: str
    fixed: int  # what does not depend on the count (DNeRV's difference embeddings)
    per_channel: int


def channel_costs(model: str, config: ModelConfig) -> dict[str, ChannelCost]:
    """The grids' and embeddings' sizes as linear functions of their channel counts (component ->
    cost), for the components that this config has and a channel count sizes."""
    costs = {}
    for field, component in _CHANNEL_FIELDS.items():
        if not hasattr(config, field):
            continue
        one, two = (transmitted_parts(model, dataclasses.replace(config, **{field: c}))[component] for c in (1, 2))
        if two - one > 0:
            costs[component] = ChannelCost(field, one - (two - one), two - one)
    return costs


def channels_for(cost: ChannelCost, share: float, budget: float) -> int:
    """The channel count whose size is the closest to `share` of `budget` (at least one)."""
    return max(1, round((share * budget - cost.fixed) / cost.per_channel))


def _fit_channels(model: str, config: ModelConfig, shares: dict[str, float], budget: int) -> dict[str, Any]:
    """The channel counts of the grids and embeddings whose sizes are the closest to their shares of
    the budget (each component's size is linear in its channel count)."""
    return {
        cost.field: channels_for(cost, shares[component], budget)
        for component, cost in channel_costs(model, config).items()
        if shares[component] > 0
    }


def size_table(
    setting: str, num_frames: int | None = None, budget: int | None = None, models: list[str] | None = None
) -> dict[str, dict[str, int]]:
    """The rows of the size table of a setting: model -> parameter counts by component (decoder, grids,
    embeddings, transmitted; encoder = not transmitted), every model solved to the budget."""
    names = models or list_models()
    return {name: transmitted_size(name, setting_config(name, setting, num_frames, budget)) for name in names}
