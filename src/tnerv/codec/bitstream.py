"""The .tnrv file format (docs/bitstream.md): a header section, then one section per tensor, each
with its own CRC-32, so that damage is reported by section and never decoded into garbage."""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tnerv.errors import TnervError

MAGIC = b"TNRV"
VERSION = 1
HEADER, TENSOR = 1, 2
_PREAMBLE = struct.Struct("<4sHI")  # magic, version, number of sections
_SECTION = struct.Struct("<BI")  # kind, body length
_CRC = struct.Struct("<I")
SECTION_OVERHEAD = _SECTION.size + _CRC.size  # bytes a section adds around its body
_TENSOR_FIXED = struct.Struct("<ffiI")  # step, offset (float32), qmin, number of table entries


class BitstreamError(TnervError):
    """A file that is not a valid .tnrv bitstream; the message names what is wrong and where."""


@dataclass
class TensorSection:
    """One entropy-coded tensor: symbols q in qmin.., dequantised as q * step - offset."""

    step: float
    offset: float
    qmin: int
    counts: np.ndarray  # frequency table, uint32, each entry >= 1
    payload: bytes  # range-coded symbols

    @property
    def size_in_file(self) -> int:
        """Bytes this section takes in a file: its body and framing."""
        return len(self.to_bytes()) + SECTION_OVERHEAD

    def to_bytes(self) -> bytes:
        """The section body."""
        # Counts are 1..2^16: stored minus one as uint16 to halve the table.
        table = (self.counts.astype(np.int64) - 1).astype("<u2").tobytes()
        return _TENSOR_FIXED.pack(self.step, self.offset, self.qmin, len(self.counts)) + table + self.payload

    @classmethod
    def from_bytes(cls, body: bytes) -> TensorSection:
        """Parses a section body (its checksum already verified)."""
        step, offset, qmin, entries = _TENSOR_FIXED.unpack_from(body)
        start = _TENSOR_FIXED.size
        end = start + 2 * entries
        if end > len(body) or entries == 0:
            raise ValueError("frequency table does not fit the section")
        counts = np.frombuffer(body[start:end], dtype="<u2").astype(np.uint32) + 1
        return cls(step, offset, qmin, counts, body[end:])


def _section(kind: int, body: bytes) -> bytes:
    head = _SECTION.pack(kind, len(body))
    return head + body + _CRC.pack(zlib.crc32(head + body))


def encode_file(header: dict[str, Any], tensors: list[TensorSection]) -> bytes:
    """The bytes of a .tnrv file: preamble, header section, tensor sections."""
    parts = [_PREAMBLE.pack(MAGIC, VERSION, 1 + len(tensors))]
    parts.append(_section(HEADER, json.dumps(header, separators=(",", ":")).encode()))
    parts.extend(_section(TENSOR, t.to_bytes()) for t in tensors)
    return b"".join(parts)


def write_file(path: str | Path, header: dict[str, Any], tensors: list[TensorSection]) -> int:
    """Writes a .tnrv file atomically (temporary file, then rename); returns its size in bytes."""
    path = Path(path)
    data = encode_file(header, tensors)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return len(data)


def _section_name(header: dict[str, Any] | None, index: int) -> str:
    if index == 0:
        return "section 0 (header)"
    try:
        return f"section {index} (tensor {header['tensors'][index - 1]['name']!r})"
    except (TypeError, KeyError, IndexError):
        return f"section {index}"


def decode_file(data: bytes, source: str = "file") -> tuple[dict[str, Any], list[TensorSection]]:
    """Parses and verifies a .tnrv file; BitstreamError names the first problem found."""
    if len(data) < _PREAMBLE.size:
        raise BitstreamError(f"{source} is not a tnerv bitstream: only {len(data)} bytes")
    magic, version, count = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise BitstreamError(f"{source} is not a tnerv bitstream (it does not start with {MAGIC!r})")
    if version != VERSION:
        raise BitstreamError(f"{source} is bitstream version {version}; this tnerv reads version {VERSION}")
    if count < 1:
        raise BitstreamError(f"{source} is malformed: it declares no header section")
    pos, header, tensors = _PREAMBLE.size, None, []
    for index in range(count):
        where = _section_name(header, index)
        if pos + _SECTION.size > len(data):
            raise BitstreamError(f"{source} is truncated: {where} of {count - 1} is missing")
        kind, length = _SECTION.unpack_from(data, pos)
        end = pos + _SECTION.size + length
        if end + _CRC.size > len(data):
            raise BitstreamError(f"{source} is truncated in {where}")
        (crc,) = _CRC.unpack_from(data, end)
        if zlib.crc32(data[pos:end]) != crc:
            raise BitstreamError(f"{source} is corrupted: {where} failed its checksum")
        body = data[pos + _SECTION.size : end]
        expected = HEADER if index == 0 else TENSOR
        if kind != expected:
            raise BitstreamError(f"{source} is malformed: {where} has kind {kind}, expected {expected}")
        try:
            if index == 0:
                header = json.loads(body)
                if not isinstance(header, dict) or len(header.get("tensors", [])) != count - 1:
                    raise ValueError("the header does not list one tensor per section")
            else:
                tensors.append(TensorSection.from_bytes(body))
        except (ValueError, struct.error) as exc:
            raise BitstreamError(f"{source} is malformed: {where}: {exc}") from None
        pos = end + _CRC.size
    if pos != len(data):
        raise BitstreamError(f"{source} has {len(data) - pos} unexpected bytes after its last section")
    return header, tensors


def read_file(path: str | Path) -> tuple[dict[str, Any], list[TensorSection]]:
    """Reads and verifies a .tnrv file."""
    path = Path(path)
    if not path.is_file():
        raise TnervError(f"no such file: {path}")
    return decode_file(path.read_bytes(), str(path))
