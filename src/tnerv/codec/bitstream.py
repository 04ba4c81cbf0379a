"""The .tnrv file format (docs/bitstream.md): a header section, then one section per tensor (quantised per
tensor, quantised per channel, or float16 values), each with its own CRC-32, so that damage is reported by
section and never decoded into garbage; or, for a video coded in segments (version 4), a header section
listing the segments, then one section per segment holding that segment's own .tnrv file (version 2 or 3). Each
checksum also covers the section's index, its tensor's name and the previous section's checksum, so
that a section moved to another place (or taken from another file) fails its check too."""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tnerv.codec.entropy import PRECISION
from tnerv.errors import TnervError
from tnerv.files import write_atomic

MAGIC = b"TNRV"
# Version 2: each section's checksum covers its index, its name and the checksum before it (the
# header's: the preamble), and the preamble holds a checksum of all tensor sections (docs/bitstream.md).
# Version 3 adds two kinds of tensor section (per-channel quantised, float16); a file is written as
# version 3 only when it holds one, so that every other file stays readable by the tnerv before it.
# Version 4 is a video coded in segments: its sections are whole files of versions 2 and 3, one a segment.
VERSION, SEGMENTED = 3, 4
READS = (2, 3, 4)
HEADER, TENSOR, CHANNEL_TENSOR, HALF_TENSOR, SEGMENT = 1, 2, 3, 4, 5
SECTION_KINDS = {2: (TENSOR,), 3: (TENSOR, CHANNEL_TENSOR, HALF_TENSOR), 4: (SEGMENT,)}  # by version
_PREAMBLE = struct.Struct("<4sHII")  # magic, version, number of sections, CRC-32 of the tensor sections
_SECTION = struct.Struct("<BI")  # kind, body length
_CRC = struct.Struct("<I")
_INDEX = struct.Struct("<I")
HEADER_NAME = "header"  # the name the header section's checksum covers
SECTION_OVERHEAD = _SECTION.size + _CRC.size  # bytes a section adds around its body
_TENSOR_FIXED = struct.Struct("<ffiI")  # step, offset (float32), qmin, number of table entries
_CHANNEL_FIXED = struct.Struct("<IIIB")  # number of scales, reduced axis length, group, masked (0 or 1)
_CODED = struct.Struct("<iI")  # qmin, number of table entries
_MASK_FIXED = struct.Struct("<HHI")  # the mask's two counts minus one, its payload's length in bytes
# What a tnerv writer can put in a tensor section (docs/bitstream.md, "Field bounds"): the values it
# dequantises to, q * step - offset for every symbol of its table, lie within +-MAX_VALUE (trained
# weights, grids and embeddings measure below 3; 2^16 leaves a wide margin); symbols within +-2^24,
# which float32 (the dequantisation's arithmetic) holds exactly; a step of at least MIN_STEP (the
# writers' smallest is 1e-8 / (2^16 - 1), a constant tensor's at 16 bits; learned steps move from there).
MAX_VALUE = 2.0**16
MAX_SYMBOL = 2**24
MIN_STEP = 2.0**-64


class BitstreamError(TnervError):
    """A file that is not a valid .tnrv bitstream; the message names what is wrong and where."""


@dataclass
class TensorSection:
    """One entropy-coded tensor: symbols q in qmin.., dequantised as q * step - offset."""

    kind: ClassVar[int] = TENSOR
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
        return struct.pack("<ff", self.step, self.offset) + _coded_bytes(self.qmin, self.counts, self.payload)

    def summary(self) -> dict[str, Any]:
        """What `tnerv inspect` shows of it: the range-coded bytes and the quantiser."""
        return {"payload_bytes": len(self.payload), "step": self.step}

    @classmethod
    def from_bytes(cls, body: bytes) -> TensorSection:
        """Parses a section body (its checksum already verified)."""
        step, offset, qmin, entries = _TENSOR_FIXED.unpack_from(body)
        check_quantiser(step, offset, qmin, entries)
        qmin, counts, payload = _parse_coded(body, 8)
        return cls(step, offset, qmin, counts, payload)


@dataclass
class ChannelSection:
    """One tensor quantised per channel (HiNeRV's): symbols q in qmin.., the value at row-major index i
    q * scales[(i // (reduced * group)) * group + i % group], and 0 where the optional mask is 0 (pruned
    weights: only the kept values' symbols are coded, the mask before them)."""

    kind: ClassVar[int] = CHANNEL_TENSOR
    scales: np.ndarray  # float16, each finite and positive
    reduced: int
    group: int
    mask_counts: np.ndarray | None  # the frequency table of the mask's symbols 0 and 1; None: no mask
    mask_payload: bytes
    qmin: int
    counts: np.ndarray
    payload: bytes

    @property
    def size_in_file(self) -> int:
        """Bytes this section takes in a file: its body and framing."""
        return len(self.to_bytes()) + SECTION_OVERHEAD

    def to_bytes(self) -> bytes:
        """The section body."""
        masked = self.mask_counts is not None
        parts = [_CHANNEL_FIXED.pack(len(self.scales), self.reduced, self.group, int(masked)),
                 self.scales.astype("<f2").tobytes()]
        if masked:
            low, high = (int(c) - 1 for c in self.mask_counts)
            parts += [_MASK_FIXED.pack(low, high, len(self.mask_payload)), self.mask_payload]
        return b"".join(parts) + _coded_bytes(self.qmin, self.counts, self.payload)

    def summary(self) -> dict[str, Any]:
        """What `tnerv inspect` shows of it: the range-coded bytes (symbols and mask) and the quantiser."""
        return {"payload_bytes": len(self.payload) + len(self.mask_payload), "scales": len(self.scales),
                "masked": self.mask_counts is not None}

    @classmethod
    def from_bytes(cls, body: bytes) -> ChannelSection:
        """Parses a section body (its checksum already verified)."""
        count, reduced, group, masked = _CHANNEL_FIXED.unpack_from(body)
        if count == 0 or reduced == 0 or group == 0 or masked > 1:
            raise ValueError(f"{count} scales over {reduced} x {group} values, mask flag {masked}: not a writer's")
        start = _CHANNEL_FIXED.size
        if start + 2 * count > len(body):
            raise ValueError("the scales do not fit the section")
        scales = np.frombuffer(body[start : start + 2 * count], dtype="<f2")
        start += 2 * count
        mask_counts, mask_payload = None, b""
        if masked:
            low, high, length = _MASK_FIXED.unpack_from(body, start)
            start += _MASK_FIXED.size
            mask_counts = np.array([low + 1, high + 1], dtype=np.uint32)
            if int(mask_counts.sum()) != 1 << PRECISION:
                raise ValueError(f"the mask's frequency table sums to {int(mask_counts.sum())}, not 2^{PRECISION}")
            if length % 4 or start + length > len(body):
                raise ValueError(f"a mask payload of {length} bytes: not whole 32-bit words within the section")
            mask_payload, start = body[start : start + length], start + length
        qmin, entries = _CODED.unpack_from(body, start)
        check_channel_quantiser(scales, qmin, entries)
        qmin, counts, payload = _parse_coded(body, start)
        return cls(scales, reduced, group, mask_counts, mask_payload, qmin, counts, payload)


@dataclass
class HalfSection:
    """One tensor stored as float16 values, row-major, each finite."""

    kind: ClassVar[int] = HALF_TENSOR
    values: np.ndarray  # float16

    @property
    def size_in_file(self) -> int:
        """Bytes this section takes in a file: its body and framing."""
        return len(self.to_bytes()) + SECTION_OVERHEAD

    def to_bytes(self) -> bytes:
        """The section body."""
        return self.values.astype("<f2").tobytes()

    def summary(self) -> dict[str, Any]:
        """What `tnerv inspect` shows of it: its values' bytes (nothing is range-coded)."""
        return {"payload_bytes": 0, "float16_values": len(self.values)}

    @classmethod
    def from_bytes(cls, body: bytes) -> HalfSection:
        """Parses a section body (its checksum already verified)."""
        if len(body) % 2:
            raise ValueError(f"{len(body)} bytes are not whole float16 values")
        values = np.frombuffer(body, dtype="<f2")
        if not np.isfinite(values).all():
            raise ValueError("a float16 value is not finite (NaN or infinity)")
        return cls(values)


@dataclass
class SegmentSection:
    """One segment of a video coded in segments: the bytes of its own .tnrv file (parsed when decoded)."""

    kind: ClassVar[int] = SEGMENT
    data: bytes

    @property
    def size_in_file(self) -> int:
        """Bytes this section takes in a file: its body and framing."""
        return len(self.data) + SECTION_OVERHEAD

    def to_bytes(self) -> bytes:
        """The section body."""
        return self.data

    def summary(self) -> dict[str, Any]:
        """What `tnerv inspect` shows of it: its file's bytes."""
        return {"file_bytes": len(self.data)}

    @classmethod
    def from_bytes(cls, body: bytes) -> SegmentSection:
        """Parses a section body (its checksum already verified; the file it holds is read when decoded)."""
        return cls(bytes(body))


Section = TensorSection | ChannelSection | HalfSection | SegmentSection
_SECTION_TYPES: dict[int, type[Section]] = {
    t.kind: t for t in (TensorSection, ChannelSection, HalfSection, SegmentSection)}


def listed(header: dict[str, Any]) -> list[dict[str, Any]]:
    """The header's entries of the sections after it, each with the name its checksum covers: a segmented
    file's segments, any other file's tensors."""
    return header["segments"] if "segments" in header else header["tensors"]


def _coded_bytes(qmin: int, counts: np.ndarray, payload: bytes) -> bytes:
    """qmin, the frequency table and the range-coded payload, as a section ends with them."""
    # Counts are 1..2^16: stored minus one as uint16 to halve the table.
    table = (counts.astype(np.int64) - 1).astype("<u2").tobytes()
    return _CODED.pack(qmin, len(counts)) + table + payload


def _parse_coded(body: bytes, start: int) -> tuple[int, np.ndarray, bytes]:
    """(qmin, frequency table, payload) of the coded symbols that end a section, from `start`."""
    qmin, entries = _CODED.unpack_from(body, start)
    start += _CODED.size
    end = start + 2 * entries
    if end > len(body) or entries == 0:
        raise ValueError("frequency table does not fit the section")
    counts = np.frombuffer(body[start:end], dtype="<u2").astype(np.uint32) + 1
    if int(counts.sum(dtype=np.int64)) != 1 << PRECISION:
        raise ValueError(f"the frequency table sums to {int(counts.sum(dtype=np.int64))}, not 2^{PRECISION}")
    if (len(body) - end) % 4:
        raise ValueError("a range-coded payload is a whole number of 32-bit words")
    return qmin, counts, body[end:]


def check_quantiser(step: float, offset: float, qmin: int, entries: int) -> None:
    """Raises ValueError unless a section's quantiser lies within what a tnerv writer produces: a step
    in [MIN_STEP, MAX_VALUE], symbols qmin .. qmin + entries - 1 within +-MAX_SYMBOL, and every value
    they dequantise to (q * step - offset, extreme at either end) within +-MAX_VALUE."""
    if not (math.isfinite(step) and math.isfinite(offset)):
        raise ValueError(f"quantiser step {step:g} and offset {offset:g} must be finite")
    if not MIN_STEP <= step <= MAX_VALUE:
        raise ValueError(f"quantiser step {step:g} is outside a writer's range [2^-64, 2^16]")
    qmax = qmin + entries - 1
    if qmin < -MAX_SYMBOL or qmax > MAX_SYMBOL:
        raise ValueError(f"symbols {qmin}..{qmax} are outside a writer's range -2^24..2^24")
    # In float64, the float32 arithmetic's values to within its rounding: exact enough for a bound.
    extreme = max(abs(qmin * step - offset), abs(qmax * step - offset))
    if extreme > MAX_VALUE:
        raise ValueError(
            f"symbols {qmin}..{qmax} with step {step:g} and offset {offset:g} dequantise to values up to "
            f"{extreme:g}, outside a writer's range +-2^16"
        )


def check_channel_quantiser(scales: np.ndarray, qmin: int, entries: int) -> None:
    """Raises ValueError unless a per-channel section's quantiser lies within what a tnerv writer produces:
    every scale finite and positive, symbols within +-MAX_SYMBOL, and every value they dequantise to
    within +-MAX_VALUE (float16 scales are at most 65504, so the symbols bound the values)."""
    as_float = scales.astype(np.float64)
    if not (np.isfinite(as_float).all() and (as_float > 0).all()):
        raise ValueError("a channel's scale is not a finite positive number")
    qmax = qmin + entries - 1
    if qmin < -MAX_SYMBOL or qmax > MAX_SYMBOL:
        raise ValueError(f"symbols {qmin}..{qmax} are outside a writer's range -2^24..2^24")
    extreme = max(abs(qmin), abs(qmax)) * float(as_float.max())
    if extreme > MAX_VALUE:
        raise ValueError(f"symbols {qmin}..{qmax} with scales up to {as_float.max():g} dequantise to values up to "
                         f"{extreme:g}, outside a writer's range +-2^16")


def section_checksum(index: int, name: str, framed: bytes, previous: int) -> int:
    """The CRC-32 of a section: its index, its name ("header" or the tensor's), its kind, length and
    body, continued from `previous` (the previous section's checksum; the preamble's before the header)."""
    return zlib.crc32(framed, zlib.crc32(_INDEX.pack(index) + name.encode("utf-8", "surrogatepass"), previous))


def pack(header: dict[str, Any], tensors: list[Section]) -> bytes:
    """The bytes of a .tnrv file: preamble, header section, tensor sections."""
    header_body = json.dumps(header, separators=(",", ":")).encode()
    return frame_sections(header, header_body, [t.to_bytes() for t in tensors], [t.kind for t in tensors])


def frame_sections(
    header: dict[str, Any], header_body: bytes, tensor_bodies: list[bytes], kinds: list[int] | None = None
) -> bytes:
    """A file from its section bodies as they are (the header's JSON encoded, tensor sections as their
    `to_bytes` gives them, of `kinds`, by default all per-tensor): preamble, framing and checksums. The
    version is 2 unless a section is of a kind version 3 added."""
    names = [entry["name"] for entry in listed(header)]
    kinds = [TENSOR] * len(tensor_bodies) if kinds is None else kinds
    framed = [_SECTION.pack(kind, len(body)) + body for kind, body in zip(kinds, tensor_bodies, strict=True)]
    digest = 0  # the preamble's checksum of the tensor sections: their chain, started from 0
    for index, (name, section) in enumerate(zip(names, framed, strict=True), start=1):
        digest = section_checksum(index, name, section, digest)
    version = 2 if all(kind == TENSOR for kind in kinds) else SEGMENTED if SEGMENT in kinds else VERSION
    preamble = _PREAMBLE.pack(MAGIC, version, 1 + len(tensor_bodies), digest)
    head = _SECTION.pack(HEADER, len(header_body)) + header_body
    crc = section_checksum(0, HEADER_NAME, head, zlib.crc32(preamble))
    parts = [preamble, head, _CRC.pack(crc)]
    for index, (name, section) in enumerate(zip(names, framed), start=1):
        crc = section_checksum(index, name, section, crc)
        parts += [section, _CRC.pack(crc)]
    return b"".join(parts)


def write_file(path: str | Path, header: dict[str, Any], tensors: list[Section]) -> int:
    """Writes a .tnrv file atomically (temporary file, then rename); returns its size in bytes."""
    data = pack(header, tensors)
    write_atomic(path, data)
    return len(data)


def _section_name(header: dict[str, Any] | None, index: int) -> str:
    if index == 0:
        return "section 0 (header)"
    try:
        what = "segment" if "segments" in header else "tensor"
        return f"section {index} ({what} {listed(header)[index - 1]['name']!r})"
    except (TypeError, KeyError, IndexError):
        return f"section {index}"


def unpack(data: bytes, source: str = "file") -> tuple[dict[str, Any], list[Section]]:
    """Parses and verifies a .tnrv file; BitstreamError names the first problem found."""
    if len(data) < _PREAMBLE.size:
        raise BitstreamError(f"{source} is not a tnerv bitstream: only {len(data)} bytes")
    magic, version, count, digest = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise BitstreamError(f"{source} is not a tnerv bitstream (it does not start with {MAGIC!r})")
    if version not in READS:
        raise BitstreamError(f"{source} is bitstream version {version}; this tnerv reads versions 2 to {SEGMENTED}")
    if count < 1:
        raise BitstreamError(f"{source} is malformed: it declares no header section")
    if count > len(data) // SECTION_OVERHEAD:
        raise BitstreamError(f"{source} is malformed: it declares {count} sections in {len(data)} bytes")
    pos, header, tensors = _PREAMBLE.size, None, []
    previous, chain = zlib.crc32(data[: _PREAMBLE.size]), 0
    for index in range(count):
        where = _section_name(header, index)
        if pos + _SECTION.size > len(data):
            raise BitstreamError(f"{source} is truncated: {where} of {count - 1} is missing")
        kind, length = _SECTION.unpack_from(data, pos)
        end = pos + _SECTION.size + length
        if end + _CRC.size > len(data):
            raise BitstreamError(f"{source} is truncated in {where}")
        (crc,) = _CRC.unpack_from(data, end)
        name = HEADER_NAME if index == 0 else listed(header)[index - 1]["name"]
        if section_checksum(index, name, data[pos:end], previous) != crc:
            raise BitstreamError(f"{source} is corrupted: {where} failed its checksum")
        previous = crc
        if index:
            chain = section_checksum(index, name, data[pos:end], chain)
        body = data[pos + _SECTION.size : end]
        expected = (HEADER,) if index == 0 else SECTION_KINDS[version]
        if kind not in expected:
            raise BitstreamError(
                f"{source} is malformed: {where} has kind {kind}, expected {' or '.join(map(str, expected))}"
            )
        try:
            if index == 0:
                header = _parse_header(body, count - 1, version)
            else:
                tensors.append(_SECTION_TYPES[kind].from_bytes(body))
        except (ValueError, struct.error, RecursionError) as exc:
            raise BitstreamError(f"{source} is malformed: {where}: {exc}") from None
        pos = end + _CRC.size
    if pos != len(data):
        raise BitstreamError(f"{source} has {len(data) - pos} unexpected bytes after its last section")
    if chain != digest:
        raise BitstreamError(f"{source} is corrupted: its tensor sections are not the ones its preamble lists")
    return header, tensors


def _parse_header(body: bytes, num_sections: int, version: int) -> dict[str, Any]:
    """The header's JSON, with the list of tensors (of segments, version 4) that the other sections'
    checksums need."""
    header = json.loads(body)
    what = "segment" if version == SEGMENTED else "tensor"
    entries = header.get(what + "s") if isinstance(header, dict) else None
    if not isinstance(entries, list) or len(entries) != num_sections:
        raise ValueError(f"the header does not list one {what} per section")
    if not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in entries):
        raise ValueError(f"a {what} entry of the header has no name")
    other = "tensors" if version == SEGMENTED else "segments"  # listed() must read the entries checked here
    if other in header:
        raise ValueError(f"a {what}s header lists {other} too")
    return header


def declared_version(data: bytes) -> int | None:
    """The version a file's preamble declares (unchecked), None if it is too short to hold one."""
    return _PREAMBLE.unpack_from(data)[1] if len(data) >= _PREAMBLE.size else None


def read_file(path: str | Path) -> tuple[dict[str, Any], list[Section]]:
    """Reads and verifies a .tnrv file."""
    path = Path(path)
    if not path.is_file():
        raise TnervError(f"no such file: {path}")
    return unpack(path.read_bytes(), str(path))
