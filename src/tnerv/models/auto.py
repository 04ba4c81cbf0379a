"""A model's config for any video, no preset needed: geometry and size from the frame size and length.

The rule (the README states it too, under "The command line"):

1. **Setting.** The paper setting whose aspect ratio is the nearest: 2:1 frames take setting 2 (1920x960),
   every other shape (16:9, 4:3, square, portrait) setting 1 (1280x720). The model's config in that
   setting (`setting_config`) is the reference whose proportions are kept.
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
4. **Split.** `derive_config`, the rule the bench's CPU scale uses: each component keeps its share of
   the reference config's budget."""

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
from tnerv.models.registry import Preset, make_config, model_class
from tnerv.models.settings import ChannelCost, channel_costs, channels_for, derive_config, setting_config
from tnerv.models.sizing import (
    MAX_STRIDE,
    SPLIT_COMPONENTS,
    config_geometry,
    solve_ablated_for_budget,
    split_into_strides,
    split_of,
    transmitted_parts,
    transmitted_size,
)

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


def default_budget(num_frames: int, height: int, width: int) -> int:
    """The size budget for a video without --size: setting 1's parameters per pixel, at least MIN_BUDGET."""
    return max(MIN_BUDGET, round(PARAMETERS_PER_PIXEL * num_frames * height * width))


def setting_for(height: int, width: int) -> str:
    """The paper setting whose aspect ratio is the nearest to the frame's: 2:1 -> setting2, else setting1."""
    ratio = max(height, width) / min(height, width)
    return "setting2" if abs(math.log(ratio / 2)) < abs(math.log(ratio / (16 / 9))) else "setting1"


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


@lru_cache(maxsize=None)
def _paper_config(model: str, setting: str) -> ModelConfig:
    """The model's config in a paper setting (solved once per process: it takes a second or two)."""
    return setting_config(model, setting)


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
