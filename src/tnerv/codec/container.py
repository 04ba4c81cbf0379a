"""A model's quantised transmitted state in a .tnrv file, and the decoder rebuilt from that file alone."""

from __future__ import annotations

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
from tnerv.errors import TnervError
from tnerv.models import VideoINR, make_config, model_class
from tnerv.models.base import TRANSMITTED_COMPONENTS

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


def read_model_file(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The header and the dequantised transmitted state of a .tnrv file."""
    header, sections = read_file(path)
    state = {}
    for entry, section in zip(header["tensors"], sections):
        try:
            shape = [int(s) for s in entry["shape"]]
            symbols = decode_symbols(section.payload, section.qmin, section.counts, int(np.prod(shape)))
        except (ValueError, TypeError, KeyError) as exc:
            raise BitstreamError(f"{path}: tensor {entry.get('name')!r} cannot be decoded: {exc}") from None
        q = QuantizedTensor(torch.from_numpy(symbols).reshape(shape), section.step, section.offset)
        state[entry["name"]] = q.dequantize()
    return header, state


def decoder_from_file(path: str | Path, device: str | torch.device = "cpu") -> tuple[VideoINR, dict[str, Any]]:
    """The decoder a .tnrv file describes, rebuilt from the file alone (no preset, no checkpoint)."""
    header, state = read_model_file(path)
    try:
        cls = model_class(header["model"])
        decoder = cls.from_transmitted(make_config(header["model"], header["config"]), state)
    except (KeyError, TypeError, RuntimeError, TnervError) as exc:
        raise BitstreamError(f"{path}: the header does not describe a decoder this tnerv can build: {exc}") from None
    return decoder.to(device).eval(), header

