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
from tnerv.codec.bitstream import BitstreamError, TensorSection, read_file, write_file
from tnerv.codec.entropy import decode_symbols, encode_symbols
from tnerv.codec.quantize import QuantizedTensor
from tnerv.errors import TnervError, short_repr
from tnerv.models import ModelConfig, VideoINR, list_models, make_config, model_class
from tnerv.models.base import TRANSMITTED_COMPONENTS
from tnerv.models.sizing import machine_memory, transmitted_shapes

TableFor = Callable[[str, np.ndarray], tuple[int, np.ndarray]]
"""Gives (qmin, frequency table) for a tensor's name and symbols."""


@dataclass
class FileSummary:
    """What a written file holds: its size and where the bytes went."""

    path: str
    num_bytes: int
    bytes_by_component: dict[str, int]
    bytes_by_tensor: dict[str, int] = field(default_factory=dict)
    payload_bytes: int = 0  # the range-coded symbols alone (no tables, no framing)


def write_model_file(
    path: str | Path,
    model: str,
    config: dict[str, Any],
    video: dict[str, Any],
    quantized: dict[str, QuantizedTensor],
    components: dict[str, str],
    table_for: TableFor,
    extra: dict[str, Any] | None = None,
) -> FileSummary:
    """Entropy-codes quantised tensors into a .tnrv file with everything a decoder needs."""
    entries, sections = [], []
    for name, q in quantized.items():
        symbols = q.symbols.detach().cpu().numpy().astype(np.int64).ravel()
        qmin, counts = table_for(name, symbols)
        if symbols.size and (symbols.min() < qmin or symbols.max() >= qmin + len(counts)):
            raise TnervError(f"the frequency table of {name} does not cover its symbols")
        sections.append(TensorSection(q.step, q.offset, qmin, counts, encode_symbols(symbols, qmin, counts)))
        entries.append({"name": name, "shape": list(q.symbols.shape), "component": components[name]})
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
    return FileSummary(str(path), size, by_component, by_tensor, sum(len(s.payload) for s in sections))


# Bytes a decoder holds per transmitted value while it rebuilds a model: the decoded symbol (int64),
# its check (int32), the dequantised value and the model's parameter (float32 each).
BYTES_PER_VALUE = 20


def check_header(
    header: dict[str, Any],
    source: str = "file",
    max_memory: int | None = None,
    num_decoded: int | None = None,
) -> ModelConfig:
    """Checks every field a decoder uses against the file itself before anything is allocated: the
    model and its config (which must build), the video's geometry, and each tensor's name, shape and
    component against the decoder that config describes (each tensor section's own fields were
    checked as it was read: `TensorSection.from_bytes`); with `max_memory` (bytes), refuses a file
    whose decoding (of `num_decoded` frames, default all) would need more. Returns the model's config;
    BitstreamError names the problem."""

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
    if max_memory is not None:
        values = sum(math.prod(shape) for shape, _ in expected.values())
        frames = (num_decoded or config.num_frames) * 3 * config.height * config.width * 4
        needed = values * BYTES_PER_VALUE + frames
        if needed > max_memory:
            raise bad(
                f"decoding it needs about {needed / 2**30:.1f} GiB, more than the {max_memory / 2**30:.1f} GiB "
                "allowed (--max-memory)"
            )
    return config


def _check_video(video: Any, config: ModelConfig, bad: Callable[[str], BitstreamError]) -> None:
    if not isinstance(video, dict):
        raise bad("the header holds no video description")
    n, h, w, fps = (video.get(k) for k in ("num_frames", "height", "width", "fps"))
    if n != config.num_frames or not _is_count(n):
        raise bad(f"the video's {short_repr(n)} frames are not the model's {config.num_frames}")
    if not (_is_count(h) and _is_count(w) and 1 <= h <= config.height and 1 <= w <= config.width):
        raise bad(f"the video's size {short_repr(w)}x{short_repr(h)} does not fit the model's {config.width}x{config.height}")
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not (math.isfinite(fps) and fps > 0):
        raise bad(f"the video's frame rate {short_repr(fps)} is not a positive number")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_model_file(
    path: str | Path, max_memory: int | None = None, num_decoded: int | None = None
) -> tuple[dict[str, Any], ModelConfig, dict[str, torch.Tensor]]:
    """The header, the model config and the dequantised transmitted state of a .tnrv file (checked
    by `check_header`; `max_memory` default: this machine's memory)."""
    header, sections = read_file(path)
    limit = machine_memory() if max_memory is None else max_memory
    config = check_header(header, str(path), limit, num_decoded)
    state = {}
    for index, (entry, section) in enumerate(zip(header["tensors"], sections), start=1):
        shape = entry["shape"]
        try:
            symbols = decode_symbols(section.payload, section.qmin, section.counts, math.prod(shape))
        except Exception as exc:  # noqa: BLE001 - whatever the entropy coder raises, the section is bad
            raise BitstreamError(f"{path}: section {index} (tensor {entry['name']!r}) cannot be decoded: {exc}") from None
        q = QuantizedTensor(torch.from_numpy(symbols).reshape(shape), section.step, section.offset)
        state[entry["name"]] = q.dequantize()
    return header, config, state


def decoder_from_file(
    path: str | Path, device: str | torch.device = "cpu", max_memory: int | None = None, num_decoded: int | None = None
) -> tuple[VideoINR, dict[str, Any]]:
    """The decoder a .tnrv file describes, rebuilt from the file alone (no preset, no checkpoint);
    `max_memory` and `num_decoded` (the frames the caller will decode) as in check_header."""
    header, config, state = read_model_file(path, max_memory, num_decoded)
    try:
        decoder = model_class(header["model"]).from_transmitted(config, state)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise BitstreamError(f"{path}: its tensors do not load into the decoder: {exc}") from None
    return decoder.to(device).eval(), header
