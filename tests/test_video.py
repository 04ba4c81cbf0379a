"""Tests for tnerv.video: readers, writers, colour conversion, samples and transforms."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tnerv.errors import TnervError
from tnerv.video import (
    SAMPLES,
    default_matrix,
    probe,
    read_video,
    resize_and_crop,
    rgb_to_yuv420,
    sample,
    to_tensor,
    to_uint8,
    write_frames,
    write_mp4,
    yuv420_to_rgb,
    yuv_to_rgb,
)
from tnerv.video import io
from tnerv.video.io import frame_to_rgb, natural_key

# One flat colour per frame, all different, so a decoded frame tells which index it had.
COLOURS = [(30 * i, 100, 200 - 20 * i) for i in range(8)]
H, W = 48, 64


def flat_frames(colours=COLOURS, h: int = H, w: int = W) -> np.ndarray:
    """Frames of shape (N, h, w, 3), frame i filled with colours[i]."""
    return np.stack([np.full((h, w, 3), c, dtype=np.uint8) for c in colours])


def write_clip(
    path: Path, fmt: str, codec: str, pix_fmt: str, frames: np.ndarray, options=None, dst_colorspace=None
) -> Path:
    """Write frames with PyAV; swscale does RGB -> YUV (BT.601 unless dst_colorspace is given)."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if options:
            stream.options = options
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame = frame.reformat(format=pix_fmt, dst_colorspace=dst_colorspace)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def assert_colours(frames: np.ndarray, colours, tol: int = 2) -> None:
    """Each frame is flat and equals its expected colour within tol levels."""
    assert len(frames) == len(colours)
    for frame, colour in zip(frames, colours):
        diff = np.abs(frame.astype(int) - np.array(colour))
        assert diff.max() <= tol, (frame[0, 0], colour)


# Lossless (or raw) encodings, so decoded pixels are checkable to rounding.
CONTAINERS = {
    "mp4": ("mp4", "libx264", "yuv444p", {"qp": "0"}, "h264"),
    "mkv": ("matroska", "ffv1", "yuv444p", None, "ffv1"),
    "avi": ("avi", "rawvideo", "yuv420p", None, "rawvideo"),
    "y4m": ("yuv4mpegpipe", "rawvideo", "yuv420p", None, "rawvideo"),
}


@pytest.fixture
def mkv(tmp_path: Path) -> Path:
    fmt, codec, pix, opts, _ = CONTAINERS["mkv"]
    return write_clip(tmp_path / "clip.mkv", fmt, codec, pix, flat_frames(), opts)


# --- containers ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", sorted(CONTAINERS))
def test_container_decodes_known_pixels(tmp_path: Path, suffix: str):
    fmt, codec, pix, opts, codec_name = CONTAINERS[suffix]
    path = write_clip(tmp_path / f"clip.{suffix}", fmt, codec, pix, flat_frames(), opts)
    info = probe(path)
    assert (info.num_frames, info.height, info.width) == (8, H, W)
    assert info.codec == codec_name and info.pix_fmt == pix and info.fps == 25.0
    video = read_video(path)
    assert video.frames.dtype == np.uint8 and video.frames.shape == (8, H, W, 3)
    assert video.frame_indices == list(range(8)) and video.fps == 25.0
    assert_colours(video.frames, COLOURS)


def test_selection_start_count_step(mkv: Path):
    video = read_video(mkv, start=2, count=3, step=2)
    assert video.frame_indices == [2, 4, 6]
    assert_colours(video.frames, [COLOURS[i] for i in (2, 4, 6)])
    assert read_video(mkv, start=5).frame_indices == [5, 6, 7]
    tail = read_video(mkv, step=3)
    assert tail.frame_indices == [0, 3, 6]
    assert_colours(tail.frames, [COLOURS[i] for i in (0, 3, 6)])


def test_out_of_range_selection(mkv: Path):
    with pytest.raises(TnervError, match=r"frames 6\.\.9 requested but .*clip.mkv has 8 frames"):
        read_video(mkv, start=6, count=4)
    with pytest.raises(TnervError, match="has 8 frames"):
        read_video(mkv, start=8)
    with pytest.raises(TnervError, match="has 8 frames"):
        read_video(mkv, start=0, count=5, step=2)  # frame 8 is one past the end


@pytest.mark.parametrize("kwargs", [{"step": 0}, {"count": 0}, {"start": -1}])
def test_invalid_selection_arguments(mkv: Path, kwargs):
    with pytest.raises(TnervError):
        read_video(mkv, **kwargs)


def test_missing_file(tmp_path: Path):
    with pytest.raises(TnervError, match="no such file: .*nothere.mp4"):
        read_video(tmp_path / "nothere.mp4")


def test_text_file_renamed_mp4(tmp_path: Path):
    path = tmp_path / "fake.mp4"
    path.write_text("this is not a video\n")
    with pytest.raises(TnervError, match="fake.mp4 is not a video PyAV can read: "):
        probe(path)


def test_audio_only_file_has_no_video_stream(tmp_path: Path):
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        silence = np.zeros((1, 800), dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(silence, format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(TnervError, match="no video stream"):
        read_video(path)


def test_size_mismatch_for_container(mkv: Path):
    assert probe(mkv, size=(W, H)).num_frames == 8
    with pytest.raises(TnervError, match="size 32x32 was given"):
        probe(mkv, size=(32, 32))


def test_fps_override(mkv: Path):
    assert probe(mkv, fps=50).fps == 50


# --- colour ----------------------------------------------------------------------------------


def test_hd_defaults_to_bt709(tmp_path: Path):
    # Saturated colours, where BT.601 and BT.709 disagree by many levels.
    colours = [(200, 30, 40), (30, 60, 220)]
    frames = flat_frames(colours, h=720, w=1280)
    path = write_clip(tmp_path / "hd.mkv", "matroska", "ffv1", "yuv444p", frames, None, "ITU709")
    assert_colours(read_video(path).frames, colours)
    assert_colours(read_video(path, matrix="bt709").frames, colours)
    wrong = read_video(path, matrix="bt601").frames
    assert np.abs(wrong.astype(int) - frames).max() > 10


def test_default_matrix_rule():
    assert default_matrix(719) == "bt601"
    assert default_matrix(720) == "bt709"
    assert default_matrix(1080) == "bt709"
    assert default_matrix(144) == "bt601"


def test_unknown_matrix_is_user_error(mkv: Path):
    with pytest.raises(TnervError, match="unknown colour matrix 'bt2020'"):
        read_video(mkv, matrix="bt2020")


def _bt601_by_hand(y: float, u: float, v: float) -> tuple[float, float, float]:
    """BT.601 limited range with the textbook coefficients."""
    return (
        1.164 * (y - 16) + 1.596 * (v - 128),
        1.164 * (y - 16) - 0.392 * (u - 128) - 0.813 * (v - 128),
        1.164 * (y - 16) + 2.017 * (u - 128),
    )


def _bt709_by_hand(y: float, u: float, v: float) -> tuple[float, float, float]:
    """BT.709 limited range with the textbook coefficients."""
    return (
        1.164 * (y - 16) + 1.793 * (v - 128),
        1.164 * (y - 16) - 0.213 * (u - 128) - 0.533 * (v - 128),
        1.164 * (y - 16) + 2.112 * (u - 128),
    )


def test_bt601_and_bt709_differ_on_pure_chroma():
    y = np.full((4, 4), 126, np.uint8)
    u = np.full((2, 2), 128, np.uint8)
    v = np.full((2, 2), 180, np.uint8)
    rgb601 = yuv420_to_rgb(y, u, v, "bt601")[0, 0].astype(int)
    rgb709 = yuv420_to_rgb(y, u, v, "bt709")[0, 0].astype(int)
    assert np.abs(rgb601 - np.round(_bt601_by_hand(126, 128, 180))).max() <= 1
    assert np.abs(rgb709 - np.round(_bt709_by_hand(126, 128, 180))).max() <= 1
    assert np.abs(rgb601 - rgb709).max() >= 10


def test_rgb_yuv_round_trip_on_smooth_image():
    yy, xx = np.mgrid[0:64, 0:96].astype(np.float32)
    rgb = np.stack([40 + 2 * xx, 30 + 3 * yy, 200 - xx - yy], axis=-1)
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    for matrix in ("bt601", "bt709"):
        y, u, v = rgb_to_yuv420(rgb, matrix)
        assert y.shape == (64, 96) and u.shape == v.shape == (32, 48)
        back = yuv420_to_rgb(y, u, v, matrix)
        assert np.abs(back.astype(int) - rgb).max() <= 3


def test_round_trip_odd_size_and_full_range():
    rgb = np.full((5, 7, 3), (120, 60, 30), np.uint8)
    y, u, v = rgb_to_yuv420(rgb, "bt709", full_range=True)
    assert u.shape == (3, 4)
    assert np.abs(yuv420_to_rgb(y, u, v, "bt709", full_range=True).astype(int) - rgb).max() <= 1


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p", "yuvj420p", "nv12"])
def test_swscale_path_matches_reference(matrix: str, pix_fmt: str):
    # frame_to_rgb converts even-sized frames with swscale; it must agree with yuv_to_rgb.
    rng = np.random.default_rng(0)
    y = rng.integers(16, 236, (32, 48), dtype=np.uint8)
    sub = 1 if pix_fmt == "yuv444p" else 2
    u, v = (rng.integers(16, 241, (32 // sub, 48 // sub), dtype=np.uint8) for _ in range(2))
    reference = yuv_to_rgb(y, u, v, matrix, full_range=pix_fmt.startswith("yuvj"))
    planar = "yuv444p" if sub == 1 else pix_fmt.replace("nv12", "yuv420p")
    frame = av.VideoFrame(48, 32, planar)
    for plane, data in zip(frame.planes, (y, u, v)):
        view = np.frombuffer(plane, np.uint8, count=plane.height * plane.line_size)
        view.reshape(plane.height, plane.line_size)[:, : plane.width] = data
    if pix_fmt == "nv12":
        frame = frame.reformat(format="nv12")
    got = frame_to_rgb(frame, matrix).astype(int)
    assert np.abs(got - reference).max() <= 1
    assert np.abs(got - reference).mean() < 0.05


# --- raw .yuv ----------------------------------------------------------------------------------


def write_i420(path: Path, w: int, h: int, ys, u: int = 90, v: int = 170) -> Path:
    """Raw I420 file with flat planes: frame i has luma ys[i] and chroma (u, v)."""
    cw, ch = (w + 1) // 2, (h + 1) // 2
    with open(path, "wb") as f:
        for y in ys:
            f.write(bytes([y]) * (w * h) + bytes([u]) * (cw * ch) + bytes([v]) * (cw * ch))
    return path


@pytest.mark.parametrize("w,h", [(8, 6), (7, 5)])  # even sizes go through swscale, odd through numpy
def test_raw_yuv_pixels_match_the_matrix(tmp_path: Path, w: int, h: int):
    path = write_i420(tmp_path / "clip.yuv", w, h, ys=[60, 100, 140])
    info = probe(path, size=(w, h), fps=50)
    assert (info.num_frames, info.width, info.height, info.fps) == (3, w, h, 50)
    assert (info.codec, info.pix_fmt) == ("rawvideo", "yuv420p")
    video = read_video(path, size=(w, h))
    for frame, y in zip(video.frames, [60, 100, 140]):
        expected = np.clip(np.round(_bt601_by_hand(y, 90, 170)), 0, 255)
        assert np.abs(frame.astype(int) - expected).max() <= 1
    hd = read_video(path, size=(w, h), matrix="bt709").frames[1]
    assert np.abs(hd.astype(int) - np.round(_bt709_by_hand(100, 90, 170))).max() <= 1


def test_raw_yuv_seeks_to_selected_frames(tmp_path: Path):
    path = write_i420(tmp_path / "clip.yuv", 8, 6, ys=[20, 60, 100, 140, 180], u=128, v=128)
    video = read_video(path, size=(8, 6), start=1, count=2, step=2)
    assert video.frame_indices == [1, 3]
    grey = [round(1.164 * (y - 16)) for y in (60, 140)]
    assert [int(f[0, 0, 0]) for f in video.frames] == grey


@pytest.mark.parametrize("codec, options", [
    ("libx264", {"x264-params": "bframes=3:keyint=6:min-keyint=6:scenecut=0"}),  # B-frames: decode order differs
    ("libx265", {"x265-params": "bframes=4:keyint=6:min-keyint=6:open-gop=1:log-level=error"}),  # open GOPs
])
def test_an_mp4_read_from_any_frame_gives_the_frames_of_a_read_from_the_start(tmp_path, monkeypatch, codec, options):
    frames = read_video(sample("bikes"), count=20, size=None).frames[:, :64, :96]
    path = write_clip(tmp_path / "clip.mp4", "mp4", codec, "yuv420p", np.ascontiguousarray(frames), options)
    whole = read_video(path).frames
    sought, lost = [], []
    decode = io._decode_into

    def counted(container, indices, out, convert, index_of):
        try:
            return decode(container, indices, out, convert, index_of)
        except io._LostFrame:
            lost.append(indices[0])
            raise
        finally:
            if index_of is not None:
                sought.append(indices[0])

    monkeypatch.setattr(io, "_decode_into", counted)
    for start in range(1, 19):
        assert np.array_equal(read_video(path, start=start, count=2).frames, whole[start:start + 2]), start
        assert np.array_equal(read_video(path, start=start, step=3).frames, whole[start::3]), start
    assert len(sought) > len(lost)  # most reads seek; the others decode from the first frame
    if codec == "libx265":
        assert lost  # a seek that lands after the first selected frame (an open GOP) falls back


def test_raw_yuv_errors(tmp_path: Path):
    path = write_i420(tmp_path / "clip.yuv", 8, 6, ys=[20, 60])
    with pytest.raises(TnervError, match="size"):
        probe(path)
    with pytest.raises(TnervError, match="not a whole number of 10x6 I420 frames"):
        probe(path, size=(10, 6))
    named = write_i420(tmp_path / "Beauty_8x6_120fps_420_8bit_YUV.yuv", 8, 6, ys=[20, 60, 100])
    assert (probe(named).width, probe(named).height, probe(named).num_frames) == (8, 6, 3)
    empty = tmp_path / "empty.yuv"
    empty.write_bytes(b"")
    with pytest.raises(TnervError, match="has no frames"):
        read_video(empty, size=(8, 6))


# --- image folders -----------------------------------------------------------------------------


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write one PNG with PyAV's encoder."""
    write_frames(rgb[None], path.parent / "tmp_one")
    (path.parent / "tmp_one" / "frame_00001.png").rename(path)
    (path.parent / "tmp_one").rmdir()


def test_image_folder_natural_order(tmp_path: Path):
    folder = tmp_path / "frames"
    folder.mkdir()
    names = ["f10.png", "f1.png", "f2.png"]  # lexical order would put f10 before f2
    colours = {"f1.png": COLOURS[1], "f2.png": COLOURS[2], "f10.png": COLOURS[3]}
    for name in names:
        write_png(folder / name, flat_frames([colours[name]])[0])
    (folder / "notes.txt").write_text("ignored")
    info = probe(folder)
    assert (info.num_frames, info.height, info.width) == (3, H, W)
    assert (info.codec, info.pix_fmt) == ("png", "rgb24")
    video = read_video(folder)
    assert_colours(video.frames, [COLOURS[1], COLOURS[2], COLOURS[3]], tol=0)
    assert_colours(read_video(folder, start=2).frames, [COLOURS[3]], tol=0)


def test_natural_key():
    names = ["frame10.png", "frame2.png", "Frame1.png", "frame_b.png"]
    assert sorted(names, key=natural_key) == ["Frame1.png", "frame2.png", "frame10.png", "frame_b.png"]


@pytest.mark.parametrize("h,w", [(H, W), (720, 1280)])  # JPEG is BT.601 (JFIF) even at HD sizes
def test_jpeg_folder(tmp_path: Path, h: int, w: int):
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuvj420p"
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"qscale": "2"}
    colour = (200, 50, 30)
    frame = av.VideoFrame.from_ndarray(flat_frames([colour], h, w)[0], format="rgb24")
    frame = frame.reformat(format="yuvj420p")  # swscale's default: BT.601
    data = b"".join(bytes(p) for p in list(ctx.encode(frame)) + list(ctx.encode(None)))
    (tmp_path / "a.jpg").write_bytes(data)
    info = probe(tmp_path)
    assert (info.codec, info.pix_fmt) == ("jpeg", "yuvj420p")
    assert_colours(read_video(tmp_path).frames, [colour], tol=3)


def test_folder_without_images(tmp_path: Path):
    (tmp_path / "readme.txt").write_text("no frames here")
    with pytest.raises(TnervError, match="holds no PNG or JPEG frames"):
        probe(tmp_path)


def test_folder_with_mixed_sizes(tmp_path: Path):
    write_png(tmp_path / "a1.png", flat_frames([COLOURS[0]])[0])
    write_png(tmp_path / "a2.png", flat_frames([COLOURS[0]], h=32, w=32)[0])
    with pytest.raises(TnervError, match="a2.png is 32x32 but a1.png is 64x48"):
        read_video(tmp_path)


# --- samples -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,size,frames,fps", [("bikes", (640, 272), 250, 25.0), ("carphone", (176, 144), 120, 29.97)]
)
def test_real_samples(name: str, size, frames: int, fps: float):
    path = sample(name)
    assert path.name == SAMPLES[name] and path.is_file()
    for source in (path, name):  # a sample name works where no such file exists
        info = probe(source)
        assert ((info.width, info.height), info.num_frames) == (size, frames)
        assert info.fps == pytest.approx(fps, abs=0.01)
    video = read_video(name, start=10, count=3)
    assert video.frames.shape == (3, size[1], size[0], 3)
    assert video.frame_indices == [10, 11, 12]
    assert 20 < video.frames.mean() < 235  # real content, not a blank frame


def test_unknown_sample():
    with pytest.raises(TnervError, match="bikes, carphone"):
        sample("foreman")


# --- writers ---------------------------------------------------------------------------------------


def test_write_frames_round_trip_is_lossless(tmp_path: Path):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    paths = write_frames(frames, tmp_path / "out")
    assert [p.name for p in paths] == ["frame_00001.png", "frame_00002.png", "frame_00003.png"]
    assert np.array_equal(read_video(tmp_path / "out").frames, frames)
    # A shorter rewrite removes the earlier, now stale, frame_00003.png and leaves no temp files.
    write_frames(frames[:2][::-1].copy(), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["frame_00001.png", "frame_00002.png"]
    assert np.array_equal(read_video(tmp_path / "out").frames, frames[:2][::-1])


def test_write_mp4(tmp_path: Path):
    frames = flat_frames()
    path = write_mp4(frames, tmp_path / "clip.mp4", fps=30000 / 1001, crf=0)
    info = probe(path)
    assert (info.num_frames, info.width, info.height) == (8, W, H)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    assert info.fps == pytest.approx(29.97, abs=0.01)
    assert_colours(read_video(path).frames, COLOURS, tol=2)
    # Overwriting replaces the file whole and leaves nothing else behind.
    write_mp4(frames[:3], path, fps=25)
    assert probe(path).num_frames == 3
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_write_mp4_rejects_odd_size(tmp_path: Path):
    with pytest.raises(TnervError, match="even width and height, got 63x48"):
        write_mp4(np.zeros((2, 48, 63, 3), np.uint8), tmp_path / "odd.mp4", fps=25)
    assert not list(tmp_path.iterdir())


# --- transforms --------------------------------------------------------------------------------------


def test_resize_and_crop_keeps_centre():
    # Thirds red | green | blue; a square crop of the 2:1 frame keeps the green centre.
    frame = np.zeros((1, 40, 120, 3), np.uint8)
    frame[:, :, :40, 0] = 255
    frame[:, :, 40:80, 1] = 255
    frame[:, :, 80:, 2] = 255
    out = resize_and_crop(frame, 20, 20)
    assert out.shape == (1, 20, 20, 3) and out.dtype == np.uint8
    assert (out[0, :, 2:-2] == (0, 255, 0)).all()


def test_resize_and_crop_scales_flat_frames_exactly():
    frames = flat_frames()[:2]
    for h, w in [(24, 32), (96, 128), (30, 30), (48, 64)]:
        out = resize_and_crop(frames, h, w)
        assert out.shape == (2, h, w, 3)
        assert_colours(out, COLOURS[:2], tol=0)


def test_to_tensor_and_back():
    frames = np.random.default_rng(2).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    x = to_tensor(frames)
    assert x.shape == (2, 3, 5, 7) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    assert x[1, 2, 3, 4].item() == pytest.approx(frames[1, 3, 4, 2] / 255.0)
    assert np.array_equal(to_uint8(x), frames)
    clamped = to_uint8(torch.tensor([-0.5, 0.5, 1.5]).view(1, 3, 1, 1))
    assert clamped.tolist() == [[[[0, 128, 255]]]]
