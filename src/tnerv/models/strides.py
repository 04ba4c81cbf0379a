"""Where a frame size lands: the strides of the upsampling blocks, the latent's spatial shape, and a
config moved to another frame size and frame count with the same latent shape."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from tnerv.errors import TnervError
from tnerv.models.base import ModelConfig

MAX_STRIDE = 5


def _prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    if n > 1:
        factors.append(n)
    return factors


def split_into_strides(product: int, num_blocks: int, max_stride: int = MAX_STRIDE) -> tuple[int, ...] | None:
    """Writes `product` as `num_blocks` strides <= max_stride, largest first (80 -> 5,2,2,2,2), or None."""
    factors = sorted(_prime_factors(product))
    if any(f > max_stride for f in factors):
        return None
    # Too many factors: merge the two smallest while the result still fits in one stride.
    while len(factors) > num_blocks:
        merged = factors[0] * factors[1]
        if merged > max_stride:
            return None
        factors = sorted([merged, *factors[2:]])
    factors += [1] * (num_blocks - len(factors))
    return tuple(sorted(factors, reverse=True))


def latent_shape(height: int, width: int, strides: tuple[int, ...]) -> tuple[int, int]:
    """The latent's (h, w) for explicit strides; an error naming the nearest sizes that work if none."""
    product = math.prod(strides)
    if height % product == 0 and width % product == 0:
        return height // product, width // product
    near_h = sorted({max(product, (height // product) * product), (height // product + 1) * product})
    near_w = sorted({max(product, (width // product) * product), (width // product + 1) * product})
    options = ", ".join(f"{h}x{w}" for h in near_h for w in near_w)
    raise TnervError(
        f"frame size {height}x{width} (HxW) cannot be reached with strides {tuple(strides)}: both sides "
        f"must be multiples of {product}; nearest sizes that work: {options} (use --resize HxW)"
    )


def derive_strides(
    height: int, width: int, num_blocks: int, target_latent_height: int, max_stride: int = MAX_STRIDE
) -> tuple[tuple[int, ...], tuple[int, int]]:
    """Chooses strides whose product divides both sides and whose latent height is closest to the
    target (ties go to the smaller latent): 720x1280 with 5 blocks and target 9 -> (5,2,2,2,2), 9x16."""
    best = None
    side = math.gcd(height, width)
    for product in range(1, side + 1):
        if side % product:
            continue
        strides = split_into_strides(product, num_blocks, max_stride)
        if strides is None:
            continue
        score = (abs(math.log(height / product / target_latent_height)), -product)
        if best is None or score < best[0]:
            best = (score, strides)
    assert best is not None  # product 1 always splits
    strides = best[1]
    h0, w0 = latent_shape(height, width, strides)
    if h0 > 4 * target_latent_height:
        raise TnervError(
            f"frame size {height}x{width} (HxW) cannot be reached by {num_blocks} upsampling blocks of "
            f"stride <= {max_stride} from a small latent (the sides share no such factors); "
            f"resize to a size whose sides are multiples of 16, e.g. with --resize"
        )
    return strides, (h0, w0)


def resolve_strides(
    height: int, width: int, strides: tuple[int, ...] | str, num_blocks: int, target_latent_height: int
) -> tuple[tuple[int, ...], tuple[int, int]]:
    """Explicit strides are checked against the frame size; "auto" derives them from it."""
    if strides == "auto":
        return derive_strides(height, width, num_blocks, target_latent_height)
    strides = tuple(int(s) for s in strides)
    return strides, latent_shape(height, width, strides)


def config_geometry(config: Any) -> tuple[tuple[int, ...], tuple[int, int]]:
    """Strides and latent (h, w) of a model config with the fields strides, num_blocks, target_latent_height."""
    return resolve_strides(config.height, config.width, config.strides, config.num_blocks, config.target_latent_height)


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
    follow the frame count (`scale_grid_resolutions`), and a model's own fields that follow the frame
    size or count follow them as its config says (`ModelConfig.follow_frames`)."""
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
    return dataclasses.replace(reference, **changes).follow_frames(reference, geometry)
