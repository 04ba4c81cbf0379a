"""The size rule: a model's config for any video (frame size, frame count, size budget) and for each of
the paper's settings, in the proportions of the model's paper-scale config. Each step is implemented
below under its own heading.

1. **Setting.** The paper setting whose aspect ratio is the nearest: 2:1 frames take setting 2 (1920x960),
   every other shape (16:9, 4:3, square, portrait) setting 1 (1280x720). The model's config in that
   setting (`setting_config`) is the reference whose proportions are kept. In a setting itself, a
   published config that the setting names (T-NeRV's Tab. 6/7/8) is used as it is; content-aware models
   (HNeRV, DNeRV), whose embedding shapes depend on the frame size only, get the setting's geometry and
   the decoder width that meets the budget (C.2); every other model is derived by step 4 (C.3).
2. **Geometry.** The strides' product is chosen so that the latent's short side is the nearest to the
   reference latent's (9 for 16:9, 8 for 2:1, HNeRV's 2), among the products that need at most 6% of
   padding per side (sizes no stride product divides are padded, replicating the border, and the
   output cropped back: quality is measured on the original pixels). Portrait frames get the
   transposed latent (16x9), square ones a square latent.
3. **Size.** Without a budget, the paper's setting 1 ratio of parameters to pixels (12.4M for 600
   frames of 720p), at least `MIN_BUDGET`; where a model cannot keep its split within 5 points at
   that size (grids and embeddings come in whole channels: at 300 frames of 36x64 one channel of
   T-NeRV's 9x16 embeddings is 43,200 parameters, twice the default size), the size nearest to it
   (at least `MIN_BUDGET`) at which it does; if the search finds none, the default size with a note
   that names the shares missed and why. The announcement (`describe_line`) says which it took. A
   budget the user gives is met within 10%.
4. **Split.** `derive_config`, the rule the bench's CPU scale uses too (`cpu_config`): each component
   keeps its share of the reference config's budget.

`auto_config` applies the four steps; `config_for_video` is what a fit uses (a preset, overrides, or the rule)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tnerv.errors import TnervError
from tnerv.models.base import ModelConfig
from tnerv.models.counting import SPLIT_COMPONENTS, split_of, transmitted_parts, transmitted_size
from tnerv.models.registry import Preset, list_models, make_config, model_class
from tnerv.models.scaling import scale_width, solve_ablated_for_budget, solve_for_budget
from tnerv.models.settings import SETTING_TOLERANCE, get_setting, setting_reference
from tnerv.models.strides import MAX_STRIDE, config_geometry, split_into_strides, with_geometry

DEFAULT_MODEL = "tnerv"
# Setting 1: 12.4M parameters for 600 frames of 1280x720.
PARAMETERS_PER_PIXEL = 12_400_000 / (600 * 720 * 1280)
# Below this no model of the family keeps its split (fixed heads, encoders, grids of one slice).
MIN_BUDGET = 20_000
MAX_PADDING = 0.06  # per side, as a fraction of that side
# Integer widths move a small model's size in steps; the bench's CPU scale allows the same.
AUTO_TOLERANCE = 0.1
# Each component keeps its paper share within this (README), or the announcement says why it cannot.
SPLIT_TOLERANCE = 0.05
# The sizes searched aim a point inside it: the decoder's integer widths move the total a little.
_SPLIT_AIM = 0.04
_SIZE_TRIES = 6  # sizes tried (each a derive_config) before the default size is kept with a note


# --------------------------------------------------------------------------------------------------
# 1. Setting: the paper setting nearest to the frame, and a model's config in a setting.

def setting_for(height: int, width: int) -> str:
    """The paper setting whose aspect ratio is the nearest to the frame's: 2:1 -> setting2, else setting1."""
    ratio = max(height, width) / min(height, width)
    return "setting2" if abs(math.log(ratio / 2)) < abs(math.log(ratio / (16 / 9))) else "setting1"


def base_config(model: str, setting: str, num_frames: int | None = None) -> ModelConfig:
    """A model's reference config with a setting's geometry (and grids sized to the frame count, as
    `derive_config` does), before it is scaled to the budget."""
    s = get_setting(setting)
    reference, overrides, _ = setting_reference(model, setting)
    return with_geometry(reference, s.height, s.width, num_frames or s.num_frames, overrides)


def setting_config(model: str, setting: str, num_frames: int | None = None, budget: int | None = None) -> ModelConfig:
    """A model's config in a setting (optionally with another frame count or size budget).

    A published config that the setting names (T-NeRV's Tab. 6/7/8) is used as it is. Content-aware
    models (HNeRV, DNeRV) get the setting's geometry and the decoder width that meets the budget (C.2);
    every other model is derived from its reference config by `derive_config` (C.3: same split)."""
    s = get_setting(setting)
    frames, size = num_frames or s.num_frames, budget or s.budget
    reference, overrides, named = setting_reference(model, setting)
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


@lru_cache(maxsize=None)
def _paper_config(model: str, setting: str) -> ModelConfig:
    """The model's config in a paper setting (solved once per process: it takes a second or two)."""
    return setting_config(model, setting)


# --------------------------------------------------------------------------------------------------
# 2. Geometry: the strides and the padding for the frame size.

@dataclass(frozen=True)
class Geometry:
    """Where a frame size lands: the coded (padded) size and the strides that reach it."""

    height: int
    width: int
    coded_height: int
    coded_width: int
    strides: tuple[int, ...]
    # What the announcement adds where the size or split departs from the rule's default, and why.
    notes: tuple[str, ...] = ()

    @property
    def padded(self) -> bool:
        """True where the coded frame is larger than the video's."""
        return (self.coded_height, self.coded_width) != (self.height, self.width)


def choose_geometry(height: int, width: int, num_blocks: int, latent_short_side: int) -> Geometry:
    """The strides (`num_blocks` of them, each <= MAX_STRIDE) whose product P gives a latent short side
    nearest to `latent_short_side`, among the products that pad each side by at most MAX_PADDING (at
    least one pixel); ties go to less padding, then to the larger product."""
    best = None
    short = min(height, width)
    for product in range(1, short + 1):
        strides = split_into_strides(product, num_blocks, MAX_STRIDE)
        if strides is None:
            continue
        coded = [-(-side // product) * product for side in (height, width)]
        padding = [(c - s) / s for c, s in zip(coded, (height, width))]
        if any(p > MAX_PADDING and c - s > 1 for p, c, s in zip(padding, coded, (height, width))):
            continue
        latent_short = min(coded) // product
        score = (abs(math.log(latent_short / latent_short_side)), sum(padding), -product)
        if best is None or score < best[0]:
            best = (score, Geometry(height, width, coded[0], coded[1], strides))
    assert best is not None  # product 1 always qualifies
    return best[1]


# --------------------------------------------------------------------------------------------------
# 3. Size: the default budget, or the size nearest to it that keeps the paper split.

def default_budget(num_frames: int, height: int, width: int) -> int:
    """The size budget for a video without --size: setting 1's parameters per pixel, at least MIN_BUDGET."""
    return max(MIN_BUDGET, round(PARAMETERS_PER_PIXEL * num_frames * height * width))


def split_gaps(model: str, config: ModelConfig, shares: dict[str, float]) -> dict[str, float]:
    """Each component's share of the config's size minus its paper share (fractions)."""
    split = split_of(transmitted_parts(model, config))
    return {k: split[k] - shares[k] for k in split}


def _keeps_split(model: str, config: ModelConfig, shares: dict[str, float]) -> bool:
    return max(map(abs, split_gaps(model, config, shares).values())) <= SPLIT_TOLERANCE


def _default_size(
    model: str, at: Callable[[int], ModelConfig], shares: dict[str, float], default: int
) -> tuple[ModelConfig, tuple[str, ...]]:
    """The config at the default size where it keeps the paper split; else at the nearest size that
    does (channel counts are integers, so grids and embeddings move in steps, and one channel can be
    more than a small size's share); else at the default size, with a note that says why not."""
    config = at(default)
    if _keeps_split(model, config, shares):
        return config, ()
    costs = channel_costs(model, config)
    off = [k for k, gap in split_gaps(model, config, shares).items() if abs(gap) > SPLIT_TOLERANCE and k in costs]
    # Why the default size cannot keep the split: what one channel of a component that misses its share costs.
    steps = ", ".join(f"the {k} are {costs[k].fixed + costs[k].per_channel:,} parameters at one channel" for k in off)
    for size in budgets_keeping_split(costs, shares, default)[:_SIZE_TRIES]:
        candidate = at(size)
        if _keeps_split(model, candidate, shares):
            why = f" ({steps})" if steps else ""
            return candidate, (f"the size nearest to the default {default:,} that keeps the paper split{why}",)
    split = split_of(transmitted_parts(model, config))
    gaps = [k for k, gap in split_gaps(model, config, shares).items() if abs(gap) > SPLIT_TOLERANCE]
    shares_text = " and ".join(f"{k} {100 * split[k]:.0f}%" for k in gaps)
    paper_text = " and ".join(f"{100 * shares[k]:.0f}%" for k in gaps)
    why = f"{steps}, and no" if steps else "no"
    return config, (f"{shares_text} instead of the paper's {paper_text}: {why} size near "
                    f"{default:,} keeps every share within {100 * SPLIT_TOLERANCE:.0f} points",)


def budgets_keeping_split(costs: dict[str, ChannelCost], shares: dict[str, float], default: int) -> list[int]:
    """The sizes (at least MIN_BUDGET) at which the channel counts that `derive_config` picks give the
    grids, the embeddings and the decoder (the rest) their paper shares within _SPLIT_AIM, the nearest
    to `default` first; none where a share is not sized by a channel count."""
    if any(shares[k] > 0 and k not in costs for k in SPLIT_COMPONENTS if k != "decoder"):
        return []
    parts = [(cost, shares[k]) for k, cost in costs.items() if shares[k] > 0]
    counts = [range(1, 2 * channels_for(cost, share, default) + 3) for cost, share in parts]
    found = set()
    for channels in itertools.product(*counts) if parts else ():
        low, high = _budget_range(parts, channels, shares["decoder"])
        if low <= high:
            found.add(round(min(max(default, low), high)))
    return sorted(found, key=lambda size: abs(math.log(size / default)))


def _budget_range(
    parts: list[tuple[ChannelCost, float]], channels: tuple[int, ...], decoder_share: float
) -> tuple[float, float]:
    """The sizes at which these channel counts are the ones `channels_for` picks and every share is
    within _SPLIT_AIM of its paper share, as (low, high); empty where low > high."""
    low, high, inputs = float(MIN_BUDGET), math.inf, 0
    for (cost, share), count in zip(parts, channels):
        size = cost.fixed + count * cost.per_channel
        inputs += size
        low = max(low, size / (share + _SPLIT_AIM), (size - cost.per_channel / 2) / share if count > 1 else 0)
        high = min(high, (size + cost.per_channel / 2) / share)
        if share > _SPLIT_AIM:
            high = min(high, size / (share - _SPLIT_AIM))
    low = max(low, inputs / (1 - decoder_share + _SPLIT_AIM))
    if 1 - decoder_share > _SPLIT_AIM:
        high = min(high, inputs / (1 - decoder_share - _SPLIT_AIM))
    return low, high


# --------------------------------------------------------------------------------------------------
# 4. Split: each component keeps its share of the reference config's budget.

_CHANNEL_FIELDS = {"grid_channels": "grids", "embed_channels": "embeddings"}


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


# --------------------------------------------------------------------------------------------------
# The rule applied: a fit's config, the settings' size table, the announcement.

def auto_config(
    model: str,
    height: int,
    width: int,
    num_frames: int,
    budget: int | None = None,
    reference: ModelConfig | None = None,
) -> tuple[ModelConfig, Geometry]:
    """The model's config for a video of `num_frames` frames of height x width (and the geometry that
    says how the frames are padded): the rule of this module, from `reference` (default: the model's
    config in the nearest paper setting) at `budget` transmitted parameters (default: `default_budget`)."""
    if min(height, width, num_frames) < 1:
        raise TnervError(f"a video of {num_frames} frames of {height}x{width} has no pixels to fit")
    if reference is None:
        reference = _paper_config(model, setting_for(height, width))
    strides, latent = config_geometry(reference)
    geometry = choose_geometry(height, width, len(strides), min(latent))

    def at(size: int, tolerance: float = math.inf) -> ModelConfig:
        return derive_config(
            model, reference, geometry.coded_height, geometry.coded_width, num_frames, size, tolerance,
            {"strides": geometry.strides},
        )

    if budget is not None:  # a size the user asked for must be met; the error says why it cannot be
        return at(budget, AUTO_TOLERANCE), geometry
    shares = split_of(transmitted_parts(model, reference))
    config, notes = _default_size(model, at, shares, default_budget(num_frames, height, width))
    return config, dataclasses.replace(geometry, notes=notes)


def config_for_video(
    model: str,
    height: int,
    width: int,
    num_frames: int,
    preset: Preset | None = None,
    overrides: dict[str, Any] | None = None,
    size: int | None = None,
    ablations: list[str] | tuple[str, ...] = (),
) -> tuple[ModelConfig, Geometry]:
    """The config a fit uses. Without a preset or overrides: the rule of this module (`auto_config`).
    With them: the preset's fields and the overrides on the model's defaults, if their strides reach the
    frame size; if not (and the strides were not set explicitly), the rule applied to that config, at
    the preset's size (at this frame count) or the default size. `size` scales the config to that many
    transmitted parameters keeping its split, and `ablations` then switch parts off at that size;
    without `size` they switch parts off the config as it is."""
    model_class(model)  # an unknown name fails here, with the list of known models
    overrides = overrides or {}
    if preset is None and not overrides:
        config, geometry = auto_config(model, height, width, num_frames, size)
        size = None  # met already
    else:
        explicit = {**(preset.model_config if preset else {}), **overrides}
        config = make_config(model, {**explicit, "height": height, "width": width, "num_frames": num_frames})
        try:
            geometry = Geometry(height, width, height, width, config_geometry(config)[0])
        except TnervError:
            if overrides.get("strides", "auto") != "auto":
                raise  # strides the user set are kept: the error names the sizes they reach
            reference = make_config(model, {**explicit, "num_frames": num_frames})
            if size is None and preset is not None:
                size = transmitted_size(model, reference)["transmitted"]
            config, geometry = auto_config(model, height, width, num_frames, size, reference)
            size = None
    if size is not None:  # the full model at the size, then the ablations change only what they name
        config, _, _ = solve_ablated_for_budget(model, config, list(ablations), size)
    elif ablations:
        config = model_class(model).apply_ablations(config, list(ablations))
    return config, geometry


def size_table(
    setting: str, num_frames: int | None = None, budget: int | None = None, models: list[str] | None = None
) -> dict[str, dict[str, int]]:
    """The rows of the size table of a setting: model -> parameter counts by component (decoder, grids,
    embeddings, transmitted; encoder = not transmitted), every model solved to the budget."""
    names = models or list_models()
    return {name: transmitted_size(name, setting_config(name, setting, num_frames, budget)) for name in names}


def describe(model: str, config: ModelConfig, geometry: Geometry | None = None) -> dict[str, Any]:
    """What was chosen, as plain data: strides, latent, embedding and grid shapes, size and split."""
    strides, latent = config_geometry(config)
    counts = transmitted_size(model, config)
    info: dict[str, Any] = {
        "model": model,
        "frames": config.num_frames,
        "size": [config.height, config.width],
        "strides": list(strides),
        "latent": list(latent),
        "parameters": counts,
        "split": {k: round(100 * v, 1) for k, v in split_of(counts).items()},
    }
    if getattr(config, "embed_channels", None) and counts["embeddings"]:
        info["embedding"] = [config.embed_channels, *latent]
    if getattr(config, "grid_resolutions", None) and counts["grids"]:
        info["grids"] = {"slices": list(config.grid_resolutions), "channels": config.grid_channels}
    if geometry is not None and geometry.padded:
        info["padded_from"] = [geometry.height, geometry.width]
    if geometry is not None and geometry.notes:
        info["notes"] = list(geometry.notes)
    return info


def describe_line(info: dict[str, Any]) -> str:
    """One line for the terminal, e.g. "nerv: 4 frames of 18x24, padded from 17x23; strides 2,1,1,1,1,
    latent 9x12; 20,502 parameters (decoder/grids/embeddings 100/0/0%)"."""
    h, w = info["size"]
    parts = [f"strides {','.join(map(str, info['strides']))}", f"latent {'x'.join(map(str, info['latent']))}"]
    if "embedding" in info:
        parts.append(f"embeddings {'x'.join(map(str, info['embedding']))} per frame")
    if "grids" in info:
        grids = info["grids"]
        parts.append(f"grids {'/'.join(map(str, grids['slices']))} slices x {grids['channels']} channels")
    padded = f", padded from {info['padded_from'][0]}x{info['padded_from'][1]}" if "padded_from" in info else ""
    split = "/".join(f"{v:.0f}" for v in info["split"].values())
    notes = "".join(f"; {note}" for note in info.get("notes", ()))
    return (
        f"{info['model']}: {info['frames']} frames of {h}x{w}{padded}; {', '.join(parts)}; "
        f"{info['parameters']['transmitted']:,} parameters (decoder/grids/embeddings {split}%){notes}"
    )
