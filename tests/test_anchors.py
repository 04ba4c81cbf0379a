"""Traditional-codec anchors: real x265/x264/SVT-AV1 encodes of short, small sample clips."""

import io
import json

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from tnerv.anchors import (
    ANCHOR_CODECS, DEFAULT_CRFS, AnchorResult, anchor_at_psnr, anchor_curve, anchor_label, anchor_outputs, bpp_at_psnr,
    check_crfs, encode_anchor,
)
from tnerv.bench.display import display_of
from tnerv.cli import build_parser, main
from tnerv.errors import TnervError
from tnerv.metrics import evaluate_frames
from tnerv.runs import VideoSpec, load_frames
from tnerv.video import sample

RAW_FORMAT = {"x265": "hevc", "x264": "h264", "av1": "obu"}


def _load(count: int, resize: tuple[int, int] | None = None) -> np.ndarray:
    frames = load_frames(VideoSpec(path=str(sample("carphone")), count=count, resize=resize))
    return frames.permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def carphone8() -> np.ndarray:
    """8 frames of carphone, 176x144, uint8 (N, H, W, 3)."""
    return _load(8)


def _annexb_nal_types(data: bytes, codec: str) -> list[int]:
    """NAL unit types of an Annex-B byte stream, in order."""
    starts = [i + 3 for i in range(len(data) - 3) if data[i : i + 3] == b"\x00\x00\x01"]
    return [(data[s] >> 1) & 0x3F if codec == "x265" else data[s] & 0x1F for s in starts]


def _obu_types(data: bytes) -> list[int]:
    """OBU types of a low-overhead AV1 stream; fails unless the OBUs tile the bytes exactly."""
    types, pos = [], 0
    while pos < len(data):
        header = data[pos]
        assert header & 0x02, "every OBU in the low-overhead format carries its size"
        pos += 2 if header & 0x04 else 1  # extension byte
        size, shift = 0, 0
        while True:  # leb128
            byte = data[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        types.append((header >> 3) & 0x0F)
        pos += size
    assert pos == len(data)
    return types


def test_higher_crf_gives_fewer_bytes_and_lower_psnr(carphone8):
    low, high = anchor_curve(carphone8, "x265", crfs=(22, 37))
    assert (low.crf, high.crf) == (22, 37)
    assert high.num_bytes < 0.6 * low.num_bytes
    assert high.psnr < low.psnr - 4 and high.ms_ssim < low.ms_ssim
    assert 33 < low.psnr < 45 and 24 < high.psnr < 33  # sane for carphone
    for r in (low, high):
        assert (r.preset, r.pix_fmt, r.matrix) == ("veryslow", "yuv420p", "bt601")
        assert (r.num_frames, r.height, r.width) == (8, 144, 176)
        assert r.bpp == r.num_bytes * 8 / (8 * 144 * 176)
        assert r.encode_seconds > 0 and r.decode_fps > 0 and r.ms_ssim_variant.startswith("ms-ssim(")
        assert json.loads(json.dumps(r.to_dict()))["num_bytes"] == r.num_bytes
    assert DEFAULT_CRFS == (22, 27, 32, 37)


def test_the_stream_file_is_the_raw_stream_and_decodes_to_every_frame(carphone8, tmp_path):
    path = tmp_path / "clip.hevc"
    result, decoded = encode_anchor(carphone8, "x265", 30, stream_path=path)
    data = path.read_bytes()
    assert result.num_bytes == len(data)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    # Annex-B from the first byte (start code, then the VPS), no container box anywhere.
    assert data.startswith(b"\x00\x00\x00\x01") and b"ftyp" not in data
    types = _annexb_nal_types(data, "x265")
    assert types[0] == 32 and sum(t < 32 for t in types) == 8  # one slice per frame
    assert decoded.shape == carphone8.shape and decoded.dtype == np.uint8
    # The decoded frames returned are the stream's frames and the reported quality is theirs.
    with av.open(str(path), format="hevc") as container:
        assert sum(1 for _ in container.decode(video=0)) == 8
    assert evaluate_frames(decoded, carphone8).psnr == pytest.approx(result.psnr)
    assert not np.array_equal(decoded, carphone8)


def test_yuv444p_beats_yuv420p_at_high_quality_on_full_resolution_chroma():
    # Downscaling a 4:2:0 source by 2 gives frames whose chroma has full-resolution detail,
    # which 4:2:0 must throw away; at a low CRF that loss dominates the error.
    frames = _load(4, resize=(72, 88))
    r420, _ = encode_anchor(frames, "x265", 10, pix_fmt="yuv420p")
    r444, _ = encode_anchor(frames, "x265", 10, pix_fmt="yuv444p")
    assert r444.pix_fmt == "yuv444p"
    assert r444.psnr > r420.psnr + 1.5


@pytest.mark.parametrize("codec, crf", [("x265", 32), ("x264", 27), ("av1", 40)])
def test_each_codec_gives_a_low_delay_raw_stream(carphone8, codec, crf, tmp_path):
    frames = carphone8[:4]
    path = tmp_path / "clip"
    result, decoded = encode_anchor(frames, codec, crf, stream_path=path)
    data = path.read_bytes()
    assert result.codec == codec and result.num_bytes == len(data)
    assert result.preset == ("8" if codec == "av1" else "veryslow")
    assert decoded.shape == frames.shape and 26 < result.psnr < 45 and 0 < result.bpp < 2
    if codec == "av1":
        types = _obu_types(data)  # bare OBUs: no IVF header, no per-frame framing
        assert types[0] == 2 and types.count(2) == 4  # a temporal delimiter per frame
        # Low delay: one shown frame OBU per temporal unit; reordering would add hidden frames
        # and frame-header OBUs that show them later.
        assert types.count(6) == 4 and 3 not in types
    else:
        assert data.startswith(b"\x00\x00\x00\x01")
    with av.open(io.BytesIO(data), format=RAW_FORMAT[codec]) as container:
        kinds = [PictureType(f.pict_type) for f in container.decode(video=0)]
    assert kinds[0] == PictureType.I and set(kinds[1:]) == {PictureType.P}  # no B-frames
    # What the benches' tables and figures call this anchor names the preset and structure measured here.
    assert anchor_label(codec) == {"x265": "x265 (veryslow, no B-frames)", "x264": "x264 (veryslow, no B-frames)",
                                   "av1": "SVT-AV1 (preset 8, low delay)"}[codec]
    assert display_of(codec).label == anchor_label(codec)


def test_the_matrix_is_explicit_and_tagged(tmp_path):
    # Flat, saturated frames: a wrong YUV -> RGB matrix shifts them by many levels (about 25 dB).
    frames = np.zeros((3, 32, 32, 3), np.uint8)
    frames[0], frames[1], frames[2] = (230, 20, 20), (20, 230, 20), (20, 20, 230)
    for matrix, tag in (("bt709", 1), ("bt601", 5)):  # tag: AVColorSpace code in the stream's VUI
        path = tmp_path / f"{matrix}.h264"
        result, _ = encode_anchor(frames, "x264", 20, matrix=matrix.upper(), stream_path=path)
        assert result.matrix == matrix and result.psnr > 45  # decoded with the matrix it was encoded with
        with av.open(str(path), format="h264") as container:
            assert next(container.decode(video=0)).colorspace == tag
    # Without a matrix, small frames get bt601 (bt709 from 720p up).
    assert encode_anchor(frames, "x264", 20)[0].matrix == "bt601"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"frames": "odd"}, "even width and height"),
        ({"codec": "vp9"}, "unknown anchor codec 'vp9'"),
        ({"pix_fmt": "yuv422p"}, "unknown pixel format"),
        ({"codec": "av1", "pix_fmt": "yuv444p"}, "cannot encode yuv444p"),
        ({"crf": 52}, "crf must be an integer in 0..51"),
        ({"codec": "av1", "crf": 0}, "crf must be an integer in 1..63"),
        ({"crf": 27.5}, "crf must be an integer"),
        ({"frames": "empty"}, "no frames"),
        ({"frames": "float"}, "uint8 RGB"),
        ({"matrix": "bt2020"}, "unknown colour matrix"),
        ({"preset": "warp-speed"}, "refused the settings"),
    ],
)
def test_bad_input_raises(carphone8, change, message):
    frames = {
        "odd": carphone8[:1, :143],
        "empty": carphone8[:0],
        "float": carphone8[:1].astype(np.float32),
    }.get(change.pop("frames", None), carphone8[:1])
    with pytest.raises(TnervError, match=message):
        encode_anchor(frames, **change)


def test_crfs_are_checked_all_at_once_and_encoded_once():
    assert check_crfs("av1", [30, 22, 30]) == [30, 22]
    with pytest.raises(TnervError, match=r"^av1 --crf must be in 1\.\.63, got 0$"):
        check_crfs("av1", [22, 0, 70])


def test_anchor_outputs_are_named_per_crf_and_never_replaced(tmp_path):
    outputs = anchor_outputs(tmp_path, "clips/carphone.y4m", "x265", "yuv444p", [22, 37])
    assert outputs.streams == {c: tmp_path / f"carphone-x265-444-crf{c}.hevc" for c in (22, 37)}
    assert outputs.results == tmp_path / "anchor.json" and outputs.folder == tmp_path
    av1 = anchor_outputs(tmp_path, "carphone", "av1", "yuv420p", [30])
    assert av1.streams == {30: tmp_path / "carphone-av1-crf30.obu"}
    outputs.streams[37].touch()
    with pytest.raises(TnervError, match="carphone-x265-444-crf37.hevc exists"):
        anchor_outputs(tmp_path, "carphone", "x265", "yuv444p", [22, 37])
    outputs.streams[37].unlink()
    outputs.results.touch()
    with pytest.raises(TnervError, match="anchor.json exists"):
        anchor_outputs(tmp_path, "carphone", "x264", "yuv420p", [22])


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_streams_and_results(capsys, tmp_path):
    out = tmp_path / "anchors"
    code, stdout, _ = run_cli(capsys, "anchor", "x265", "carphone", "--frames", "4", "--crf", "30", "37",
                              "--out", str(out), "--json")
    assert code == 0
    doc = json.loads(stdout)
    assert doc == json.loads((out / "anchor.json").read_text())
    results = doc["results"]
    assert [r["crf"] for r in results] == [30, 37] and results[0]["num_bytes"] > results[1]["num_bytes"]
    for r in results:
        assert (out / f"carphone-x265-crf{r['crf']}.hevc").stat().st_size == r["num_bytes"]
    # A second run into the same folder refuses before encoding anything.
    code, _, err = run_cli(capsys, "anchor", "x265", "carphone", "--frames", "4", "--crf", "30", "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and "exists" in err and "Traceback" not in err


def test_cli_checks_every_crf_before_writing_anything(capsys, tmp_path):
    out = tmp_path / "anchors"
    args = ["x264", "carphone", "--frames", "2", "--crf", "30", "52", "--out", str(out)]
    code, _, err = run_cli(capsys, "anchor", *args)
    assert code == 2 and "x264 --crf must be in 0..51, got 52" in err and not out.exists()


def test_cli_prints_a_table(capsys):
    code, stdout, _ = run_cli(capsys, "anchor", "x264", "carphone", "--frames", "2", "--crf", "30", "--resize", "72x88")
    assert code == 0
    assert "yuv420p, bt601 matrix: 2 frames of 88x72" in stdout and "ms-ssim(" in stdout
    row = next(line.split() for line in stdout.splitlines() if line.split()[:1] == ["30"])
    assert len(row) == 7 and float(row[3]) > 25  # crf, bytes, bpp, PSNR, MS-SSIM, encode s, decode fps


@pytest.mark.parametrize(
    "args, message",
    [
        (["--crf", "30", "60"], "--crf must be in 0..51, got 60"),
        (["--pix-fmt", "yuv444p", "--crf", "40"], "cannot encode yuv444p"),
        (["--frames", "0"], "argument --frames: expected a whole number at least 1"),
    ],
)
def test_cli_bad_arguments_are_one_line_and_exit_2(capsys, args, message):
    codec = "av1" if "yuv444p" in args else "x265"
    code, _, err = run_cli(capsys, "anchor", codec, "carphone", *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("tnerv: error: ") and message in lines[0], err


def test_cli_codec_choices_match_the_library():
    anchor = build_parser()._subparsers._group_actions[0].choices["anchor"]
    codec = next(a for a in anchor._actions if a.dest == "codec")
    assert sorted(codec.choices) == sorted(ANCHOR_CODECS)
    assert tuple(next(a for a in anchor._actions if a.dest == "crf").default) == DEFAULT_CRFS


def _point(crf: int, bpp: float, psnr: float) -> AnchorResult:
    return AnchorResult("x265", crf, "veryslow", "yuv420p", "bt601", 8, 32, 64, 0, bpp, psnr, 0.9, "", 1.0, 1.0)


def test_the_anchor_bpp_at_a_psnr_is_log_interpolated_on_its_curve():
    curve = [_point(37, 0.01, 28.0), _point(22, 0.16, 36.0), _point(27, 0.04, 32.0)]  # in any order
    assert bpp_at_psnr(curve, 30.0) == pytest.approx(0.02)  # the geometric mean of 0.01 and 0.04, not 0.025
    assert bpp_at_psnr(curve, 36.0) == pytest.approx(0.16) and bpp_at_psnr(curve, 28.0) == pytest.approx(0.01)
    assert bpp_at_psnr(curve, 27.9) is None and bpp_at_psnr(curve, 36.1) is None  # no extrapolation
    assert bpp_at_psnr(curve[:1], 28.0) == pytest.approx(0.01) and bpp_at_psnr([], 30.0) is None


def test_the_anchor_at_a_psnr_is_the_largest_crf_that_reaches_it(carphone8):
    target = encode_anchor(carphone8, "x265", 30)[0].psnr - 0.01  # CRF 30 reaches it; larger ones are expected not to
    found = anchor_at_psnr(carphone8, target, "x265")
    assert found is not None and found.psnr >= target
    above = encode_anchor(carphone8, "x265", found.crf + 1)[0]
    assert above.psnr < target  # the next CRF falls short: no smaller stream reaches the target
    assert anchor_at_psnr(carphone8, 99.0, "x265") is None
