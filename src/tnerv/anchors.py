"""Traditional-codec anchors: x265, x264 and SVT-AV1 through PyAV, measured like the neural codecs.

Every anchor is low delay (no frame reordering), as the NeRV literature runs x265 ("veryslow, no
B-frames"): x265 and x264 get preset veryslow and no B-frames; SVT-AV1 gets its low-delay
prediction structure (``pred-struct=1``), since its default random-access structure reorders
frames like B-frames do. Rate is set by CRF.

Colour: RGB is converted to YUV here with an explicit matrix (``tnerv.video.colour``), limited
range, and the stream is tagged with that matrix; decoded frames go back to RGB with the same
matrix. PSNR and MS-SSIM come from ``tnerv.metrics.evaluate_frames`` on RGB, as for every other
method. yuv420p caps RGB PSNR at about 44-45 dB on natural clips; yuv444p (x265, x264 only) is
the fairer anchor at high rates.

Size: ``num_bytes`` counts the elementary stream alone, no container. HEVC and H.264 are
written as Annex-B byte streams (FFmpeg formats ``hevc`` and ``h264``). AV1 is written as a
low-overhead OBU stream (FFmpeg format ``obu``, AV1 spec section 5): the bare OBUs, including
the 2-byte temporal delimiter the spec puts at the start of each temporal unit. IVF would add
a 32-byte file header and a 12-byte header per frame on top of exactly the same OBUs.
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from tnerv.errors import TnervError
from tnerv.files import write_atomic
from tnerv.metrics import bits_per_pixel, evaluate_frames
from tnerv.video.colour import _range_scales, _to_uint8, _weights, check_matrix, default_matrix
from tnerv.video.io import COLORSPACE_TAG, LIMITED_RANGE, frame_to_rgb, yuv420_frame


@dataclass(frozen=True)
class _Codec:
    """How one anchor codec is run: encoder, raw-stream format, CRF range and fixed options."""

    encoder: str
    container: str  # FFmpeg format of the raw elementary stream
    suffix: str
    crf_range: tuple[int, int]
    default_preset: str
    options: dict[str, str]
    structure: str  # the prediction structure `options` sets, as a table names it



_CODECS: dict[str, _Codec] = {
    # log-level=error: x265 prints its settings straight to stderr otherwise.
    "x265": _Codec("libx265", "hevc", ".hevc", (0, 51), "veryslow", {"x265-params": "bframes=0:log-level=error"},
                   "no B-frames"),
    "x264": _Codec("libx264", "h264", ".h264", (0, 51), "veryslow", {"bf": "0"}, "no B-frames"),
    # FFmpeg's libsvtav1 takes crf 1..63 (0 would mean "unset" and fall back to SVT's default).
    "av1": _Codec("libsvtav1", "obu", ".obu", (1, 63), "8", {"svtav1-params": "pred-struct=1"}, "low delay"),
}


def anchor_label(codec: str, preset: str | None = None) -> str:
    """How tables and figures name an anchor: its codec, preset and prediction structure, e.g. "x265
    (veryslow, no B-frames)"; `preset` defaults to the codec's."""
    spec = _CODECS[codec]
    name = {"x265": "x265", "x264": "x264", "av1": "SVT-AV1"}[codec]
    preset = preset or spec.default_preset
    return f"{name} ({'preset ' + preset if preset.isdigit() else preset}, {spec.structure})"

ANCHOR_CODECS: dict[str, str] = {name: c.encoder for name, c in _CODECS.items()}
DEFAULT_CRFS = (22, 27, 32, 37)
PIX_FMTS = ("yuv420p", "yuv444p")

@dataclass
class AnchorResult:
    """One anchor encode: settings, stream size, RGB quality of the decoded frames and speed."""

    codec: str
    crf: int
    preset: str
    pix_fmt: str
    matrix: str
    num_frames: int
    height: int
    width: int
    num_bytes: int
    bpp: float
    psnr: float
    ms_ssim: float
    ms_ssim_variant: str
    encode_seconds: float
    decode_fps: float

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a plain dict (JSON-ready)."""
        return asdict(self)


def check_crfs(codec: str, crfs: Iterable[int]) -> list[int]:
    """Return the distinct CRFs in their order; raise if one is outside the codec's range."""
    distinct = list(dict.fromkeys(crfs))  # a CRF listed twice is encoded once
    lo, hi = _codec(codec).crf_range
    bad = [c for c in distinct if not lo <= c <= hi]
    if bad:
        raise TnervError(f"{codec} --crf must be in {lo}..{hi}, got {bad[0]}")
    return distinct


@dataclass(frozen=True)
class AnchorOutputs:
    """Where an anchor set is written in a folder: one raw stream per CRF, and anchor.json for the results."""

    folder: Path
    streams: dict[int, Path]
    results: Path


def anchor_outputs(
    folder: str | Path, video: str | Path, codec: str, pix_fmt: str, crfs: Iterable[int]
) -> AnchorOutputs:
    """Name the files of an anchor set (VIDEO-CODEC[-444]-crfN.SUFFIX, anchor.json); raise if one exists."""
    folder = Path(folder)
    stem = f"{Path(video).stem}-{codec}" + ("-444" if pix_fmt == "yuv444p" else "")
    streams = {c: folder / f"{stem}-crf{c}{stream_suffix(codec)}" for c in crfs}
    outputs = AnchorOutputs(folder, streams, folder / "anchor.json")
    # Checked before any encode, so that a second run never replaces part of an earlier set.
    for target in [*streams.values(), outputs.results]:
        if target.exists():
            raise TnervError(f"{target} exists; choose another --out or remove it")
    return outputs


def stream_suffix(codec: str) -> str:
    """Return the file suffix of a codec's raw stream (".hevc", ".h264", ".obu")."""
    return _codec(codec).suffix


def _codec(codec: str) -> _Codec:
    if codec not in _CODECS:
        raise TnervError(f"unknown anchor codec {codec!r} (choose one of: {', '.join(_CODECS)})")
    return _CODECS[codec]


def rgb_to_yuv444(rgb: np.ndarray, matrix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert RGB uint8 (H, W, 3) to limited-range 4:4:4 planes (y, u, v) with `matrix`."""
    # Same weights and ranges as colour.rgb_to_yuv420, without the chroma averaging.
    kr, kg, kb = _weights(matrix)
    y_off, y_span, c_span = _range_scales(False)
    x = rgb.astype(np.float32) / 255.0
    ey = kr * x[..., 0] + kg * x[..., 1] + kb * x[..., 2]
    pb = (x[..., 2] - ey) / (2.0 * (1.0 - kb))
    pr = (x[..., 0] - ey) / (2.0 * (1.0 - kr))
    return _to_uint8(y_off + y_span * ey), _to_uint8(128.0 + c_span * pb), _to_uint8(128.0 + c_span * pr)


def _yuv_frame(rgb: np.ndarray, pix_fmt: str, matrix: str, pts: int) -> av.VideoFrame:
    """Convert one RGB frame to a PyAV yuv420p/yuv444p frame with our explicit matrix."""
    if pix_fmt == "yuv444p":
        frame = av.VideoFrame.from_ndarray(np.stack(rgb_to_yuv444(rgb, matrix)), format="yuv444p")
        frame.pts = pts
        return frame
    return yuv420_frame(rgb, matrix, pts)


def _check_inputs(frames: np.ndarray, codec: str, crf: int, pix_fmt: str, fps: float) -> _Codec:
    """Reject inputs the codec cannot take, each with a one-line reason."""
    spec = _codec(codec)
    if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[3] == 3):
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise TnervError(f"anchor frames must be uint8 RGB (N, H, W, 3), got {got}")
    n, h, w, _ = frames.shape
    if n == 0 or h == 0 or w == 0:
        raise TnervError(f"there are no frames to encode (got shape {frames.shape})")
    if pix_fmt not in PIX_FMTS:
        raise TnervError(f"unknown pixel format {pix_fmt!r} (choose one of: {', '.join(PIX_FMTS)})")
    if pix_fmt not in {f.name for f in av.Codec(spec.encoder, "w").video_formats}:
        raise TnervError(f"{codec} ({spec.encoder}) cannot encode {pix_fmt}")
    if pix_fmt == "yuv420p" and (h % 2 or w % 2):
        raise TnervError(f"yuv420p needs an even width and height, got {w}x{h}")
    lo, hi = spec.crf_range
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not lo <= crf <= hi:
        raise TnervError(f"{codec} crf must be an integer in {lo}..{hi}, got {crf!r}")
    if not fps > 0:
        raise TnervError(f"fps must be positive, got {fps}")
    return spec


def _encode(frames: np.ndarray, spec: _Codec, options: dict[str, str], pix_fmt: str, matrix: str, fps: float) -> bytes:
    """Encode RGB frames to a raw elementary stream in memory and return its bytes."""
    if spec.encoder == "libsvtav1":
        # SVT-AV1 prints its banner to stderr unless its log level is lowered before it starts.
        os.environ.setdefault("SVT_LOG", "1")
    _, h, w, _ = frames.shape
    buf = io.BytesIO()
    try:
        with av.open(buf, "w", format=spec.container) as container:
            stream = container.add_stream(spec.encoder, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
            stream.options = options
            stream.codec_context.colorspace = COLORSPACE_TAG[matrix]
            stream.codec_context.color_range = LIMITED_RANGE
            for i, rgb in enumerate(frames):
                container.mux(stream.encode(_yuv_frame(rgb, pix_fmt, matrix, i)))
            container.mux(stream.encode(None))
    except av.FFmpegError as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise TnervError(f"{spec.encoder} refused the settings {options}: {reason}") from None
    return buf.getvalue()


def _decode(data: bytes, container_format: str, matrix: str, out: np.ndarray) -> int:
    """Decode a raw stream into RGB frames in `out` with `matrix`; return the number of frames."""
    count = 0
    reformatter = VideoReformatter()  # one swscale context for all frames
    with av.open(io.BytesIO(data), format=container_format) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if count == len(out):
                raise TnervError(f"the stream decoded to more than the {len(out)} frames encoded")
            if (frame.height, frame.width) != out.shape[1:3]:
                raise TnervError(f"decoded frame {count} is {frame.width}x{frame.height}, not the input's size")
            out[count] = frame_to_rgb(frame, matrix, reformatter)
            count += 1
    return count


def encode_anchor(
    frames: np.ndarray,
    codec: str = "x265",
    crf: int = 27,
    pix_fmt: str = "yuv420p",
    preset: str | None = None,
    fps: float = 25.0,
    matrix: str | None = None,
    stream_path: str | Path | None = None,
) -> tuple[AnchorResult, np.ndarray]:
    """Encode uint8 RGB frames (N, H, W, 3), decode the stream back and measure it; also return the decoded frames."""
    spec = _check_inputs(frames, codec, crf, pix_fmt, fps)
    n, h, w, _ = frames.shape
    matrix = check_matrix(matrix) if matrix is not None else default_matrix(h)
    preset = str(preset if preset is not None else spec.default_preset)
    options = {"crf": str(int(crf)), "preset": preset, **spec.options}

    # Encode time includes the RGB -> YUV conversion, as decode time includes the way back.
    start = time.perf_counter()
    data = _encode(frames, spec, options, pix_fmt, matrix, fps)
    encode_seconds = time.perf_counter() - start
    if stream_path is not None:
        Path(stream_path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(stream_path, data)

    decoded = np.empty_like(frames)
    start = time.perf_counter()
    count = _decode(data, spec.container, matrix, decoded)
    decode_seconds = time.perf_counter() - start
    if count != n:
        raise TnervError(f"{spec.encoder} stream decoded to {count} frames, expected {n}")

    report = evaluate_frames(decoded, frames)
    result = AnchorResult(
        codec=codec, crf=int(crf), preset=preset, pix_fmt=pix_fmt, matrix=matrix,
        num_frames=n, height=h, width=w, num_bytes=len(data), bpp=bits_per_pixel(len(data), n, h, w),
        psnr=report.psnr, ms_ssim=report.ms_ssim, ms_ssim_variant=report.ms_ssim_variant,
        encode_seconds=encode_seconds, decode_fps=n / decode_seconds,
    )
    return result, decoded


def anchor_curve(
    frames: np.ndarray, codec: str = "x265", crfs: tuple[int, ...] | list[int] = DEFAULT_CRFS, **kwargs: Any
) -> list[AnchorResult]:
    """Encode the frames at each CRF (other arguments as encode_anchor, except stream_path); return the results."""
    if "stream_path" in kwargs:
        raise TypeError("anchor_curve writes no streams; call encode_anchor per CRF with stream_path")
    if not crfs:
        raise TnervError("give at least one CRF")
    return [encode_anchor(frames, codec, crf, **kwargs)[0] for crf in crfs]


def bpp_at_psnr(curve: Iterable[AnchorResult], psnr: float) -> float | None:
    """The anchor's bpp at a PSNR, interpolated on its curve (log bpp linear in PSNR between the two
    encodes around it, as the Bjontegaard rate is integrated); None outside the curve's PSNR range."""
    points = sorted((r.psnr, math.log(r.bpp)) for r in curve)
    for (low_psnr, low_rate), (high_psnr, high_rate) in zip(points, points[1:]):
        if low_psnr <= psnr <= high_psnr and high_psnr > low_psnr:
            share = (psnr - low_psnr) / (high_psnr - low_psnr)
            return math.exp(low_rate + share * (high_rate - low_rate))
    return next((math.exp(rate) for p, rate in points if p == psnr), None)


def anchor_at_psnr(frames: np.ndarray, psnr: float, codec: str = "x265", **kwargs: Any) -> AnchorResult | None:
    """The anchor's encode at the largest CRF whose PSNR reaches `psnr` (other arguments as encode_anchor,
    except stream_path): a binary search over the codec's CRF range, PSNR falling as CRF grows (about 6
    encodes); None if even its lowest CRF falls short."""
    low, high = _codec(codec).crf_range
    best = None
    while low <= high:
        crf = (low + high) // 2
        result = encode_anchor(frames, codec, crf, **kwargs)[0]
        if result.psnr >= psnr:
            best, low = result, crf + 1
        else:
            high = crf - 1
    return best
