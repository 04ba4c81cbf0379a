"""A model's quantised transmitted state in a .tnrv file, and the decoder rebuilt from that file alone."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tnerv
from tnerv.codec.bitstream import (
    BitstreamError,
    ChannelSection,
    HalfSection,
    Section,
    TensorSection,
    check_channel_quantiser,
    check_quantiser,
    read_file,
    write_file,
)
from tnerv.codec.entropy import PRECISION, counts_from_symbols, decode_symbols, encode_symbols
from tnerv.codec.quantize import ChannelQuantized, HalfTensor, QuantizedTensor
from tnerv.errors import TnervError, short_repr
from tnerv.host import decode_footprint, decode_memory, default_memory_cap
from tnerv.models import ModelConfig, VideoINR, list_models, make_config, model_class
from tnerv.models.base import TRANSMITTED_COMPONENTS
from tnerv.models.counting import transmitted_shapes

TableFor = Callable[[str, np.ndarray], tuple[int, np.ndarray]]
"""Gives (qmin, frequency table) for a tensor's name and symbols."""
Quantized = QuantizedTensor | ChannelQuantized | HalfTensor
"""A transmitted tensor as a file holds it: quantised per tensor, per channel, or as float16 values."""


@dataclass
class FileSummary:
    """What a written file holds: its size and where the bytes went."""

    path: str
    num_bytes: int
    bytes_by_component: dict[str, int]
    bytes_by_tensor: dict[str, int] = field(default_factory=dict)
    payload_bytes: int = 0  # the range-coded symbols alone (no tables, no framing, no float16 values)


def write_model_file(
    path: str | Path,
    model: str,
    config: dict[str, Any],
    video: dict[str, Any],
    quantized: dict[str, Quantized],
    components: dict[str, str],
    table_for: TableFor,
    extra: dict[str, Any] | None = None,
) -> FileSummary:
    """Entropy-codes quantised tensors into a .tnrv file with everything a decoder needs."""
    entries, sections = [], []
    for name, q in quantized.items():
        try:  # a file that its own decoder would refuse is never written
            sections.append(_section(name, q, table_for))
        except ValueError as exc:
            raise TnervError(f"tensor {name} cannot be written: {exc}") from None
        entries.append({"name": name, "shape": list(q.shape), "component": components[name]})
    header = {
        "tnerv_version": tnerv.__version__,
        "model": model,
        "config": config,
        "video": video,
        "tensors": entries,
        **(extra or {}),
    }
    size = write_file(path, header, sections)
    by_tensor = {e["name"]: s.size_in_file for e, s in zip(entries, sections)}
    by_component = {c: 0 for c in (*TRANSMITTED_COMPONENTS, "other")}
    for entry in entries:
        by_component[entry["component"]] += by_tensor[entry["name"]]
    by_component["other"] += size - sum(by_tensor.values())  # preamble and header
    payload = sum(s.summary()["payload_bytes"] for s in sections)
    return FileSummary(str(path), size, by_component, by_tensor, payload)


def _coded(name: str, symbols: np.ndarray, table_for: TableFor) -> tuple[int, np.ndarray, bytes]:
    """(qmin, frequency table, payload) of a tensor's symbols; ValueError if the table misses one."""
    if symbols.size == 0:  # every weight pruned: one symbol's table, no payload
        return 0, np.array([1 << PRECISION], dtype=np.uint32), b""
    qmin, counts = table_for(name, symbols)
    if symbols.min() < qmin or symbols.max() >= qmin + len(counts):
        raise ValueError("its frequency table does not cover its symbols")
    return qmin, counts, encode_symbols(symbols, qmin, counts)


def _section(name: str, q: Quantized, table_for: TableFor) -> Section:
    """The file section of one quantised tensor, checked as its decoder will check it (ValueError)."""
    if isinstance(q, HalfTensor):
        values = q.values.detach().cpu().numpy().astype(np.float16).ravel()
        if not np.isfinite(values).all():
            raise ValueError("a value is not finite as float16 (beyond +-65504, or NaN)")
        return HalfSection(values)
    symbols = q.symbols.detach().cpu().numpy().astype(np.int64).ravel()
    if isinstance(q, ChannelQuantized):
        mask_counts, mask_payload = None, b""
        if q.mask is not None:
            mask = q.mask.detach().cpu().numpy().astype(np.int64).ravel()
            mask_counts = counts_from_symbols(mask, 0, 1)
            mask_payload = encode_symbols(mask, 0, mask_counts)
            symbols = symbols[mask.astype(bool)]  # only the kept values are coded
        qmin, counts, payload = _coded(name, symbols, table_for)
        scales = q.scales.detach().cpu().numpy().astype(np.float16)
        check_channel_quantiser(scales, qmin, len(counts))
        return ChannelSection(scales, q.reduced, q.group, mask_counts, mask_payload, qmin, counts, payload)
    qmin, counts, payload = _coded(name, symbols, table_for)
    check_quantiser(q.step, q.offset, qmin, len(counts))
    return TensorSection(q.step, q.offset, qmin, counts, payload)


# Transmitted values per file byte above which a file declares more decoding than any writer's file
# (docs/bitstream.md): 1024 is 1/128 bit per value over the whole file; real files hold 0.2-1.4.
MAX_VALUES_PER_BYTE = 1024
# Multiply-accumulates per output pixel per transmitted value above which a file declares more work than
# a real model of its size: a decoder's layers run at or below the frame's resolution, so each output
# pixel costs at most about one MAC per weight (times the neighbour frames a flow-guided model decodes);
# the seven models measure 0.01-0.25.
MAX_MACS_PER_PIXEL_PER_VALUE = 4


# How much larger than the video a model's frame may be, per side (writers pad by at most 6% a side).
MAX_PADDING = 2


def declared_values(header: dict[str, Any]) -> int:
    """The number of transmitted values a (checked) header declares: the product of each tensor's shape."""
    return sum(math.prod(entry["shape"]) for entry in header["tensors"])


def check_header(header: dict[str, Any], source: str = "file") -> ModelConfig:
    """Checks every field a decoder uses against the file itself before anything is allocated: the
    model and its config (which must build), the video's geometry, and each tensor's name, shape and
    component against the decoder that config describes (each tensor section's own fields were
    checked as it was read: `Section.from_bytes`). Returns the model's config; BitstreamError
    names the problem."""

    def bad(what: str) -> BitstreamError:
        return BitstreamError(f"{source}: {what}")

    model = header.get("model")
    if not isinstance(model, str) or model not in list_models():
        raise bad(f"unknown model {short_repr(model)} (this tnerv has {', '.join(list_models())})")
    if not isinstance(header.get("config"), dict):
        raise bad("the header holds no model config")
    try:
        config = make_config(model, header["config"])
        expected = transmitted_shapes(model, config)
    except TnervError as exc:
        raise bad(f"the header does not describe a decoder this tnerv can build: {exc}") from None
    _check_video(header.get("video"), config, bad)
    listed: dict[str, tuple[int, ...]] = {}
    for entry in header["tensors"]:  # the bitstream layer checked that each is a dict with a name
        name, shape = entry["name"], entry.get("shape")
        if name in listed:
            raise bad(f"the header lists tensor {name!r} twice")
        if name not in expected:
            raise bad(f"tensor {short_repr(name)} is not part of a {model} decoder of this config")
        if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
            raise bad(f"tensor {name!r} has no valid shape ({short_repr(shape)})")
        listed[name] = tuple(shape)
        want, component = expected[name]
        if listed[name] != want or entry.get("component") != component:
            raise bad(
                f"tensor {name!r} is {short_repr(shape)} {short_repr(entry.get('component'))}; the config's "
                f"decoder holds {list(want)} {component}"
            )
    missing = [name for name in expected if name not in listed]
    if missing:
        raise bad(f"tensor {missing[0]!r} of the {model} decoder is missing")
    return config


def check_cost(
    header: dict[str, Any],
    config: ModelConfig,
    file_bytes: int,
    source: str = "file",
    max_memory: int | None = None,
    num_decoded: int | None = None,
    batch_size: int = 4,
) -> None:
    """Refuses a file (its header checked) that declares more decoding than a real file of its size
    (`check_work`), or whose decoding of `num_decoded` frames (default all), `batch_size` at a time,
    would need more than `max_memory` bytes (`tnerv.host.decode_memory`; default: `default_memory_cap()`)."""

    def bad(what: str) -> BitstreamError:
        return BitstreamError(f"{source}: {what}")

    check_work(header, config, file_bytes, bad, batch_size)
    limit = default_memory_cap() if max_memory is None else max_memory
    needed = decode_memory(header["model"], config, declared_values(header), num_decoded or config.num_frames, batch_size)
    if needed > limit:
        raise bad(
            f"decoding it needs about {_gib(needed)}, more than the {_gib(limit)} allowed "
            f"(--max-memory; a smaller --batch-size than {batch_size} needs less)"
        )


def _gib(num_bytes: int) -> str:
    return f"{num_bytes / 2**30:.2f} GiB"


def check_work(
    header: dict[str, Any],
    config: ModelConfig,
    file_bytes: int,
    bad: Callable[[str], BitstreamError],
    batch_size: int = 1,
) -> None:
    """Refuses a file (its header checked) that declares far more decoding than a real model of its size
    could need: more transmitted values per file byte than MAX_VALUES_PER_BYTE, or more multiply-
    accumulates per output pixel than MAX_MACS_PER_PIXEL_PER_VALUE per transmitted value (traced in
    batches of `batch_size`, as the memory estimate is, so that one trace serves both)."""
    values = declared_values(header)
    if values > MAX_VALUES_PER_BYTE * file_bytes:
        raise bad(
            f"it declares {values:,} values in {file_bytes:,} bytes ({values / file_bytes:,.0f} per byte); "
            f"a tnerv file holds at most {MAX_VALUES_PER_BYTE} per byte"
        )
    pixels = header["video"]["height"] * header["video"]["width"]
    macs = decode_footprint(header["model"], config, batch_size).macs_per_frame / pixels
    if macs > MAX_MACS_PER_PIXEL_PER_VALUE * max(values, 1):
        raise bad(
            f"it declares {macs:,.0f} multiply-accumulates per output pixel for {values:,} values; a real "
            f"model of that size needs at most {MAX_MACS_PER_PIXEL_PER_VALUE * values:,}"
        )


def _check_video(video: Any, config: ModelConfig, bad: Callable[[str], BitstreamError]) -> None:
    if not isinstance(video, dict):
        raise bad("the header holds no video description")
    n, h, w, fps = (video.get(k) for k in ("num_frames", "height", "width", "fps"))
    if n != config.num_frames or not _is_count(n):
        raise bad(f"the video's {short_repr(n)} frames are not the model's {config.num_frames}")
    if not (_is_count(h) and _is_count(w) and 1 <= h <= config.height and 1 <= w <= config.width):
        raise bad(f"the video's size {short_repr(w)}x{short_repr(h)} does not fit the model's {config.width}x{config.height}")
    if config.height > MAX_PADDING * h or config.width > MAX_PADDING * w:
        # Decoding work and memory follow the model's frame, the output the video's: a writer pads
        # by at most 6% a side (tnerv.models.budget), so a frame twice the video's is no writer's.
        raise bad(f"the model's frame {config.width}x{config.height} is more than {MAX_PADDING}x the video's {w}x{h} a side")
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not (math.isfinite(fps) and fps > 0):
        raise bad(f"the video's frame rate {short_repr(fps)} is not a positive number")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def transmitted_state(header: dict[str, Any], sections: list[Section], source: str = "file") -> dict[str, torch.Tensor]:
    """The dequantised transmitted tensors of a file's (checked) sections, by name; each must be finite."""
    state = {}
    for index, (entry, section) in enumerate(zip(header["tensors"], sections), start=1):
        try:
            q = _quantized(section, entry["shape"])
        except Exception as exc:  # noqa: BLE001 - whatever the entropy coder raises, the section is bad
            raise BitstreamError(f"{source}: section {index} (tensor {entry['name']!r}) cannot be decoded: {exc}") from None
        state[entry["name"]] = check_finite(q.dequantize(), f"tensor {entry['name']!r}", source)
    return state


def _quantized(section: Section, shape: list[int]) -> Quantized:
    """A section's tensor of `shape` (the header's, checked), its sizes checked against the shape."""
    numel = math.prod(shape)
    if isinstance(section, HalfSection):
        if len(section.values) != numel:
            raise ValueError(f"{len(section.values)} float16 values for {numel}")
        return HalfTensor(torch.from_numpy(section.values.astype(np.float16)).reshape(shape))
    if isinstance(section, TensorSection):
        symbols = decode_symbols(section.payload, section.qmin, section.counts, numel)
        return QuantizedTensor(torch.from_numpy(symbols).reshape(shape), section.step, section.offset)
    if len(section.scales) * section.reduced != numel or numel % (section.reduced * section.group):
        raise ValueError(f"{len(section.scales)} scales over {section.reduced} x {section.group} values do not "
                         f"tile its {numel}")
    mask = None
    kept = numel
    if section.mask_counts is not None:
        mask = decode_symbols(section.mask_payload, 0, section.mask_counts, numel)
        kept = int(mask.sum())
    values = decode_symbols(section.payload, section.qmin, section.counts, kept)
    symbols = np.zeros(numel, dtype=np.int64)
    if mask is None:
        symbols[:] = values
    else:
        symbols[mask.astype(bool)] = values
    return ChannelQuantized(
        torch.from_numpy(symbols).reshape(shape), torch.from_numpy(section.scales.astype(np.float16)),
        section.reduced, section.group, None if mask is None else torch.from_numpy(mask.astype(bool)).reshape(shape),
    )


def check_finite(values: torch.Tensor, what: str, source: str = "file") -> torch.Tensor:
    """`values` if every one is finite; else BitstreamError naming `what` (a tensor, a frame)."""
    if not bool(torch.isfinite(values).all()):
        raise BitstreamError(f"{source}: {what} decodes to non-finite values (NaN or infinity)")
    return values


def check_frames(frames: torch.Tensor, first: int, source: str = "file") -> torch.Tensor:
    """Decoded frames (N, 3, H, W) numbered from `first`, if every value is finite: a frame that is not
    would be written as black or garbage, so it is refused, naming the first such frame."""
    bad = (~torch.isfinite(frames)).flatten(1).any(dim=1).nonzero()
    if len(bad):
        check_finite(frames[bad[0, 0]], f"frame {first + int(bad[0, 0])}", source)
    return frames


def build_decoder(
    header: dict[str, Any],
    config: ModelConfig,
    sections: list[Section],
    source: str = "file",
    device: str | torch.device = "cpu",
) -> VideoINR:
    """The decoder a file describes (its header checked: `check_header`, its cost: `check_cost`),
    rebuilt from the file alone (no preset, no checkpoint), each layer refusing a non-finite output."""
    state = transmitted_state(header, sections, source)
    try:
        decoder = model_class(header["model"]).from_transmitted(config, state)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise BitstreamError(f"{source}: its tensors do not load into the decoder: {exc}") from None
    check_activations(decoder, source)
    return decoder.to(device).eval()


def decoder_from_file(
    path: str | Path,
    device: str | torch.device = "cpu",
    max_memory: int | None = None,
    num_decoded: int | None = None,
    batch_size: int = 4,
) -> tuple[VideoINR, dict[str, Any]]:
    """The decoder of a .tnrv file and its header: the file read and checked once (`check_header`, then
    `check_cost` with `max_memory`, `num_decoded` and `batch_size`), then `build_decoder`."""
    header, sections = read_file(path)
    config = check_header(header, str(path))
    check_cost(header, config, Path(path).stat().st_size, str(path), max_memory, num_decoded, batch_size)
    return build_decoder(header, config, sections, str(path), device), header


def check_activations(decoder: VideoINR, source: str = "file") -> None:
    """Makes every layer of a decoder that applies transmitted values refuse to pass on a non-finite
    output: the decoder clamps its frames to [0, 1], which turns an infinity into a plausible 0 or 1, so
    overflow is caught where it happens, naming the layer."""
    for name, module in decoder.named_modules():
        # Leaves holding parameters (convolutions, linear layers, norms): where a file's values multiply
        # and can overflow. Parameter-free layers (activations, shuffles, upsampling) are not checked:
        # checking every leaf made batch-1 decoding 1.37-1.55x slower (NeRV, FFNeRV reference presets,
        # one run, medians of 7 passes), these alone 1.11-1.13x.
        if not next(module.children(), None) and next(module.parameters(recurse=False), None) is not None:
            module.register_forward_hook(_finite_output(f"the output of layer {name!r}", source))


def _finite_output(what: str, source: str) -> Callable[..., None]:
    def hook(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        for value in output if isinstance(output, tuple | list) else (output,):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                check_finite(value, what, source)

    return hook
