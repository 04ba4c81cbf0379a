"""Geometry that follows from a frame size: the strides of the upsampling blocks and the latent's
spatial shape, for any frame size and aspect ratio."""

from __future__ import annotations

import contextlib
import math
import os
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from tnerv.errors import TnervError
from tnerv.models.base import ENCODER

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


# --------------------------------------------------------------------------------------------------
# Size solver: the widths that meet a parameter budget.


def scale_width(width: int, factor: float, minimum: int = 1) -> int:
    """A channel width scaled by `factor`, rounded, at least `minimum`: the unit of every scale_widths."""
    return max(minimum, round(width * factor))


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Builds modules on the meta device without running their weight initialisers: counting
    parameters needs shapes only, and initialising meta tensors costs most of a build's time."""
    skipped = {name: getattr(nn.init, name) for name in _INITIALISERS}
    try:
        for name in skipped:
            setattr(nn.init, name, _no_init)
        with torch.device("meta"):
            yield
    finally:
        for name, function in skipped.items():
            setattr(nn.init, name, function)


_INITIALISERS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "kaiming_uniform_",
    "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "orthogonal_",
)


def _no_init(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


def transmitted_size(model: str, config: Any) -> dict[str, int]:
    """Parameter counts by component of a model config, built on the meta device (no memory, fast).
    Counts are remembered per config: the size solvers ask again for configs they have built before
    (widths are integers, so many scale factors give the same config)."""
    return _remembered_counts(model, config, with_encoder=True)


def transmitted_parts(model: str, config: Any) -> dict[str, int]:
    """The transmitted counts alone (decoder, grids, embeddings, transmitted; encoder 0), from the
    decoder side: what the size solvers ask for, built several times faster than the whole model."""
    return _remembered_counts(model, config, with_encoder=False)


def _remembered_counts(model: str, config: Any, with_encoder: bool) -> dict[str, int]:
    from tnerv.models.registry import create_decoder, create_model

    key = (model, with_encoder, repr(config))
    if key not in _SIZES:
        if len(_SIZES) >= _MAX_REMEMBERED:
            _SIZES.clear()
        with shapes_only():
            built = create_model(model, config) if with_encoder else create_decoder(model, config)
            _SIZES[key] = built.parameter_counts()
    return dict(_SIZES[key])


def machine_memory() -> int:
    """This machine's physical memory in bytes (16 GiB where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


# The memory cap of a decode when none is given: a fixed ceiling (or the machine's memory, if smaller),
# so that a file cannot take a whole machine by default; `tnerv decode --max-memory` raises it.
DEFAULT_MEMORY_CAP = 4 << 30


def default_memory_cap() -> int:
    """The decoder's memory cap in bytes when none is given: DEFAULT_MEMORY_CAP or this machine's memory."""
    return min(DEFAULT_MEMORY_CAP, machine_memory())


@dataclass(frozen=True)
class DecodeFootprint:
    """What decoding a batch of frames asks of a machine, traced on the meta device."""

    activation_bytes: int  # peak bytes of the tensors the decoder's forward holds at once (float32)
    macs_per_frame: int  # multiply-accumulates of convolutions and matrix products per decoded frame


def decode_footprint(model: str, config: Any, batch_size: int) -> DecodeFootprint:
    """The peak activation memory and the work of decoding `batch_size` frames at a time with a decoder
    of this config: its evaluation pass (`reconstruct`, which models with neighbour frames use to keep
    decoded frames) runs on the meta device over three batches, counting every tensor it allocates
    while it is alive. Nothing is allocated and nothing computed, whatever the config says."""
    from tnerv.models.registry import create_decoder

    key = (model, repr(config), batch_size)
    if key not in _FOOTPRINTS:
        with shapes_only():
            decoder = create_decoder(model, config).eval()
        decoder.to("meta")  # buffers that a model builds on the CPU explicitly, too
        frames = min(config.num_frames, 3 * batch_size)
        trace = _AllocationTrace()
        with torch.no_grad(), torch.device("meta"), trace:
            for _, out in decoder.reconstruct(torch.arange(frames), None, batch_size):
                del out
        if len(_FOOTPRINTS) >= _MAX_REMEMBERED:
            _FOOTPRINTS.clear()
        _FOOTPRINTS[key] = DecodeFootprint(trace.peak, -(-trace.macs // frames))
    return _FOOTPRINTS[key]


class _AllocationTrace(TorchDispatchMode):
    """Counts the bytes of the storages that operators allocate while they are alive (their peak), and
    the multiply-accumulates of convolutions and matrix products. Views and in-place results share a
    storage already counted; a storage is freed when its last tensor goes (PyTorch keeps one Python
    object per storage while anything holds it, so a finaliser on it runs when the storage dies)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = self.macs = 0
        self._counted: set[int] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and args[0].is_meta and kwargs.get("device") not in (None, "meta"):
            # A model reading indices back (`.tolist()`): meta tensors hold no values; any index has the same shapes.
            return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype, device=kwargs["device"])
        out = func(*args, **kwargs)
        self.macs += _macs(func, args, out)
        for tensor in out if isinstance(out, tuple | list) else (out,):
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                self._count(tensor.untyped_storage())
        return out

    def _count(self, storage: torch.UntypedStorage) -> None:
        if id(storage) in self._counted:
            return
        size = storage.nbytes()
        self._counted.add(id(storage))
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, id(storage), size)

    def _free(self, key: int, size: int) -> None:
        self._counted.discard(key)
        self.live -= size


def _macs(func: Any, args: tuple, out: Any) -> int:
    """Multiply-accumulates of a convolution or matrix product (0 for other operators)."""
    if func is torch.ops.aten.convolution.default:
        x, weight, transposed, groups = args[0], args[1], args[6], args[8]
        if transposed:  # weight (C_in, C_out / groups, k...): every input value meets C_out / groups kernels
            return x.numel() * math.prod(weight.shape[1:])
        return out.numel() * math.prod(weight.shape[1:])
    if func in (torch.ops.aten.mm.default, torch.ops.aten.bmm.default):
        return out.numel() * args[0].shape[-1]
    if func is torch.ops.aten.addmm.default:
        return out.numel() * args[1].shape[-1]
    return 0


_FOOTPRINTS: dict[tuple[str, str, int], DecodeFootprint] = {}


def transmitted_shapes(model: str, config: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each tensor a decoder of this config is rebuilt from: its shape and component (meta device)."""
    from tnerv.models.registry import create_decoder

    with shapes_only():
        decoder = create_decoder(model, config)
    state = decoder.state_dict()
    return {k: (tuple(v.shape), decoder.component_of(k)) for k, v in state.items() if decoder.component_of(k) != ENCODER}


_SIZES: dict[tuple[str, bool, str], dict[str, int]] = {}
_MAX_REMEMBERED = 10_000


SPLIT_COMPONENTS = ("decoder", "grids", "embeddings")


def split_of(counts: dict[str, int]) -> dict[str, float]:
    """Each transmitted component's fraction of the transmitted total (decoder, grids, embeddings)."""
    total = counts["transmitted"] or 1
    return {k: counts[k] / total for k in SPLIT_COMPONENTS}


def format_split(counts: dict[str, int]) -> str:
    """The split as "D/G/E %", e.g. "60/16/24"."""
    return "/".join(f"{100 * v:.0f}" for v in split_of(counts).values())


def solve_for_budget(
    model: str, config: Any, budget: int, tolerance: float = 0.01, knob: Any = None
) -> tuple[Any, int]:
    """The config scaled to `budget` transmitted parameters at its resolution and frame count, and the
    size reached. Bisects (in log space) on the model's knob `scale_widths(config, factor)` (or on
    `knob(config, factor)` where given), which keeps the model's split between components; a model
    without that knob but with a budget-aware `scale_config(config, budget)` (T-NeRV) is scaled by
    it. Raises if no config comes within `tolerance` (relative) of the budget."""
    from tnerv.models.registry import model_class

    if budget <= 0:
        raise TnervError(f"the size budget must be positive, got {budget}")
    cls = model_class(model)

    def size(cfg: Any) -> int:
        return transmitted_parts(model, cfg)["transmitted"]

    try:
        (knob or cls.scale_widths)(config, 1.0)
    except NotImplementedError:
        if not hasattr(cls, "scale_config"):
            raise TnervError(f"model {model!r} has no size knob (scale_widths) to solve for a budget") from None
        best = cls.scale_config(config, budget)
        reached = size(best)
    else:
        cache: dict[float, tuple[Any, int]] = {}

        def at(factor: float) -> tuple[Any, int]:
            if factor not in cache:
                cfg = (knob or cls.scale_widths)(config, factor)
                cache[factor] = (cfg, size(cfg))
            return cache[factor]

        lo, hi = 1.0, 1.0
        while at(lo)[1] > budget and lo > 1e-4:
            lo /= 2
        while at(hi)[1] < budget and hi < 1e4:
            hi *= 2
        for _ in range(60):
            if hi / lo < 1 + 1e-7:
                break
            mid = math.sqrt(lo * hi)
            if at(mid)[1] < budget:
                lo = mid
            else:
                hi = mid
        best, reached = min(cache.values(), key=lambda item: abs(item[1] - budget))
    if abs(reached / budget - 1) > tolerance:
        raise TnervError(
            f"{model} cannot be scaled to {budget:,} parameters at {config.height}x{config.width}, "
            f"{config.num_frames} frames within {tolerance:.1%} (closest: {reached:,}); its fixed parts "
            f"(positional encodings, heads, embeddings) may be too large for the budget"
        )
    return best, reached


def solve_ablated_for_budget(
    model: str, config: Any, ablations: list[str] | tuple[str, ...], budget: int, tolerance: float = 0.01
) -> tuple[Any, int, dict[str, tuple[Any, Any]]]:
    """The config with `ablations` applied at `budget` transmitted parameters, the size reached and the
    widths the ablations changed ({field: (full model's, ablated's)}). The full model is scaled to the
    budget first and the ablation changes only what it names, plus the widths the model says take up
    the budget it frees or needs (T-NeRV: `TNeRV.ablate_at_budget`); no ablations: `solve_for_budget`."""
    from tnerv.models.registry import model_class

    full, reached = solve_for_budget(model, config, budget, tolerance)
    if not ablations:
        return full, reached, {}
    return model_class(model).ablate_at_budget(full, list(ablations), budget, tolerance)
