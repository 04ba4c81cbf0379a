"""Videos coded in segments (bitstream version 4, docs/bitstream.md): one file whose header lists the
segments (their first frame and frame count) and whose sections each hold one segment's own .tnrv file, a
model of those frames alone. A range of frames is decoded from the segments that hold it
(`tnerv.decode.read_parts`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import tnerv
from tnerv.codec.bitstream import (
    SEGMENT,
    SEGMENTED,
    BitstreamError,
    Section,
    SegmentSection,
    declared_version,
    frame_sections,
    unpack,
)

# The video fields every segment's file repeats (its frame count apart): one picture size, rate and colour.
SHARED_VIDEO = ("height", "width", "fps", "colour")


@dataclass(frozen=True)
class Segment:
    """Frames [first, end) of a video, coded by one model."""

    first: int
    end: int

    @property
    def frames(self) -> int:
        """How many frames it holds."""
        return self.end - self.first


def pack_segments(files: list[bytes]) -> bytes:
    """A segmented file of the segments' own files, in the video's order (each of version 2 or 3)."""
    headers = [unpack(data, f"segment {i}")[0] for i, data in enumerate(files)]
    video = {**headers[0]["video"], "num_frames": sum(h["video"]["num_frames"] for h in headers)}
    entries, first = [], 0
    for i, h in enumerate(headers):
        if any(h["video"].get(k) != video.get(k) for k in SHARED_VIDEO):
            raise BitstreamError(f"segment {i} is of another picture size, rate or colour than segment 0")
        entries.append({"name": f"segment {i}", "first": first, "frames": h["video"]["num_frames"]})
        first += h["video"]["num_frames"]
    header = {"tnerv_version": tnerv.__version__, "video": video, "segments": entries}
    body = json.dumps(header, separators=(",", ":")).encode()
    return frame_sections(header, body, files, [SEGMENT] * len(files))


def is_segmented(header: dict[str, Any]) -> bool:
    """Whether a file's header is that of a video coded in segments."""
    return "segments" in header


def segment_table(header: dict[str, Any], source: str = "file") -> list[Segment]:
    """The segments a segmented file's header lists, checked: consecutive from frame 0, each of at least one
    frame, together the video's frames."""
    video, entries = header.get("video"), header["segments"]
    frames = video.get("num_frames") if isinstance(video, dict) else None
    if not _is_count(frames) or not entries:
        raise BitstreamError(f"{source} is malformed: its video or segment list is missing")
    table, first = [], 0
    for i, entry in enumerate(entries):
        if entry.get("first") != first or not _is_count(entry.get("frames")):
            raise BitstreamError(f"{source} is malformed: segment {i} does not start where the one before ends "
                                 "or holds no frames")
        table.append(Segment(first, first + entry["frames"]))
        first += entry["frames"]
    if first != frames:
        raise BitstreamError(f"{source} is malformed: its segments hold {first} frames, its video {frames}")
    return table


def segment_file(
    header: dict[str, Any], sections: list[Section], table: list[Segment], index: int, source: str = "file"
) -> tuple[dict[str, Any], list[Section], int]:
    """Segment `index`'s own file (`table`: the file's `segment_table`), read and checked (a file of one model,
    version 2 or 3, of the segment's frames and the video's picture): its header, sections and size in bytes."""
    where = f"{source} segment {index}"
    data = sections[index].data if isinstance(sections[index], SegmentSection) else b""
    if declared_version(data) == SEGMENTED:
        raise BitstreamError(f"{where} is itself a segmented file")  # one level: no nesting to recurse into
    inner, inner_sections = unpack(data, where)
    video = inner.get("video")
    if not isinstance(video, dict) or video.get("num_frames") != table[index].frames or any(
            video.get(k) != header["video"].get(k) for k in SHARED_VIDEO):
        raise BitstreamError(f"{where} is not of the frames and picture the segment list gives it")
    return inner, inner_sections, len(data)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1

