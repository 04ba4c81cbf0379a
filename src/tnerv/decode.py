"""Decoding a .tnrv file: any frame range from the file alone, on the fastest execution path that keeps
every 8-bit frame within 0.05 dB of fp32's, and what a file holds (inspect). Uses codec, models, video,
metrics and files only: nothing of training."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from tnerv.codec.bitstream import BitstreamError, Section, read_file
from tnerv.codec.container import build_decoder, check_cost, check_frames, check_header
from tnerv.codec.segments import is_segmented, segment_file, segment_table
from tnerv.errors import TnervError
from tnerv.files import check_output
from tnerv.metrics import bits_per_pixel, psnr
from tnerv.models import ModelConfig, VideoINR
from tnerv.models.execution import FP32, ExecutionPath, candidate_paths
from tnerv.models.nnpack import fallbacks as nnpack_fallbacks
from tnerv.video import Padding, round_to_8bit, to_uint8, write_frames, write_mp4

Result = TypeVar("Result")


@dataclass(frozen=True)
class DecodeSpeed:
    """How fast frames were decoded: the seconds of each timed pass over `frames` frames."""

    frames: int
    pass_seconds: tuple[float, ...]

    @property
    def seconds(self) -> float:
        """The median pass's seconds."""
        return statistics.median(self.pass_seconds)

    @property
    def fps(self) -> float:
        """Frames per second of the median pass."""
        return self.frames / self.seconds


def time_decode(
    decode_pass: Callable[[], Result],
    frames: int,
    passes: int = 1,
    warmup: Callable[[], object] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[DecodeSpeed, Result]:
    """The speed of `passes` timed runs of `decode_pass` (each decoding `frames` frames), the median
    pass counting, after one untimed run of `warmup`; and the last pass's result. The one decode-speed
    measurement of tnerv: the decoder, the benches and the benchmarks all time decoding through it."""
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    if warmup is not None:
        warmup()
        sync()
    seconds, result = [], None
    for _ in range(passes):
        started = time.perf_counter()
        result = decode_pass()
        sync()
        seconds.append(time.perf_counter() - started)
    return DecodeSpeed(frames, tuple(seconds)), result


def parse_range(text: str | None, num_frames: int) -> tuple[int, int]:
    """Parses "a:b" (either side may be empty) into a frame range [a, b) inside the video."""
    if text is None:
        return 0, num_frames
    try:
        a_text, b_text = text.split(":")
        a = int(a_text) if a_text else 0
        b = int(b_text) if b_text else num_frames
    except ValueError:
        raise TnervError(f"--frames takes a:b (e.g. 0:10), got {text!r}") from None
    if not 0 <= a < b <= num_frames:
        raise TnervError(f"frames {a}:{b} requested but the file holds frames 0:{num_frames}")
    return a, b


@dataclass
class DecodeResult:
    """What `decode_file` wrote and how fast it decoded."""

    output: str
    first_frame: int
    num_frames: int
    seconds: float  # building the decoder and decoding the frames on the chosen path
    fps: float  # num_frames / seconds
    path_seconds: float  # choosing the path: the fp32 and fast-path trials (`choose_decode_path`)
    path: dict[str, Any]  # the execution path the decoder chose (ExecutionPath.to_dict), why, and what ran

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json output."""
        return asdict(self)


class DecoderError(TnervError):
    """A file that passed every check, yet whose decoder failed while running: not a damaged file but a
    tnerv bug or a crafted file, reported in one line as such."""


def decode_frames(
    path: str | Path,
    first: int,
    end: int,
    batch_size: int = 4,
    device: str = "cpu",
    max_memory: int | None = None,
    execution: ExecutionPath = FP32,
) -> tuple[torch.Tensor, float, float]:
    """Frames [first, end) of a file (N, 3, H, W) in [0, 1], with the decoding time (building the
    decoders included) and the video's fps; `execution` is the path the decoders run (fp32 by default)."""
    def decode() -> tuple[torch.Tensor, dict[str, Any]]:
        header, chosen, _, _ = open_parts(path, lambda _: (first, end), max_memory, batch_size)
        frames = [decode_range(build_part(part, device), part.header, a, b, batch_size, execution, part.source)
                  for part, a, b in chosen]
        return torch.cat(frames), header

    speed, (frames, header) = time_decode(decode, end - first, device=device)
    return frames, speed.seconds, header["video"]["fps"]


@dataclass
class Part:
    """One model's frames of a file: all of its frames, or those of one of its segments."""

    first: int  # the video's frame at which it starts
    header: dict[str, Any]  # its own file's header (checked: `check_header`)
    config: ModelConfig
    sections: list[Section]
    size: int  # its own file's bytes
    source: str  # how errors name it


def read_parts(
    path: str | Path, frames: Callable[[int], tuple[int, int]] | None = None
) -> tuple[dict[str, Any], list[Part], int, int]:
    """A file's header, its parts (the whole file, or each segment's) that hold the frames [first, end)
    that `frames` picks given the video's frame count (default: all), each part's header checked, and
    first, end. Only those segments' files are read: a file of many segments costs a range no more."""
    source = str(path)
    header, sections = read_file(path)
    if not is_segmented(header):
        config = check_header(header, source)
        first, end = frames(config.num_frames) if frames else (0, config.num_frames)
        return header, [Part(0, header, config, sections, Path(path).stat().st_size, source)], first, end
    table = segment_table(header, source)
    first, end = frames(table[-1].end) if frames else (0, table[-1].end)
    parts = []
    for i, segment in enumerate(table):
        if segment.first < end and first < segment.end:
            inner, inner_sections, size = segment_file(header, sections, table, i, source)
            where = f"{source} segment {i}"
            parts.append(Part(segment.first, inner, check_header(inner, where), inner_sections, size, where))
    return header, parts, first, end


def open_parts(
    path: str | Path,
    frames: Callable[[int], tuple[int, int]],
    max_memory: int | None = None,
    batch_size: int = 4,
) -> tuple[dict[str, Any], list[tuple[Part, int, int]], int, int]:
    """A file's header, the parts that hold the frames [first, end) that `frames` picks given the video's
    frame count, each with its own range of them, and first, end: the file read and checked once
    (`read_parts`), then the cost of decoding each part's frames `batch_size` at a time, the whole range's
    frames held, against `max_memory` (`check_cost`), before any part is decoded."""
    header, parts, first, end = read_parts(path, frames)
    chosen = [(part, max(first - part.first, 0), min(end - part.first, part.header["video"]["num_frames"]))
              for part in parts]  # read_parts keeps only the parts that hold some of the range
    for part, _, _ in chosen:
        check_cost(part.header, part.config, part.size, part.source, max_memory, end - first, batch_size)
    return header, chosen, first, end


def build_part(part: Part, device: str | torch.device = "cpu") -> VideoINR:
    """A part's decoder (its cost checked by `open_parts`)."""
    return build_decoder(part.header, part.config, part.sections, part.source, device)


def decode_range(
    decoder: VideoINR,
    header: dict[str, Any],
    first: int,
    end: int,
    batch_size: int,
    execution: ExecutionPath = FP32,
    source: str = "file",
) -> torch.Tensor:
    """Frames [first, end) (N, 3, H, W) in [0, 1] of a decoder rebuilt from a file with `header`.

    Batches are aligned to multiples of `batch_size` in the whole video, so that a range decodes
    to bit-identical frames as the whole video (kernels may round differently per batch shape)."""
    execution.apply(decoder)
    aligned_first = first // batch_size * batch_size
    aligned_end = min(-(-end // batch_size) * batch_size, header["video"]["num_frames"])
    idx = torch.arange(aligned_first, aligned_end, device=next(decoder.parameters()).device)
    h, w = header["video"]["height"], header["video"]["width"]
    padding = Padding(h, w, decoder.config.height, decoder.config.width)  # the header check bounds both
    frames = []
    try:
        with execution.autocast(idx.device):
            for _, out in decoder.reconstruct(idx, None, batch_size):
                if out.shape[-3:-2] != (3,) or out.shape[-2] < h or out.shape[-1] < w:
                    # The file's own inconsistency: its model's frames are not the video it declares.
                    raise BitstreamError(f"{source}: its model decodes frames of {tuple(out.shape[-3:])}, "
                                         f"not the 3x{h}x{w} of its header")
                frames.append(padding.crop(out).float().cpu())
    except (RuntimeError, ValueError, IndexError) as exc:
        # The file passed every check, yet its model failed: tnerv's fault or a crafted file's, which
        # the checks should have caught; either way not a damaged file, and never a traceback.
        message = " ".join(str(exc).split())  # one line; torch's messages can run to pages
        message = message if len(message) <= 300 else message[:297] + "..."
        raise DecoderError(f"{source} passed every check but its decoder failed: {message} "
                           "(a tnerv bug or a crafted file; please report)") from exc
    return check_frames(torch.cat(frames)[first - aligned_first : end - aligned_first], first, source)


def decode_file(
    path: str | Path,
    output: str | Path,
    frame_range: str | None = None,
    overwrite: bool = False,
    batch_size: int = 4,
    max_memory: int | None = None,
    precision: str = "auto",
) -> DecodeResult:
    """Decodes frames a:b of a .tnrv file to an mp4 (by its suffix) or a folder of PNGs; `max_memory`
    (bytes, default `default_memory_cap()`: 4 GiB or less) refuses a file whose decoding would need more."""
    output = Path(output)
    check_output(output, (".mp4", ""), "an .mp4 file, or a folder (no suffix) for PNG frames")
    if output.exists() and not overwrite and (output.is_file() or any(output.iterdir())):
        raise TnervError(f"{output} exists; pass --overwrite to replace it")
    built = path_seconds = seconds = 0.0
    started = time.perf_counter()
    header, chosen, first, end = open_parts(path, lambda n: parse_range(frame_range, n), max_memory, batch_size)
    decoded, choices = [], []
    for part, a, b in chosen:  # one decoder at a time: a segment's, or the file's
        decoder = build_part(part)
        built += time.perf_counter() - started
        # The decoder is built once; choosing its path (the trials) is timed apart from the decoding.
        started = time.perf_counter()
        execution, choice = choose_decode_path(decoder, part.header, batch_size, precision, part.source)
        path_seconds += time.perf_counter() - started
        speed, frames = time_decode(
            lambda: decode_range(decoder, part.header, a, b, batch_size, execution, part.source), b - a)
        seconds += speed.seconds
        decoded.append(frames)
        choices.append({**choice, **what_ran(decoder, execution)})
        del decoder
        started = time.perf_counter()
    seconds += built
    frames = torch.cat(decoded)
    choice = choices[0] if len(choices) == 1 else {
        "ran": ", ".join(dict.fromkeys(c["ran"] for c in choices)), "segments": choices,
        "reason": f"each of the {len(choices)} segments decoded chose its own (--json gives each one's reason)"}
    pixels = to_uint8(frames)
    if output.suffix.lower() == ".mp4":
        write_mp4(pixels, output, header["video"]["fps"])
    else:
        write_frames(pixels, output)
    return DecodeResult(str(output), first, end - first, seconds, (end - first) / seconds, path_seconds, choice)


def what_ran(decoder: VideoINR, execution: ExecutionPath) -> dict[str, Any]:
    """The path a decode ran on as the report says it ("ran"), with the NNPACK convolution calls that
    failed and ran on PyTorch's kernels instead ("nnpack_fallbacks", on an NNPACK path)."""
    if not execution.nnpack:
        return {"ran": execution.describe()}
    failed, calls, message = nnpack_fallbacks(decoder)
    note = f" (fell back to PyTorch's kernels on {failed} of {calls} convolution calls: {message})" if failed else ""
    return {"ran": execution.describe() + note, "nnpack_fallbacks": failed}


# A fast path (bf16, NNPACK) is used only if every 8-bit frame it decodes on the probe batches comes this
# close to the fp32 decode's (the worst frame's PSNR between the two). With errors independent of the fp32
# decode's own, a frame of PSNR P loses 10 log10(1 + 10^((P - D) / 10)) dB: at D = 60 dB, at most 0.05 dB
# for P <= 40.6 dB.
MIN_AGREEMENT_DB = 60.0
AGREEMENT_STATISTIC = "the worst frame's PSNR between the path's and fp32's 8-bit frames"


def probe_ranges(num_frames: int, batch_size: int) -> list[tuple[int, int]]:
    """The frame ranges a fast path is checked on: the whole video's first, middle and last batches
    (aligned as `decode_range` aligns them; fewer where the video has fewer batches)."""
    batches = -(-num_frames // batch_size)
    return [(b * batch_size, min((b + 1) * batch_size, num_frames)) for b in sorted({0, batches // 2, batches - 1})]


def worst_frame(trial: torch.Tensor, expected: torch.Tensor, first: int = 0) -> tuple[float, int]:
    """The lowest per-frame PSNR (dB) between two decodes' 8-bit frames of frames first, first + 1, ...,
    and that frame: inf when every frame is identical, NaN (and the first such frame) when a frame is not
    finite."""
    values = psnr(round_to_8bit(trial), round_to_8bit(expected))
    bad = values.isnan().nonzero()
    i = int(bad[0]) if len(bad) else int(values.argmin())
    return values[i].item(), first + i


def _trial(name: str, worst_db: float, frame: int) -> tuple[bool, dict[str, Any], str]:
    """A fast path's verdict: kept or not, its record for the report and its sentence."""
    identical = worst_db == math.inf
    kept = identical or worst_db >= MIN_AGREEMENT_DB  # False for NaN
    record = {"kept": kept, "identical": identical, "worst_frame": None if identical else frame,
              "worst_frame_db": None if identical or math.isnan(worst_db) else worst_db}
    if identical:
        return kept, record, f"{name} kept: its 8-bit frames are identical to fp32's"
    if math.isnan(worst_db):
        return kept, record, f"{name} refused: its frame {frame} is not finite"
    sentence = (f"{name} {'kept' if kept else 'refused'}: its worst 8-bit frame ({frame}) is "
                f"{worst_db:.1f} dB from fp32's (needs {MIN_AGREEMENT_DB:.0f})")
    return kept, record, sentence


def choose_decode_path(
    decoder: VideoINR, header: dict[str, Any], batch_size: int, precision: str = "auto", source: str = "file"
) -> tuple[ExecutionPath, dict[str, Any]]:
    """The fastest execution path for a decoder rebuilt from a file that keeps each 8-bit frame within
    0.05 dB of the fp32 decode on the probe batches, with the record of the choice for the decode report.

    The probe batches are the whole video's first, middle and last, whatever range is decoded: the choice
    depends on the file and the machine only, so that a range decodes to the same frames as the whole
    video does (a check on the range's own batches could choose another path for a range than for the
    video). The frames between the probes are not compared: the check samples the video, at the cost of
    about 3 batches per path tried."""
    *fast, reference = candidate_paths(torch.device("cpu"), precision)
    if not fast:
        reason = "fp32 asked" if precision == "fp32" else "fp32: no faster path on this device"
        return reference, {**reference.to_dict(), "reason": reason}
    num_frames = header["video"]["num_frames"]
    ranges = probe_ranges(num_frames, batch_size)
    expected = [decode_range(decoder, header, a, b, batch_size, reference, source) for a, b in ranges]

    def worst(path: ExecutionPath) -> tuple[float, int]:  # one batch of the path's frames held at a time
        found = [worst_frame(decode_range(decoder, header, a, b, batch_size, path, source), frames, a)
                 for (a, b), frames in zip(ranges, expected)]
        return next((f for f in found if math.isnan(f[0])), None) or min(found)

    chosen, verdicts, trials = reference, [], {}
    for path in fast:  # the first (fastest) that agrees is taken
        worst_db, frame = worst(path)
        kept, trials[path.describe()], sentence = _trial(path.describe(), worst_db, frame)
        verdicts.append(sentence)
        if kept:
            chosen = path
            break
    compared = ", ".join(f"{a}:{b}" for a, b in ranges)
    reason = (f"{'; '.join(verdicts)} (compared: frames {compared} of {num_frames}, the video's first, middle "
              f"and last batches whatever range is decoded; {AGREEMENT_STATISTIC})")
    return chosen, {**chosen.to_dict(), "reason": reason, "trials": trials,
                    "compared_frames": [list(r) for r in ranges], "statistic": AGREEMENT_STATISTIC}


def inspect_file(path: str | Path) -> dict[str, Any]:
    """The header of a .tnrv file and its bytes by component and by tensor; for a file coded in segments,
    its video and each segment's own (its frames, bytes and bpp, and what a file of one model shows)."""
    header, parts, _, _ = read_parts(path)
    size = Path(path).stat().st_size
    v = header["video"]
    info = {"path": str(path), "bytes": size, "bpp": bits_per_pixel(size, v["num_frames"], v["height"], v["width"])}
    if not is_segmented(header):
        return {**info, **_inspect_part(parts[0])}
    segments = [{"first_frame": part.first, "bytes": part.size,
                 "bpp": bits_per_pixel(part.size, part.header["video"]["num_frames"], v["height"], v["width"]),
                 **_inspect_part(part)} for part in parts]
    return {**info, "video": v, "segments": segments, "tnerv_version": header.get("tnerv_version")}


def _inspect_part(part: Part) -> dict[str, Any]:
    header, by_component, tensors = part.header, {}, []
    for entry, section in zip(header["tensors"], part.sections):
        section_bytes = section.size_in_file
        by_component[entry["component"]] = by_component.get(entry["component"], 0) + section_bytes
        tensors.append({**entry, "bytes": section_bytes, **section.summary()})
    by_component["other"] = part.size - sum(by_component.values())
    return {
        "model": header["model"],
        "method": header.get("method"),
        "compression": header.get("compression"),  # the settings it was made with (as written; not used to decode)
        "video": header["video"],
        "config": header["config"],
        "bytes_by_component": by_component,
        "tensors": tensors,
        "tnerv_version": header.get("tnerv_version"),
    }
