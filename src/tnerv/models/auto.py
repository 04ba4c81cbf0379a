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
   frames of 720p), at least `MIN_BUDGET`; where a model cannot reach it keeping its split (coarse
   width steps, fixed parts), the nearest size it can. A budget the user gives is met within 10%.
4. **Split.** `derive_config`, the rule the bench's CPU scale uses: each component keeps its share of
   the reference config's budget."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tnerv.errors import TnervError
from tnerv.models.base import ModelConfig
from tnerv.models.registry import Preset, make_config, model_class
from tnerv.models.settings import derive_config, setting_config
from tnerv.models.sizing import (
    MAX_STRIDE,
    config_geometry,
    solve_ablated_for_budget,
    split_into_strides,
    split_of,
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
    # A size the user asked for must be met (the error says why it cannot be); a default one is a guide:
    # the closest size the model reaches keeping its split is taken (integer widths move small models
    # in coarse steps, and fixed parts such as heads or DNeRV's difference stream set a floor).
    tolerance = AUTO_TOLERANCE if budget is not None else math.inf
    size = budget or default_budget(num_frames, height, width)
    config = derive_config(
        model, reference, geometry.coded_height, geometry.coded_width, num_frames, size, tolerance,
        {"strides": geometry.strides},
    )
    return config, geometry


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
    return (
        f"{info['model']}: {info['frames']} frames of {h}x{w}{padded}; {', '.join(parts)}; "
        f"{info['parameters']['transmitted']:,} parameters (decoder/grids/embeddings {split}%)"
    )
