"""What this machine has and what a fit or a decode asks of it: memory, the memory estimates that
training and decoding check before they allocate, and a decoder's traced activations and work."""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tnerv.errors import TnervError
from tnerv.models.counting import shapes_only
from tnerv.models.registry import create_decoder


def machine_memory() -> int:
    """This machine's physical memory in bytes (16 GiB where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


# Bytes per parameter while training with Adam: the weight, its gradient and two moments (float32).
TRAIN_BYTES_PER_PARAMETER = 16


def check_trainable(model: str, total: int) -> None:
    """Refuses, before anything is allocated, a model of `total` parameters (encoder included) whose
    training needs more than this machine's memory."""
    needed, available = total * TRAIN_BYTES_PER_PARAMETER, machine_memory()
    if needed > available:
        raise TnervError(
            f"a {model} model of {total:,} parameters needs about {needed / 2**30:,.0f} GiB to train; "
            f"this machine has {available / 2**30:,.0f} GiB (choose a smaller --size)"
        )


# Bytes per pixel value that a fit's frames take (an estimate): the frames as read, as a tensor and padded
# to the model's size (three uint8 copies), and the float16 buffer of independent frames of the models
# that keep one (T-NeRV, FFNeRV). Frames may take at most FRAMES_SHARE of the machine's memory; the rest is
# the model's, its optimiser's and the activations'.
FRAME_BYTES_PER_VALUE = 5
FRAMES_SHARE = 0.5


def frames_that_fit(height: int, width: int) -> int:
    """How many frames of height x width a fit may hold here (FRAMES_SHARE of this machine's memory)."""
    return int(FRAMES_SHARE * machine_memory() // (height * width * 3 * FRAME_BYTES_PER_VALUE))


def check_frames_fit(frames: int, height: int, width: int) -> None:
    """Refuses, before anything is read, a segment of `frames` frames of height x width whose frames would
    take more than FRAMES_SHARE of this machine's memory, naming the --segment-frames that fits."""
    fits = frames_that_fit(height, width)
    if frames > fits:
        setting = f"--segment-frames {fits} fits" if fits else "no segment of even one such frame fits"
        raise TnervError(
            f"{frames} frames of {width}x{height} need about "
            f"{frames * height * width * 3 * FRAME_BYTES_PER_VALUE / 2**30:,.1f} GiB to train on, "
            f"more than {FRAMES_SHARE:.0%} of this machine's {machine_memory() / 2**30:,.1f} GiB: {setting}"
        )


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
        if len(_FOOTPRINTS) >= _MAX_FOOTPRINTS:
            _FOOTPRINTS.clear()
        _FOOTPRINTS[key] = DecodeFootprint(trace.peak, -(-trace.macs // frames))
    return _FOOTPRINTS[key]


# Bytes a decoder holds per transmitted value while it rebuilds a model: the decoded symbol (int64),
# its check (int32), the dequantised value and the model's parameter (float32 each).
BYTES_PER_VALUE = 20
# Bytes a decode holds per decoded frame value (3 x H x W each): the batches' float32 outputs, their
# concatenation (float32) and the 8-bit frames written.
BYTES_PER_FRAME_VALUE = 9
# The decoder's traced activations (`decode_footprint`) times this is what its process grows by: glibc's
# heap keeps freed blocks that a larger one cannot reuse, and oneDNN holds buffers of its own
# (tests/test_decoder_limits.py: at 2 the estimate was 0.83-1.65x the measured growth over seven models at
# three sizes, FFNeRV and T-NeRV highest; at 1.7, 0.74-1.42x over three repeats, and once 1.81x, the
# measured growth of one decode itself varying up to 2x between runs: NeRV 256x512, 48.4 to 94.8 MB).
ACTIVATION_FACTOR = 1.7


def decode_memory(model: str, config: Any, transmitted_values: int, num_decoded: int, batch_size: int) -> int:
    """Bytes that decoding `num_decoded` frames of a file of this model, config and number of transmitted
    values holds at its peak, `batch_size` frames at a time: the transmitted values (BYTES_PER_VALUE
    each), the decoder's activations (traced on the meta device: `decode_footprint`, times
    ACTIVATION_FACTOR) and the decoded frames (BYTES_PER_FRAME_VALUE each)."""
    footprint = decode_footprint(model, config, batch_size)
    frames = num_decoded * 3 * config.height * config.width * BYTES_PER_FRAME_VALUE
    return transmitted_values * BYTES_PER_VALUE + ACTIVATION_FACTOR * footprint.activation_bytes + frames


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
_MAX_FOOTPRINTS = 10_000
