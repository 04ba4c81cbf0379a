"""Video readers and writers: PyAV containers, raw I420 .yuv files and folders of PNG/JPEG frames.

Sources
- Containers (mp4, mkv, mov, avi, y4m, ...): decoded with PyAV, stopping once the last selected frame
  is decoded. MP4/MOV files are sought to the key frame before the first selected frame, each frame named
  by its timestamp in the sample table; other containers carry no exact frame index and are decoded from
  the first frame, as is an MP4 whose seek lands past the first selected frame.
- Raw 8-bit 4:2:0 planar ``.yuv`` (I420, as UVG ships it): needs ``size=(width, height)``; only
  the selected frames are read, by seeking.
- A folder of PNG/JPEG files in natural sort order (frame2 before frame10), decoded with PyAV.
- A sample name ("bikes", "carphone") where no file of that name exists.

Colour: YUV frames are converted to RGB with an explicit matrix, never PyAV's implicit BT.601.
``matrix=None`` means bt709 for height >= 720, else bt601; JPEG files default to bt601, as JFIF
specifies. Stream colour tags are not consulted. Even-sized frames go through swscale with the
matrix, range and exact chroma interpolation set explicitly (tested to agree with
``tnerv.video.colour.yuv_to_rgb`` within one level, and several times faster); odd-sized frames
use ``yuv_to_rgb`` itself. RGB, grey and palette sources need no matrix and PyAV converts them.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

from tnerv.errors import TnervError
from tnerv.files import write_atomic, write_with
from tnerv.video.colour import check_matrix, default_matrix, rgb_to_yuv420, yuv420_to_rgb, yuv_to_rgb
from tnerv.video.samples import SAMPLES, sample

# Frame rate reported for sources that carry none (raw .yuv, image folders) unless fps is given.
DEFAULT_FPS = 25.0

IMAGE_CODECS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
RAW_SUFFIXES = {".yuv"}

# 8-bit planar YUV layouts whose planes are read directly; other YUV layouts go via yuv444p.
_PLANAR_YUV8 = {
    prefix + sub
    for prefix in ("yuv", "yuvj")
    for sub in ("420p", "422p", "444p", "440p", "411p", "410p")
}


@dataclass
class VideoInfo:
    """What probe() learnt about a source: exact frame count, size, rate, codec, pixel format."""

    path: str
    num_frames: int
    height: int
    width: int
    fps: float
    codec: str
    pix_fmt: str


@dataclass
class Video:
    """Decoded RGB frames (N, H, W, 3) uint8 with the indices they had in the source."""

    frames: np.ndarray
    fps: float
    info: VideoInfo
    frame_indices: list[int]


# ---------------------------------------------------------------------------------------------
# Locating and classifying sources


def _resolve(path: str | Path) -> Path:
    """Return the source path, mapping a sample name to its clip when no such file exists."""
    p = Path(path)
    if p.exists():
        return p
    if str(path) in SAMPLES:
        return sample(str(path))
    raise TnervError(f"no such file: {path}")


def _is_raw(path: Path) -> bool:
    """Tell whether the path names a raw I420 file (by its suffix)."""
    return path.is_file() and path.suffix.lower() in RAW_SUFFIXES


def natural_key(name: str) -> list[str | int]:
    """Sort key that orders digit runs by value, so frame2 sorts before frame10."""
    # re.split with a capture group alternates text and digits, so types line up position by
    # position and lists from different names compare without mixing str and int.
    parts = re.split(r"(\d+)", name)
    return [int(part) if i % 2 else part.lower() for i, part in enumerate(parts)]


def _image_files(folder: Path) -> list[Path]:
    """List the PNG/JPEG files of a folder in natural order, skipping hidden files."""
    files = [
        f
        for f in folder.iterdir()
        if f.suffix.lower() in IMAGE_CODECS and not f.name.startswith(".") and f.is_file()
    ]
    if not files:
        raise TnervError(f"{folder} holds no PNG or JPEG frames")
    # The name itself breaks ties such as f01/f1, so the order never depends on the file system.
    return sorted(files, key=lambda f: (natural_key(f.name), f.name))


def _av_reason(err: Exception) -> str:
    """Return FFmpeg's short reason for an error, without errno noise."""
    return getattr(err, "strerror", None) or str(err)


def _open_container(path: Path) -> av.container.InputContainer:
    """Open a container with a video stream, turning PyAV failures into TnervError."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as err:
        raise TnervError(f"{path} is not a video PyAV can read: {_av_reason(err)}") from None
    if not container.streams.video:
        container.close()
        raise TnervError(f"{path} is not a video PyAV can read: it has no video stream")
    return container


# ---------------------------------------------------------------------------------------------
# Probing


def _count_frames(container: av.container.InputContainer) -> int:
    """Count a stream's frames exactly.

    MP4/MOV: count packets (one per frame from the sample table; packets an edit list discards
    are skipped), which needs no decoding. Other containers (mkv, avi, y4m, ...) carry no
    reliable count, so their frames are decoded and counted.
    """
    stream = container.streams.video[0]
    if "mp4" in container.format.name.split(","):
        return sum(1 for pkt in container.demux(stream) if pkt.size and not pkt.is_discard)
    stream.thread_type = "AUTO"
    try:
        return sum(1 for _ in container.decode(stream))
    except av.FFmpegError as err:
        raise TnervError(f"{container.name} could not be decoded: {_av_reason(err)}") from None


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    """Return the stream's frame rate, falling back to DEFAULT_FPS when it has none."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else DEFAULT_FPS


def _probe_container(path: Path, fps: float | None) -> VideoInfo:
    """Probe a PyAV container."""
    with _open_container(path) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        codec, pix_fmt = ctx.name, ctx.pix_fmt or "unknown"
        height, width = stream.height, stream.width
        rate = fps or _stream_fps(stream)
        count = _count_frames(container)
    return VideoInfo(str(path), count, height, width, rate, codec, pix_fmt)


def raw_frame_bytes(width: int, height: int) -> int:
    """Bytes in one I420 frame (odd sizes round chroma up, as FFmpeg does)."""
    return width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)


def size_from_name(path: Path) -> tuple[int, int] | None:
    """(width, height) from a name such as Beauty_1920x1080_120fps_420_8bit_YUV.yuv, or None."""
    match = re.search(r"(?<![0-9])(\d{1,5})x(\d{1,5})(?![0-9])", path.name)
    return (int(match[1]), int(match[2])) if match else None


def _check_size(size: tuple[int, int] | None, path: Path) -> tuple[int, int]:
    """Validate a (width, height) pair given for a raw file; UVG-style names supply it too."""
    if size is None:
        size = size_from_name(path)
    if size is None:
        raise TnervError(f"{path} is raw YUV: give its frame size (--yuv-size WxH), or name it like clip_1920x1080.yuv")
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise TnervError(f"size must be (width, height), got {size!r}") from None
    if width <= 0 or height <= 0:
        raise TnervError(f"size must be positive, got {width}x{height}")
    return width, height


def _probe_raw(path: Path, size: tuple[int, int] | None, fps: float | None) -> VideoInfo:
    """Probe a raw I420 file from its size on disk."""
    width, height = _check_size(size, path)
    frame_bytes = raw_frame_bytes(width, height)
    total = path.stat().st_size
    if total % frame_bytes:
        raise TnervError(
            f"{path} is {total} bytes, not a whole number of {width}x{height} I420 frames "
            f"({frame_bytes} bytes each): check the size"
        )
    rate = fps or DEFAULT_FPS
    return VideoInfo(str(path), total // frame_bytes, height, width, rate, "rawvideo", "yuv420p")


def decode_image(file: Path) -> av.VideoFrame:
    """Decode the single picture of a PNG/JPEG file with PyAV."""
    try:
        with av.open(str(file)) as container:
            for frame in container.decode(video=0):
                return frame
    except (av.FFmpegError, OSError, ValueError) as err:
        raise TnervError(f"{file} is not an image PyAV can read: {_av_reason(err)}") from None
    raise TnervError(f"{file} holds no image")


def _probe_folder(path: Path, fps: float | None) -> VideoInfo:
    """Probe a folder of PNG/JPEG frames (size and pixel format from the first file)."""
    files = _image_files(path)
    first = decode_image(files[0])
    codecs = sorted({IMAGE_CODECS[f.suffix.lower()] for f in files}, reverse=True)
    rate = fps or DEFAULT_FPS
    return VideoInfo(str(path), len(files), first.height, first.width, rate, "+".join(codecs), first.format.name)


def probe(path: str | Path, size: tuple[int, int] | None = None, fps: float | None = None) -> VideoInfo:
    """Describe a video source; size=(width, height) is required for .yuv, fps overrides the rate.

    For other sources a given size must match the real one. Raw files and image folders carry
    no frame rate: they report `fps`, or DEFAULT_FPS without it.
    """
    p = _resolve(path)
    if fps is not None and fps <= 0:
        raise TnervError(f"fps must be positive, got {fps}")
    if p.is_dir():
        info = _probe_folder(p, fps)
    elif _is_raw(p):
        info = _probe_raw(p, size, fps)
    else:
        info = _probe_container(p, fps)
    if info.num_frames == 0:
        raise TnervError(f"{p} has no frames")
    # A size given for a self-describing source must agree with it, else the caller is confused.
    if size is not None and not _is_raw(p) and tuple(size) != (info.width, info.height):
        raise TnervError(f"size {size[0]}x{size[1]} was given but {p} is {info.width}x{info.height}")
    return info


# ---------------------------------------------------------------------------------------------
# Reading


def _selection(info: VideoInfo, start: int, count: int | None, step: int) -> list[int]:
    """Return the frame indices start, start+step, ... (count of them, or to the end)."""
    if step < 1:
        raise TnervError(f"step must be at least 1, got {step}")
    if start < 0:
        raise TnervError(f"start must be at least 0, got {start}")
    if count is not None and count < 1:
        raise TnervError(f"count must be at least 1, got {count}")
    total = info.num_frames
    if count is None:
        if start >= total:
            raise TnervError(f"frames {start}..end requested but {info.path} has {total} frames")
        return list(range(start, total, step))
    last = start + (count - 1) * step
    if last >= total:
        every = f" (every {step})" if step > 1 else ""
        raise TnervError(f"frames {start}..{last}{every} requested but {info.path} has {total} frames")
    return list(range(start, last + 1, step))


def _plane(frame: av.VideoFrame, index: int) -> np.ndarray:
    """View one 8-bit plane of a frame as (height, width), dropping row padding."""
    plane = frame.planes[index]
    data = np.frombuffer(plane, dtype=np.uint8, count=plane.height * plane.line_size)
    return data.reshape(plane.height, plane.line_size)[:, : plane.width]


# swscale settings under which its YUV -> RGB output agrees with colour.yuv_to_rgb to within one
# level (tests check it): the matrix and range are passed explicitly, chroma is interpolated at
# full horizontal resolution with accurate rounding, and BITEXACT keeps results the same on
# every CPU. It runs several times faster than the numpy reference on HD frames.
_SWS_FLAGS = (
    Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT | Interpolation.BITEXACT
)
_SWS_COLORSPACE = {"bt601": Colorspace.ITU601, "bt709": Colorspace.ITU709}


def _rgb_via_numpy(frame: av.VideoFrame, matrix: str, full_range: bool) -> np.ndarray:
    """Convert a YUV frame with colour.yuv_to_rgb, reading its 8-bit planes directly."""
    if frame.format.name not in _PLANAR_YUV8:
        # Semi-planar, packed or >8-bit YUV: swscale converts YUV to YUV without any matrix.
        frame = frame.reformat(format="yuvj444p" if full_range else "yuv444p")
    y, u, v = (_plane(frame, i) for i in range(3))
    return yuv_to_rgb(y, u, v, matrix, full_range=full_range)


def frame_to_rgb(
    frame: av.VideoFrame, matrix: str, reformatter: VideoReformatter | None = None
) -> np.ndarray:
    """Convert a decoded PyAV frame to RGB uint8 (H, W, 3), applying `matrix` to YUV frames.

    Pass one `reformatter` for all frames of a video: it keeps its swscale context, which is
    several times faster than building one per frame.
    """
    fmt = frame.format
    if fmt.is_rgb or fmt.has_palette or len(fmt.components) < 3:
        return frame.to_ndarray(format="rgb24")
    full_range = fmt.name.startswith("yuvj") or frame.color_range == ColorRange.JPEG
    if frame.width % 2 or frame.height % 2:
        # swscale maps odd-sized chroma with a slightly different scale, so use the reference.
        return _rgb_via_numpy(frame, matrix, full_range)
    rgb = (reformatter or VideoReformatter()).reformat(
        frame,
        format="rgb24",
        src_colorspace=_SWS_COLORSPACE[check_matrix(matrix)],
        src_color_range=ColorRange.JPEG if full_range else ColorRange.MPEG,
        interpolation=_SWS_FLAGS,
    )
    return rgb.to_ndarray()


# The readers below write each selected frame straight into a preallocated (N, H, W, 3) array:
# collecting frames and stacking them would hold every frame twice and copy it once more.


def _presentation_times(container: av.container.InputContainer) -> list[int] | None:
    """The timestamps of an MP4/MOV stream's frames in presentation order, from its packets (no decoding,
    the packets `_count_frames` counts): frame i has the i-th. None for other containers, or where a
    packet has no timestamp or two share one, so that no timestamp names a frame for sure."""
    if "mp4" not in container.format.name.split(","):
        return None
    times = []
    for packet in container.demux(container.streams.video[0]):
        if packet.size and not packet.is_discard:
            if packet.pts is None:
                return None
            times.append(packet.pts)
    times.sort()
    return times if len(set(times)) == len(times) else None


def _decode_into(container: av.container.InputContainer, indices: list[int], out: np.ndarray,
                 convert: Callable[[av.VideoFrame, int], np.ndarray], index_of: dict[int, int] | None) -> int | None:
    """Decode the selected frames into `out` from where the container stands: frames are counted from
    0, or, after a seek, named by their timestamps (`index_of`) from the first key frame on. Returns the
    number of frames decoded if the stream ended first; raises _LostFrame after a seek that did not land
    on or before the first selected frame, on a frame whose timestamp names none, or where the stream ends
    before the last selected frame (a decode from the first frame then finds out how many it has)."""
    stream = container.streams.video[0]
    wanted = iter(indices)
    target = next(wanted)
    position, filled, keyed = -1, 0, index_of is None
    for frame in container.decode(stream):
        if index_of is None:
            position += 1
        else:
            if not keyed and not frame.key_frame:
                continue  # before the key frame a seek lands on (an open GOP's leading frames)
            keyed = True
            named = index_of.get(frame.pts)
            if named is None or named <= position or (position < 0 and named > target):
                raise _LostFrame
            position = named
        if position == target:
            out[filled] = convert(frame, position)
            filled += 1
            target = next(wanted, None)
            if target is None:
                return None
    if index_of is not None:
        raise _LostFrame  # the stream ended after a seek (or named no key frame): the first frame on tells
    return position + 1


class _LostFrame(Exception):
    """After a seek, a frame that its timestamp does not name, or the first selected frame passed."""


def _read_container(path: Path, indices: list[int], matrix: str, out: np.ndarray) -> int | None:
    """Decode the selected frames into `out`; return the true frame count if decoding hit the end. An MP4/MOV
    stream is sought to the key frame at or before the first selected frame (`_presentation_times` names
    every frame); other containers, and a seek that misses, decode from the first frame."""
    reformatter = VideoReformatter()

    def convert(frame: av.VideoFrame, position: int) -> np.ndarray:
        if (frame.height, frame.width) != out.shape[1:3]:
            # A mid-stream size change cannot fit one (N, H, W, 3) array.
            raise TnervError(f"frame {position} of {path} is {frame.width}x{frame.height}, not the stream's size")
        return frame_to_rgb(frame, matrix, reformatter)

    try:
        if indices[0] > 0:
            with _open_container(path) as container:
                times = _presentation_times(container)
                if times is not None and indices[-1] < len(times):
                    stream = container.streams.video[0]
                    stream.thread_type = "AUTO"
                    container.seek(times[indices[0]], backward=True, any_frame=False, stream=stream)
                    with contextlib.suppress(_LostFrame):
                        return _decode_into(container, indices, out, convert, {t: i for i, t in enumerate(times)})
        with _open_container(path) as container:
            container.streams.video[0].thread_type = "AUTO"
            return _decode_into(container, indices, out, convert, None)
    except av.FFmpegError as err:
        raise TnervError(f"{path} could not be decoded: {_av_reason(err)}") from None


def _read_raw(path: Path, indices: list[int], matrix: str, out: np.ndarray) -> None:
    """Read the selected I420 frames into `out` by seeking, converting them to RGB."""
    h, w = out.shape[1:3]
    cw, ch = (w + 1) // 2, (h + 1) // 2
    frame_bytes = raw_frame_bytes(w, h)
    reformatter = VideoReformatter()
    with open(path, "rb") as f:
        for k, index in enumerate(indices):
            f.seek(index * frame_bytes)
            buf = np.frombuffer(f.read(frame_bytes), dtype=np.uint8)
            if w % 2 == 0 and h % 2 == 0:
                # I420 bytes are exactly PyAV's yuv420p array layout: convert as decoded frames are.
                frame = av.VideoFrame.from_ndarray(buf.reshape(h * 3 // 2, w), format="yuv420p")
                out[k] = frame_to_rgb(frame, matrix, reformatter)
                continue
            y = buf[: w * h].reshape(h, w)
            u = buf[w * h : w * h + cw * ch].reshape(ch, cw)
            v = buf[w * h + cw * ch :].reshape(ch, cw)
            out[k] = yuv420_to_rgb(y, u, v, matrix)


def _read_folder(path: Path, indices: list[int], matrix: str, out: np.ndarray) -> None:
    """Decode the selected image files into `out`, checking they all share the first file's size."""
    files = _image_files(path)
    h, w = out.shape[1:3]
    reformatter = VideoReformatter()
    for k, index in enumerate(indices):
        frame = decode_image(files[index])
        if (frame.width, frame.height) != (w, h):
            size = f"{frame.width}x{frame.height}"
            raise TnervError(f"{files[index]} is {size} but {files[0].name} is {w}x{h}")
        out[k] = frame_to_rgb(frame, matrix, reformatter)


def _default_matrix(info: VideoInfo) -> str:
    """The matrix for a source when none is given: bt601 for JPEG (JFIF says so), else by height."""
    if "jpeg" in info.codec or info.codec == "mjpeg":
        return "bt601"
    return default_matrix(info.height)


def count_frames(info: VideoInfo, *, start: int = 0, count: int | None = None, step: int = 1) -> int:
    """How many frames `read_video` reads of a source (`probe`'s `info`) with these arguments, by the source's
    own frame count."""
    return len(_selection(info, start, count, step))


def read_video(
    path: str | Path,
    *,
    start: int = 0,
    count: int | None = None,
    step: int = 1,
    size: tuple[int, int] | None = None,
    matrix: str | None = None,
) -> Video:
    """Read frames start, start+step, ... (count of them, or to the end) as RGB uint8 (N, H, W, 3)."""
    matrix = check_matrix(matrix) if matrix is not None else None
    info = probe(path, size=size)
    matrix = matrix or _default_matrix(info)
    p = Path(info.path)
    indices = _selection(info, start, count, step)
    out = np.empty((len(indices), info.height, info.width, 3), dtype=np.uint8)
    if p.is_dir():
        _read_folder(p, indices, matrix, out)
    elif _is_raw(p):
        _read_raw(p, indices, matrix, out)
    else:
        true_total = _read_container(p, indices, matrix, out)
        if true_total is not None:
            # Decoding ended early: the decoded count overrides the container's, and the
            # selection is checked again against it (raising if requested frames are missing).
            info = replace(info, num_frames=true_total)
            kept = _selection(info, start, count, step)
            indices, out = kept, out[: len(kept)]
    return Video(out, info.fps, info, indices)


# ---------------------------------------------------------------------------------------------
# Writing


def _check_frames(frames: np.ndarray) -> None:
    """Reject arrays that are not non-empty uint8 (N, H, W, 3)."""
    ok = isinstance(frames, np.ndarray) and frames.ndim == 4 and frames.shape[3] == 3 and frames.dtype == np.uint8
    if not ok:
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"expected uint8 frames (N, H, W, 3), got {got}")
    if frames.shape[0] == 0:
        raise TnervError("there are no frames to write")


def encode_png(rgb: np.ndarray) -> bytes:
    """Encode one RGB frame as PNG bytes with PyAV's (lossless) png encoder."""
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = rgb.shape[1], rgb.shape[0], "rgb24"
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    return b"".join(bytes(p) for p in packets)


def write_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Write one uint8 RGB frame (H, W, 3) as a lossless PNG file (atomically)."""
    _check_frames(rgb[None])
    path = Path(path)
    write_atomic(path, encode_png(rgb))
    return path


_FRAME_NAME = re.compile(r"frame_(\d+)\.png")


def write_frames(frames: np.ndarray, folder: str | Path) -> list[Path]:
    """Write frames as lossless PNGs frame_00001.png, ... into `folder`; return their paths.

    Files named frame_<number>.png numbered beyond the new frames (left by an earlier, longer
    write) are deleted, so reading the folder back gives exactly these frames.
    """
    _check_frames(frames)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, rgb in enumerate(frames, start=1):
        path = out / f"frame_{i:05d}.png"
        write_atomic(path, encode_png(rgb))
        paths.append(path)
    for old in out.iterdir():
        match = _FRAME_NAME.fullmatch(old.name)
        if match and int(match.group(1)) > len(frames):
            old.unlink()
    return paths


# Colorspace codes (FFmpeg AVColorSpace) written into the H.264 stream's VUI.
COLORSPACE_TAG = {"bt709": 1, "bt601": 5}
LIMITED_RANGE = 1


def yuv420_frame(rgb: np.ndarray, matrix: str, pts: int) -> av.VideoFrame:
    """Convert RGB to a yuv420p PyAV frame with our explicit matrix."""
    y, u, v = rgb_to_yuv420(rgb, matrix)
    h, w = y.shape
    packed = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(h * 3 // 2, w)
    frame = av.VideoFrame.from_ndarray(packed, format="yuv420p")
    frame.pts = pts
    return frame


def write_mp4(
    frames: np.ndarray, path: str | Path, fps: float, crf: int = 18, *, matrix: str | None = None
) -> Path:
    """Encode RGB frames to H.264 (libx264, yuv420p, CRF) in an mp4; width and height must be even.

    RGB is converted with `matrix` (default: bt709 for height >= 720, else bt601) and the
    stream is tagged with it. Odd sizes are refused rather than padded, so the output always
    has the frames' exact size.
    """
    _check_frames(frames)
    n, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise TnervError(f"H.264 yuv420p needs an even width and height, got {w}x{h}")
    if fps <= 0:
        raise TnervError(f"fps must be positive, got {fps}")
    if not 0 <= crf <= 51:
        raise TnervError(f"crf must be in 0..51, got {crf}")
    matrix = check_matrix(matrix) if matrix else default_matrix(h)
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)

    def encode(tmp: str) -> None:
        with av.open(tmp, "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": str(crf)}
            stream.codec_context.colorspace = COLORSPACE_TAG[matrix]
            stream.codec_context.color_range = LIMITED_RANGE
            for i, rgb in enumerate(frames):
                container.mux(stream.encode(yuv420_frame(rgb, matrix, i)))
            container.mux(stream.encode(None))

    write_with(final, encode)
    return final
