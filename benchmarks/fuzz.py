"""Feeds the .tnrv decoder N damaged and crafted files and counts what it does with them.

    python benchmarks/fuzz.py 10000 [--seed 0] [--timeout 20] [--kinds swap header-field ...]

The mutants come from small real files (T-NeRV, HNeRV, FFNeRV, NeRV and HiNeRV, written by tnerv's own
encoder from untrained models on random frames; HiNeRV's hold per-channel sections with pruning masks and
float16 sections, bitstream version 3), and a video coded in two segments of NeRV (bitstream version 4,
frames 0:2 and 2:8, so that the frames decoded cross the seam); a crafted mutant of the segmented file
changes its own header or section order, or crafts one segment's file inside it. Two families:
- damage, as a disk, a download or a careless copy does it (checksums left as they are): truncation,
  bit flips, changed lengths, fills, garbage, deleted, duplicated, swapped or foreign sections,
  files that are not .tnrv at all;
- crafted, as a buggy or hostile writer does it (every checksum recomputed): any header field, a
  tensor's shape, a section's quantiser or table, its payload, its order, a header that is no JSON;
  quantisers that make values or frames non-finite; bombs whose one-symbol tables (no payload) declare
  a model of widths scaled up to 300x ("2 KB bombs"), frames up to 16x larger or a video of 4096x8192
  ("33 KB bombs"), and headers that declare more work than the file could need.

Each mutant is decoded (the first frames, as `tnerv decode --frames` does) and inspected in a worker
process with a per-case timeout, so that a crash of the interpreter or a hang is counted, not suffered.
Outcomes:
- refused: a one-line error (the decoder's own);
- decoded unchanged: the same frames as the original file;
- decoded a valid file: a crafted file that decodes to other frames and passes an independent check
  (`valid_file_problem`): every section's quantiser within the writers' ranges (docs/bitstream.md,
  read here from the bytes, not by the decoder's code), every frame finite, and tnerv's writer,
  given the decoded model (its tensors quantised again with the file's steps and tables), writes
  the very same bytes;
- silent wrong decode: other frames with no error, from damage or from a crafted file that fails
  the check;
- over cap: the case grew the worker's memory by more than the decoder's cap (MAX_MEMORY), whether
  it was refused or decoded;
- crash: any other exception, or an error message of more than one line;
- abort: the process died;
- hang: the case used more CPU time than the per-case timeout (or ten times that in wall-clock time).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import re
import resource
import multiprocessing as mp
import os
import random
import struct
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tnerv.codec.bitstream import (
    _PREAMBLE,
    _SECTION,
    CHANNEL_TENSOR,
    HALF_TENSOR,
    HEADER,
    HEADER_NAME,
    SECTION_OVERHEAD,
    TENSOR,
    frame_sections,
    section_checksum,
)
from tnerv.codec.container import decoder_from_file, write_model_file
from tnerv.codec.entropy import decode_symbols
from tnerv.codec.quantize import ChannelQuantized, HalfTensor, QuantizedTensor
from tnerv.codec.segments import pack_segments
from tnerv.codec.settings import compression_settings
from tnerv.compress import export_model
from tnerv.decode import decode_frames, inspect_file
from tnerv.errors import TnervError
from tnerv.models import config_to_dict, create_model, make_config
from tnerv.models.budget import config_for_video
from tnerv.models.counting import transmitted_shapes
from tnerv.train import VideoFrames

DAMAGE = ("truncate", "bitflip", "length", "fill", "garbage", "delete", "duplicate", "swap", "foreign", "junk")
CRAFTED = (
    "header-field", "tensor-shape", "section-field", "payload", "crafted-swap", "header-json",
    "nonfinite-step", "table-bomb", "frame-bomb", "work-header",
)
KINDS = DAMAGE + CRAFTED
OUTCOMES = (
    "refused", "decoded unchanged", "decoded a valid file", "silent wrong decode", "over cap", "crash", "abort",
    "hang",
)
BAD = ("silent wrong decode", "over cap", "crash", "abort", "hang")
SEED_MODELS = ("tnerv", "hnerv", "ffnerv", "nerv", "hinerv")
SEGMENTED_SEED = "segmented"  # NeRV in two segments (SEGMENT_FRAMES), a file of bitstream version 4
SEEDS = (*SEED_MODELS, SEGMENTED_SEED)
SEGMENT_FRAMES = (2, 6)  # together FRAMES; the frames decoded (DECODED) cross the seam
# Crafted kinds that change a segmented file's own header or sections; the others craft one segment's file.
OUTER_CRAFTED = ("header-field", "header-json", "crafted-swap")
FRAMES, HEIGHT, WIDTH, SIZE = 8, 32, 64, 12_000
DECODED = 4  # frames decoded per mutant (a frame range, as `tnerv decode --frames 0:4`)
MAX_MEMORY = 256 << 20  # the decoder's cap in the fuzzer: crafted sizes are refused, not allocated


@dataclass
class Seed:
    """An original file: its bytes, its sections, and the frames it decodes to."""

    model: str
    data: bytes
    frames: torch.Tensor  # the first DECODED frames as uint8


def write_seed(model: str, folder: Path, weights_seed: int, num_frames: int = FRAMES) -> Path:
    """A small .tnrv file of `model` (or SEGMENTED_SEED), written by tnerv's encoder from an untrained model."""
    if model == SEGMENTED_SEED:
        files = [write_seed("nerv", folder, weights_seed, n).read_bytes() for n in SEGMENT_FRAMES]
        path = folder / f"{model}-{weights_seed}.tnrv"
        path.write_bytes(pack_segments(files))
        return path
    torch.manual_seed(weights_seed)
    frames = torch.randint(0, 256, (num_frames, 3, HEIGHT, WIDTH), dtype=torch.uint8)
    config, _ = config_for_video(model, HEIGHT, WIDTH, num_frames, size=SIZE)
    settings = compression_settings(model)
    net = settings.wrap(create_model(model, config))
    video = {"num_frames": num_frames, "height": HEIGHT, "width": WIDTH, "fps": 25.0, "colour": {"frames": "RGB"}}
    path = folder / f"{model}-{weights_seed}{'' if num_frames == FRAMES else f'-{num_frames}f'}.tnrv"
    source = VideoFrames(frames, torch.device("cpu"))
    net.attach_video(source)
    net.on_fit_start(torch.arange(num_frames), source)  # quantisers start from the weights, as a fit does
    export_model(net, model, settings, video, path, source)
    return path


def decoded(path: Path) -> torch.Tensor:
    """The first frames a file decodes to, as uint8 (what `tnerv decode` writes)."""
    return as_uint8(decoded_float(path))


def decoded_float(path: Path) -> torch.Tensor:
    """The first frames a file decodes to, as the decoder gives them (float, before any rounding)."""
    frames, _, _ = decode_frames(path, 0, DECODED, max_memory=MAX_MEMORY)
    return frames


def as_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Frames in [0, 1] as the 8-bit values written."""
    return torch.round(frames.clamp(0, 1) * 255).to(torch.uint8)


def make_seeds(folder: Path) -> tuple[list[Seed], dict[str, bytes]]:
    """The original files, and for each model a second file of the same config with other weights."""
    seeds, foreign = [], {}
    for model in SEEDS:
        path = write_seed(model, folder, 0)
        seeds.append(Seed(model, path.read_bytes(), decoded(path)))
        foreign[model] = write_seed(model, folder, 1).read_bytes()
    return seeds, foreign


# ------------------------------------------------------------------------------------------------
# Reading a file's layout (not validating it: the decoder does that), and mutating it.


def sections(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each framed section, checksum included."""
    spans, pos = [], _PREAMBLE.size
    while pos + _SECTION.size <= len(data):
        _, length = _SECTION.unpack_from(data, pos)
        end = pos + SECTION_OVERHEAD + length
        spans.append((pos, min(end, len(data))))
        pos = end
    return spans


def parts(data: bytes) -> tuple[dict, bytes, list[bytes]]:
    """The header (parsed), the header's body and the tensor bodies of a valid file."""
    bodies = [data[a + _SECTION.size : b - 4] for a, b in sections(data)]
    return json.loads(bodies[0]), bodies[0], bodies[1:]


def kinds_of(data: bytes) -> list[int]:
    """The kind of each tensor section of a valid file (2 per tensor, 3 per channel, 4 float16)."""
    return [data[a] for a, _ in sections(data)[1:]]


def channel_fields(body: bytes) -> dict:
    """The fields of a per-channel section (kind 3), read from its bytes (docs/bitstream.md)."""
    count, reduced, group, masked = struct.unpack_from("<IIIB", body)
    pos = 13
    scales = np.frombuffer(body[pos : pos + 2 * count], dtype="<f2")
    pos += 2 * count
    fields = {"count": count, "reduced": reduced, "group": group, "masked": masked, "scales": scales, "scales_at": 13}
    if masked:
        low, high, length = struct.unpack_from("<HHI", body, pos)
        fields.update(mask_at=pos, mask_counts=np.array([low + 1, high + 1], dtype=np.uint32),
                      mask_payload=body[pos + 8 : pos + 8 + length])
        pos += 8 + length
    qmin, entries = struct.unpack_from("<iI", body, pos)
    fields.update(coded_at=pos, qmin=qmin, entries=entries,
                  counts=np.frombuffer(body[pos + 8 : pos + 8 + 2 * entries], dtype="<u2").astype(np.uint32) + 1)
    return fields


def interesting_value(rng: random.Random):
    """A value a careless or hostile writer might put anywhere in a header."""
    return rng.choice([
        0, -1, 1, 2, 3, 7, 64, 255, 65536, 2**31 - 1, 2**31, 2**63, -(2**31), 10**9, 10**18, 1.5, -0.5,
        1e308, float("nan"), float("inf"), "", "abc", "auto", "nerv", None, True, False, [], {}, [0],
        [1, 2], [10**9, 10**9], [-1], ["a"], {"a": 1}, [[[[1]]]], "x" * 1000,
    ])


def mutate_json(value, rng: random.Random, depth: int = 0):
    """The header with one field changed, removed or added, at a random place."""
    if isinstance(value, dict) and value and (depth == 0 or rng.random() < 0.8):
        key = rng.choice(list(value))
        out = dict(value)
        roll = rng.random()
        if roll < 0.1:
            del out[key]
        elif roll < 0.15:
            out["unknown_field"] = interesting_value(rng)
        else:
            out[key] = mutate_json(value[key], rng, depth + 1)
        return out
    if isinstance(value, list) and value and rng.random() < 0.8:
        out = list(value)
        i = rng.randrange(len(out))
        roll = rng.random()
        if roll < 0.1:
            del out[i]
        elif roll < 0.2:
            out.insert(i, out[i])
        else:
            out[i] = mutate_json(out[i], rng, depth + 1)
        return out
    if isinstance(value, int | float) and not isinstance(value, bool) and rng.random() < 0.5:
        return rng.choice([value + 1, value - 1, -value, value * 2, value * 1000, value // 2 if isinstance(value, int) else value / 2])
    return interesting_value(rng)


def mutate_section_field(body: bytes, kind: int, rng: random.Random) -> bytes:
    """A tensor section with its quantiser, symbol range or frequency table changed (per channel: also its
    scales, their tiling and its mask; float16: a value or its length)."""
    if kind == HALF_TENSOR:
        values = np.frombuffer(body, dtype="<f2").copy()
        if rng.random() < 0.3 or not len(values):
            return body[: rng.randrange(len(body) + 1)] if rng.random() < 0.5 else body + b"\0"
        values[rng.randrange(len(values))] = rng.choice([np.inf, -np.inf, np.nan, 65504.0, 0.0])
        return values.astype("<f2").tobytes()
    if kind == CHANNEL_TENSOR:
        f = channel_fields(body)
        field = rng.choice(["count", "reduced", "group", "masked", "scale", "mask", "coded"])
        if field in ("count", "reduced", "group", "masked"):
            values = [f["count"], f["reduced"], f["group"], f["masked"]]
            i = ["count", "reduced", "group", "masked"].index(field)
            values[i] = rng.choice([0, 1, 2, values[i] + 1, max(values[i] - 1, 0), 255 if i == 3 else 2**32 - 1])
            return struct.pack("<IIIB", *values) + body[13:]
        if field == "scale" and f["count"]:
            scales = f["scales"].copy()
            scales[rng.randrange(len(scales))] = rng.choice([np.nan, np.inf, 0.0, -1.0, 65504.0, 6e-8])
            return body[:13] + scales.astype("<f2").tobytes() + body[13 + 2 * len(scales) :]
        if field == "mask" and f["masked"]:
            at = f["mask_at"]
            low, high, length = struct.unpack_from("<HHI", body, at)
            choice = rng.choice([(0, 65535, length), (65535, 0, length), (low, high, length + 4), (low, high, 2**32 - 4),
                                 (high, low, length)])
            return body[:at] + struct.pack("<HHI", *choice) + body[at + 8 :]
        at = f["coded_at"]
        return body[:at] + mutate_section_field(struct.pack("<ff", 1.0, 0.0) + body[at:], TENSOR, rng)[8:]
    step, offset, qmin, entries = struct.unpack_from("<ffiI", body)
    table_end = 16 + 2 * entries
    field = rng.choice(["step", "offset", "qmin", "entries", "counts"])
    if field == "step":
        step = rng.choice([0.0, -step, float("nan"), float("inf"), 1e30, 1e-30, step * 2])
    elif field == "offset":
        offset = rng.choice([float("nan"), float("-inf"), 1e30, offset + 1])
    elif field == "qmin":
        qmin = rng.choice([2**31 - 1, -(2**31), qmin - 1, qmin + 1, 0])
    elif field == "entries":
        entries = rng.choice([0, 1, entries - 1, entries + 1, 2**16, 2**16 + 1, 2**32 - 1])
    else:
        table = bytearray(body[16:table_end])
        if table:
            i = rng.randrange(0, len(table) - 1, 2) if len(table) > 2 else 0
            table[i : i + 2] = struct.pack("<H", rng.choice([0, 1, 65535, rng.randrange(65536)]))
        return struct.pack("<ffiI", step, offset, qmin, entries) + bytes(table) + body[table_end:]
    return struct.pack("<ffiI", step, offset, qmin, entries) + body[16:]


def mutate_payload(body: bytes, kind: int, rng: random.Random) -> bytes:
    """A tensor section whose range-coded payload (per channel: or its mask's) is cut, extended, emptied or
    replaced; a float16 section's values replaced by random bytes."""
    if kind == HALF_TENSOR:
        return rng.randbytes(len(body))
    if kind == CHANNEL_TENSOR:
        f = channel_fields(body)
        if f["masked"] and rng.random() < 0.5:  # the mask's payload, its length field kept
            at = f["mask_at"] + 8
            end = at + len(f["mask_payload"])
            return body[:at] + rng.randbytes(end - at) + body[end:]
        at = f["coded_at"]
        return body[:at] + mutate_payload(struct.pack("<ff", 1.0, 0.0) + body[at:], TENSOR, rng)[8:]
    _, _, _, entries = struct.unpack_from("<ffiI", body)
    head, payload = body[: 16 + 2 * entries], body[16 + 2 * entries :]
    choice = rng.choice(["cut", "extend", "empty", "random", "flip"])
    if choice == "cut":
        payload = payload[: 4 * rng.randrange(max(1, len(payload) // 4))]
    elif choice == "extend":
        payload += rng.randbytes(4 * rng.randint(1, 8))
    elif choice == "empty":
        payload = b""
    elif choice == "random":
        payload = rng.randbytes(len(payload) or 4)
    elif payload:
        flipped = bytearray(payload)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        payload = bytes(flipped)
    return head + payload


def one_symbol_body(step: float, offset: float, qmin: int = 0) -> bytes:
    """A tensor section whose table has one symbol: no payload, every value qmin * step - offset."""
    return struct.pack("<ffiI", step, offset, qmin, 1) + struct.pack("<H", 2**16 - 1)  # count 2^16, minus one


def nonfinite_quantiser(bodies: list[bytes], kinds: list[int], rng: random.Random) -> tuple[list[bytes], list[int]]:
    """Sections whose values are not finite (a step or offset near float32's largest, a float16 infinity), or
    finite values at a writer's bound (2^16 everywhere, 65504 in float16) that make the frames overflow."""
    if rng.random() < 0.25:
        return [one_symbol_body(2.0**16, 0.0, 1) for _ in bodies], [TENSOR] * len(bodies)
    bodies = list(bodies)
    i = rng.randrange(len(bodies))
    if kinds[i] == HALF_TENSOR:
        values = np.full(len(bodies[i]) // 2, rng.choice([np.inf, -np.inf, np.nan]), dtype="<f2")
        bodies[i] = values.tobytes()
        return bodies, kinds
    if kinds[i] == CHANNEL_TENSOR:  # float16's largest scale puts any symbol but 0 beyond the bound
        f = channel_fields(bodies[i])
        scales = np.full(f["count"], rng.choice([65504.0, np.inf, np.nan]), dtype="<f2")
        bodies[i] = bodies[i][:13] + scales.tobytes() + bodies[i][13 + 2 * f["count"] :]
        return bodies, kinds
    step, offset, qmin, entries = struct.unpack_from("<ffiI", bodies[i])
    if rng.random() < 0.5:
        step = rng.choice([3e38, 1e30, 1e20, 2.0**17])
    else:
        offset = rng.choice([3e38, -3e38, 1e30, 2.0**17])
    bodies[i] = struct.pack("<ffiI", step, offset, qmin, entries) + bodies[i][16:]
    return bodies, kinds


def with_config(
    header: dict, bodies: list[bytes], changes: dict, video: dict | None = None, kinds: list[int] | None = None
) -> tuple[dict, list[bytes]]:
    """The header with its config changed (and its video), listing the tensors of the new config's
    decoder: a tensor of unchanged shape keeps its per-tensor section (`kinds`: every section's, default
    all per-tensor), every other gets a per-tensor one-symbol table (no payload): a small file that
    declares a large model, all of whose sections are per tensor. The header alone if the config does
    not build."""
    model = header["model"]
    header = {**header, "video": {**header["video"], **(video or {})}}
    try:
        config = make_config(model, {**header["config"], **changes})
        shapes = transmitted_shapes(model, config)
    except (TnervError, ValueError, TypeError):
        return {**header, "config": {**header["config"], **changes}}, bodies
    kinds = [TENSOR] * len(bodies) if kinds is None else kinds
    old = {e["name"]: (tuple(e["shape"]), body) for e, body, k in zip(header["tensors"], bodies, kinds) if k == TENSOR}
    tensors, new_bodies = [], []
    for name, (shape, component) in shapes.items():
        tensors.append({"name": name, "shape": list(shape), "component": component})
        if name in old and old[name][0] == shape:
            new_bodies.append(old[name][1])
        else:
            step, offset, qmin, _ = struct.unpack_from("<ffiI", old[name][1]) if name in old else (1.0, 0.0, 0, 0)
            new_bodies.append(one_symbol_body(step, offset, qmin))
    return {**header, "config": config_to_dict(config), "tensors": tensors}, new_bodies


def widened(config: dict, factor: int) -> dict:
    """The config's channel widths (fields named *dim*, *channels*, *hidden*) times `factor`."""
    def scale(value):
        if isinstance(value, int) and not isinstance(value, bool):
            return value * factor
        if isinstance(value, list):
            return [scale(v) for v in value]
        return value
    return {k: scale(v) for k, v in config.items() if any(t in k for t in ("dim", "channels", "hidden"))}


def bomb(
    header: dict, bodies: list[bytes], kinds: list[int], kind: str, rng: random.Random
) -> tuple[dict, list[bytes]]:
    """A table bomb (widths up to 300x), a frame bomb (frames 4x-16x larger, or 4096x8192) or a header
    declaring more work per output pixel (a model frame larger than the video, many more frames); its
    sections are all per tensor (`with_config`)."""
    config, video = header["config"], header["video"]
    if kind == "table-bomb":
        return with_config(header, bodies, widened(config, rng.choice([8, 30, 100, 300])), kinds=kinds)
    if kind == "frame-bomb":
        k = rng.choice([2, 4, 128])  # 128: 32x64 -> 4096x8192
        size = {"height": config["height"] * k, "width": config["width"] * k}
        return with_config(header, bodies, size, {"height": video["height"] * k, "width": video["width"] * k}, kinds)
    roll = rng.random()
    if roll < 0.5:  # the model's frame larger than the video it is cropped to
        k = rng.choice([2, 3, 4, 16])
        return with_config(header, bodies, {"height": config["height"] * k, "width": config["width"] * k}, kinds=kinds)
    k = rng.choice([10, 1000, 100_000])
    frames = {"num_frames": config["num_frames"] * k}
    return with_config(header, bodies, frames, {"num_frames": video["num_frames"] * k}, kinds)


def mutant(seed: Seed, foreign: bytes, kind: str, rng: random.Random) -> bytes:
    """One mutant of a seed file."""
    data = seed.data
    spans = sections(data)
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    if kind == "bitflip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == "length":
        start, _ = rng.choice(spans)
        _, length = _SECTION.unpack_from(data, start)
        new = rng.choice([0, length - 1, length + 1, length * 2, 2**32 - 1, rng.randrange(2**32)])
        return data[: start + 1] + struct.pack("<I", new % 2**32) + data[start + 5 :]
    if kind in ("fill", "garbage"):
        a = rng.randrange(len(data))
        b = min(len(data), a + rng.randint(1, 256))
        fill = bytes([rng.choice([0, 255])]) * (b - a) if kind == "fill" else rng.randbytes(b - a)
        return data[:a] + fill + data[b:]
    if kind in ("delete", "duplicate"):
        a, b = rng.choice(spans[1:])
        out = data[:a] + (data[a:b] * 2 if kind == "duplicate" else b"") + data[b:]
        if rng.random() < 0.5:  # also fix the section count of the preamble
            count = len(spans) + (1 if kind == "duplicate" else -1)
            out = out[:6] + struct.pack("<I", count) + out[10:]
        return out
    if kind == "swap":
        (a1, b1), (a2, b2) = sorted(rng.sample(spans[1:], 2))
        return data[:a1] + data[a2:b2] + data[b1:a2] + data[a1:b1] + data[b2:]
    if kind == "foreign":  # a section of another file of the same model and config, at the same place
        i = rng.randrange(1, len(spans))
        other = sections(foreign)
        (a, b), (c, d) = spans[i], other[i]
        return data[:a] + foreign[c:d] + data[b:]
    if kind == "junk":
        return rng.choice([b"", rng.randbytes(rng.randint(1, 4096)), b"TNRV" + rng.randbytes(64),
                           "hello, this is text\n".encode() * 20, data[:10]])
    header, header_body, bodies = parts(data)
    kinds = kinds_of(data)
    if seed.model == SEGMENTED_SEED and kind not in OUTER_CRAFTED:  # one segment's file crafted, then reframed
        i = rng.randrange(len(bodies))
        bodies[i] = mutant(Seed("nerv", bodies[i], seed.frames), b"", kind, rng)
        return frame_sections(header, header_body, bodies, kinds)
    if kind == "header-field":
        header = mutate_json(header, rng)
    elif kind == "tensor-shape":
        entry = rng.choice(header["tensors"])
        shapes = [[10**9, 10**9], [2**31, 2**31, 4], entry["shape"][::-1], entry["shape"] + [1], entry["shape"][1:], [0],
                  [-1] + entry["shape"][1:], []]
        entry["shape"] = rng.choice([s for s in shapes if s != entry["shape"]])  # a change (a bias reversed is none)
    elif kind == "section-field":
        i = rng.randrange(len(bodies))
        bodies[i] = mutate_section_field(bodies[i], kinds[i], rng)
    elif kind == "payload":
        i = rng.randrange(len(bodies))
        bodies[i] = mutate_payload(bodies[i], kinds[i], rng)
    elif kind == "crafted-swap":
        i, j = rng.sample(range(len(bodies)), 2)
        bodies[i], bodies[j] = bodies[j], bodies[i]
        kinds[i], kinds[j] = kinds[j], kinds[i]
    elif kind == "nonfinite-step":
        bodies, kinds = nonfinite_quantiser(bodies, kinds, rng)
    elif kind in ("table-bomb", "frame-bomb", "work-header"):
        header, bodies = bomb(header, bodies, kinds, kind, rng)
        kinds = [TENSOR] * len(bodies)
    if kind == "header-json":
        bad = rng.choice([b"", b"{", b"[]", b"null", b'{"tensors": 5}', rng.randbytes(64), b"[" * 100000])
        return _with_header_body(data, bad)
    header_body = json.dumps(header, separators=(",", ":")).encode()  # as the writer writes it
    try:
        return frame_sections(header, header_body, bodies, kinds)
    except (AttributeError, KeyError, TypeError, ValueError):  # a tensor list that lost its names
        return _with_header_body(data, header_body)


def _with_header_body(data: bytes, body: bytes) -> bytes:
    """The file with its header body replaced and the header's framing redone (checksum of the new body)."""
    a, b = sections(data)[0]
    head = _SECTION.pack(HEADER, len(body)) + body
    crc = section_checksum(0, HEADER_NAME, head, zlib.crc32(data[: _PREAMBLE.size]))
    return data[:a] + head + struct.pack("<I", crc) + data[b:]


# ------------------------------------------------------------------------------------------------
# Running a mutant in a worker process.


def run_case(data: bytes, reference: torch.Tensor, crafted: bool, folder: Path) -> str:
    """The outcome of decoding and inspecting one mutant (in the worker)."""
    path = folder / "mutant.tnrv"
    path.write_bytes(data)
    base = start_peak()
    outcome = frames = None
    try:
        inspect_file(path)
        frames = decoded_float(path)
    except TnervError as exc:
        outcome = "refused" if "\n" not in str(exc) else "crash"
    except Exception:  # noqa: BLE001 - anything else is what the fuzzer looks for
        outcome = "crash"
    if peak_growth(base) > MAX_MEMORY:
        return "over cap"
    if outcome is not None:
        return outcome
    finite = bool(torch.isfinite(frames).all())
    if finite and frames.shape == reference.shape and torch.equal(as_uint8(frames), reference):
        return "decoded unchanged"
    if not crafted:
        return "silent wrong decode"
    return "decoded a valid file" if valid_file_problem(path, frames) is None else "silent wrong decode"


def valid_file_problem(path: Path, frames: torch.Tensor) -> str | None:
    """Why a crafted file that decoded to `frames` is not a valid file, or None if it is one: every
    section's quantiser within the writers' ranges, finite frames, and the same bytes from tnerv's
    writer given the decoded model. Checked here apart from the decoder: what it let through is what
    is being judged."""
    data = path.read_bytes()
    try:
        header, _, bodies = parts(data)
        if "segments" in header:
            return segmented_file_problem(path, bodies, frames)
        for entry, body, kind in zip(header["tensors"], bodies, kinds_of(data)):
            problem = quantiser_problem(body, kind)
            if problem:
                return f"tensor {entry['name']!r}: {problem}"
        if not bool(torch.isfinite(frames).all()):
            return "its frames are not finite"
        if rewritten(path, header, bodies, folder=path.parent) != data:
            return "tnerv's writer writes other bytes for the model it decodes to"
    except Exception as exc:  # noqa: BLE001 - a file the check cannot even read is no valid file
        return f"the check failed: {type(exc).__name__}: {exc}"
    return None


def segmented_file_problem(path: Path, segments: list[bytes], frames: torch.Tensor) -> str | None:
    """Why a crafted segmented file is not a valid one, or None: each segment a valid file by
    `valid_file_problem`, and the file the very one tnerv's writer packs of those segments."""
    for i, data in enumerate(segments):
        segment = path.with_name("segment.tnrv")
        segment.write_bytes(data)
        problem = valid_file_problem(segment, frames)
        if problem:
            return f"segment {i}: {problem}"
    if pack_segments(segments) != path.read_bytes():
        return "tnerv's writer packs other bytes of the segments it holds"
    return None


# The writers' ranges (docs/bitstream.md, "Field bounds"), restated here so that the check does not
# use the decoder's own code.
WRITER_MIN_STEP, WRITER_MAX_VALUE, WRITER_MAX_SYMBOL = 2.0**-64, 2.0**16, 2**24


def quantiser_problem(body: bytes, kind: int = TENSOR) -> str | None:
    """Why a tensor section's quantiser (or float16 values) is outside every writer's range, or None."""
    if kind == HALF_TENSOR:
        values = np.frombuffer(body, dtype="<f2")
        return None if np.isfinite(values).all() else "a float16 value is not finite"
    if kind == CHANNEL_TENSOR:
        f = channel_fields(body)
        scales = f["scales"].astype(np.float64)
        qmin, qmax = f["qmin"], f["qmin"] + f["entries"] - 1
        if not (len(scales) and np.isfinite(scales).all() and (scales > 0).all()):
            return "a scale is not finite and positive"
        if qmin < -WRITER_MAX_SYMBOL or qmax > WRITER_MAX_SYMBOL:
            return f"symbols {qmin}..{qmax}"
        if max(abs(qmin), abs(qmax)) * scales.max() > WRITER_MAX_VALUE:
            return f"values beyond 2^16 (scales up to {scales.max():g}, symbols {qmin}..{qmax})"
        return None
    step, offset, qmin, entries = struct.unpack_from("<ffiI", body)
    qmax = qmin + entries - 1
    if not (math.isfinite(step) and math.isfinite(offset) and WRITER_MIN_STEP <= step <= WRITER_MAX_VALUE):
        return f"step {step:g}, offset {offset:g}"
    if qmin < -WRITER_MAX_SYMBOL or qmax > WRITER_MAX_SYMBOL:
        return f"symbols {qmin}..{qmax}"
    if max(abs(qmin * step - offset), abs(qmax * step - offset)) > WRITER_MAX_VALUE:
        return f"values beyond 2^16 (step {step:g}, offset {offset:g}, symbols {qmin}..{qmax})"
    return None


def rewritten(path: Path, header: dict, bodies: list[bytes], folder: Path) -> bytes:
    """The bytes tnerv's writer writes for the model a file decodes to: its tensors quantised again
    with the file's steps and offsets (as the writers round) and coded with the file's tables."""
    decoder, _ = decoder_from_file(path, "cpu", MAX_MEMORY, DECODED)
    state = decoder.transmitted_state()
    quantized, tables, components = {}, {}, {}
    for entry, body, kind in zip(header["tensors"], bodies, kinds_of(path.read_bytes())):
        name = entry["name"]
        components[name] = entry["component"]
        if kind == HALF_TENSOR:
            quantized[name] = HalfTensor(state[name].half())
            continue
        if kind == CHANNEL_TENSOR:  # the file's scales and mask; symbols from the decoded values
            f = channel_fields(body)
            value = state[name].float().reshape(-1, f["reduced"], f["group"])
            scales = torch.from_numpy(f["scales"].astype(np.float16))
            symbols = torch.round(value / scales.float().reshape(-1, 1, f["group"])).long().reshape(state[name].shape)
            mask = None
            if f["masked"]:
                bits = decode_symbols(f["mask_payload"], 0, f["mask_counts"], symbols.numel())
                mask = torch.from_numpy(bits.astype(bool)).reshape(symbols.shape)
                symbols = symbols * mask
            quantized[name] = ChannelQuantized(symbols, scales, f["reduced"], f["group"], mask)
            tables[name] = (f["qmin"], f["counts"])
            continue
        step, offset, qmin, entries = struct.unpack_from("<ffiI", body)
        counts = np.frombuffer(body[16 : 16 + 2 * entries], dtype="<u2").astype(np.uint32) + 1
        symbols = torch.round((state[name].float() + offset) / step).long()
        quantized[name] = QuantizedTensor(symbols, step, offset)
        tables[name] = (qmin, counts)
    model = header["model"]
    config = config_to_dict(make_config(model, header["config"]))
    extra = {k: v for k, v in header.items() if k not in ("tnerv_version", "model", "config", "video", "tensors")}
    out = folder / "rewritten.tnrv"
    write_model_file(out, model, config, header["video"], quantized, components, lambda n, _: tables[n], extra)
    return out.read_bytes()


_LIBC = ctypes.CDLL(None)


def start_peak() -> int:
    """Starts measuring a case's memory: freed heap returned to the system (malloc_trim), the peak
    resident size reset (/proc/self/clear_refs); returns the resident size now. Where the peak cannot be
    reset, the growth is counted from the process's earlier peak (ru_maxrss), which can only undercount."""
    _LIBC.malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_growth(base: int) -> int:
    """Bytes by which the process's peak resident size exceeds `base` (from start_peak)."""
    try:
        return _status("VmHWM") - base
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base


def _status(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def _worker(connection, folder: str, case: Callable[..., str], warm: tuple[str, ...]) -> None:
    torch.set_num_threads(1)  # as the reference frames were decoded (see fuzz)
    for path in warm:  # kernels and thread pools start once, before any case is measured
        decoded_float(Path(path))
    connection.send("ready")
    while True:
        job = connection.recv()
        if job is None:
            return
        data, reference, crafted = job
        connection.send(case(data, reference, crafted, Path(folder)))


# A case still running after this many times the CPU timeout, in wall-clock time, is a hang even if it
# used little CPU (a deadlock uses none).
WALL_FACTOR = 10


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) a process has used so far (Linux: /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Worker:
    """A worker process that runs cases one at a time; restarted after an abort or a hang. It is a fresh
    interpreter (spawned), as `tnerv decode` is, that has decoded the `warm` files once: a fork would inherit
    its parent's heap, and with it the parent's allocator state (a fork of a test suite measured the same
    HiNeRV frame bomb at 257-275 MiB of growth, a fork of a small script at 146-176 MiB, a fresh warm
    interpreter at 130-141 MiB)."""

    def __init__(self, folder: Path, case: Callable[..., str] = run_case, warm: tuple[Path, ...] = ()):
        self.folder = folder
        self.case = case
        self.warm = tuple(str(path) for path in warm)
        self.context = mp.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self.connection, child = self.context.Pipe()
        self.process = self.context.Process(
            target=_worker, args=(child, str(self.folder), self.case, self.warm), daemon=True)
        self.process.start()
        child.close()
        if self.connection.recv() != "ready":  # its start-up is not timed as a case
            raise RuntimeError("the fuzz worker did not start")

    def run(self, data: bytes, reference: torch.Tensor, crafted: bool, timeout: float) -> str:
        """The outcome of one case, "abort" if the worker died, "hang" if it used more than `timeout`
        seconds of CPU, or WALL_FACTOR times that in wall-clock time: CPU time, so that a busy machine,
        which stretches every case's wall-clock time, does not turn a slow case into a hang."""
        try:
            self.connection.send((data, reference, crafted))
            started, cpu = time.monotonic(), cpu_seconds(self.process.pid)
            while not self.connection.poll(min(1.0, timeout)):
                if (cpu_seconds(self.process.pid) - cpu > timeout
                        or time.monotonic() - started > WALL_FACTOR * timeout):
                    break
            else:
                return self.connection.recv()
            outcome = "hang"
        except (EOFError, BrokenPipeError, ConnectionResetError, FileNotFoundError):  # the worker died
            outcome = "abort"
        self.process.kill()
        self.process.join()
        self._start()
        return outcome

    def close(self) -> None:
        self.connection.send(None)
        self.process.join(timeout=5)


def fuzz(n: int, seed: int = 0, kinds: tuple[str, ...] = KINDS, timeout: float = 20.0, progress: bool = True) -> dict:
    """Runs n mutants (kinds in turn) and returns {kind: Counter of outcomes}, with the examples of
    bad outcomes (kind, outcome, mutant bytes) under "examples"."""
    rng = random.Random(seed)
    # One thread here as in the worker: the reference frames and the mutants' are decoded alike (the
    # thread count can change a kernel's rounding, and so an 8-bit pixel).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fuzz(n, rng, kinds, timeout, progress)
    finally:
        torch.set_num_threads(threads)


def _fuzz(n: int, rng: random.Random, kinds: tuple[str, ...], timeout: float, progress: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        seeds, foreign = make_seeds(folder)
        worker = Worker(folder, warm=tuple(folder / f"{model}-0.tnrv" for model in SEEDS))
        counts: dict[str, Counter] = {kind: Counter() for kind in kinds}
        examples = []
        started = time.time()
        try:
            for i in range(n):
                kind = kinds[i % len(kinds)]
                original = rng.choice(seeds)
                data = mutant(original, foreign[original.model], kind, rng)
                outcome = worker.run(data, original.frames, kind in CRAFTED, timeout)
                counts[kind][outcome] += 1
                if outcome in BAD and len(examples) < 20:
                    examples.append((kind, outcome, original.model, data))
                if progress and (i + 1) % max(1, n // 20) == 0:
                    print(f"  {i + 1}/{n} mutants, {time.time() - started:.0f} s", file=sys.stderr, flush=True)
        finally:
            worker.close()
    return {"counts": counts, "examples": examples}


def table(counts: dict[str, Counter]) -> str:
    """Outcome counts per kind of mutant, and the totals."""
    shown = [o for o in OUTCOMES if o in BAD or any(c[o] for c in counts.values())]
    width = max(len(k) for k in counts) + 2
    lines = [f"{'kind':<{width}}" + "".join(f"{o:>22}" for o in shown)]
    total = Counter()
    for kind, c in counts.items():
        total.update(c)
        lines.append(f"{kind:<{width}}" + "".join(f"{c[o]:>22}" for o in shown))
    lines.append(f"{'total':<{width}}" + "".join(f"{total[o]:>22}" for o in shown))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=1000, help="number of mutants (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0, help="CPU seconds per case before it counts as a hang")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--save", metavar="DIR", help="write the mutants with bad outcomes to this folder")
    args = parser.parse_args()
    started = time.time()
    result = fuzz(args.n, args.seed, tuple(args.kinds), args.timeout)
    print(f"{args.n} mutants of {len(SEEDS)} files ({', '.join(SEEDS)}), seed {args.seed}, "
          f"{time.time() - started:.0f} s")
    print(table(result["counts"]))
    bad = sum(c[o] for c in result["counts"].values() for o in BAD)
    for o in BAD:
        print(f"{o}: {sum(c[o] for c in result['counts'].values())}")
    if args.save and result["examples"]:
        out = Path(args.save)
        out.mkdir(parents=True, exist_ok=True)
        for i, (kind, outcome, model, data) in enumerate(result["examples"]):
            (out / f"{i:02d}-{kind}-{outcome.replace(' ', '-')}-{model}.tnrv").write_bytes(data)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
