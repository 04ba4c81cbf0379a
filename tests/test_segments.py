"""Videos coded in segments (issue 25): one model per segment, one file, any frame range decoded from the
segments that hold it, frames read a segment at a time, an interrupted encode resumed at its segment."""

import json
import re

import pytest
import torch

from tnerv import compress, runs
from tnerv.cli import main
from tnerv.codec.bitstream import SEGMENT, BitstreamError, frame_sections, read_file, unpack
from tnerv.codec.segments import pack_segments, segment_table
from tnerv.compress import encode_video
from tnerv.decode import decode_frames, inspect_file
from tnerv.errors import TnervError
from tnerv.runs import VideoSpec

CLIP = VideoSpec(path="bikes", count=10, resize=(32, 64))  # segments of 4: frames 0:4, 4:8, 8:10
TINY = {"stem_dims": [32], "channels": 8}


def _encode(path, **kwargs):
    return encode_video(CLIP, path, preset="nerv-s-cpu", progress=False, model_overrides=TINY,
                        train_overrides={"epochs": 2}, segment_frames=4, **kwargs)


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("segments")
    return _encode(folder / "clip.tnrv"), folder


def test_three_segments_make_one_file_that_decodes_whole_and_across_boundaries(coded):
    result, folder = coded
    path = folder / "clip.tnrv"
    header, sections = read_file(path)
    assert [(s.first, s.end) for s in segment_table(header)] == [(0, 4), (4, 8), (8, 10)]
    assert [s["num_frames"] for s in result.segments] == [4, 4, 2] and result.num_frames == 10
    whole = decode_frames(path, 0, 10)[0]
    assert whole.shape == (10, 3, 32, 64) and torch.isfinite(whole).all()
    for first, end in ((3, 5), (2, 9), (7, 10), (4, 8), (9, 10)):  # across one and two boundaries, and within
        assert torch.equal(decode_frames(path, first, end)[0], whole[first:end]), (first, end)
    for i, (first, end) in enumerate(((0, 4), (4, 8), (8, 10))):  # each segment is its own model's file
        alone = decode_frames(folder / "clip.tnrv.run" / f"segment-{i:03d}.tnrv", 0, end - first)[0]
        assert torch.equal(alone, whole[first:end])
    # The quality reported is over every frame: each segment's, weighted by its frames.
    assert result.psnr == pytest.approx(sum(s["psnr"] * s["num_frames"] for s in result.segments) / 10)
    # The seams: the PSNR of the decoded frames on both sides of each boundary.
    from tnerv.metrics import psnr
    target = runs.load_frames(CLIP).float() / 255
    per_frame = psnr(torch.round(whole * 255) / 255, target).tolist()
    assert [s["frame"] for s in result.seams] == [4, 8]
    for seam in result.seams:
        assert seam["psnr_before"] == pytest.approx(per_frame[seam["frame"] - 1], abs=1e-3)
        assert seam["psnr_after"] == pytest.approx(per_frame[seam["frame"]], abs=1e-3)


def test_inspect_and_decode_name_the_segments(coded, tmp_path, capsys):
    _, folder = coded
    path = folder / "clip.tnrv"
    info = inspect_file(path)
    assert len(info["segments"]) == 3 and sum(s["bytes"] for s in info["segments"]) < info["bytes"]
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 segments" in out and "segment 1: frames 4:8" in out
    assert main(["decode", str(path), "-o", str(tmp_path / "frames"), "--frames", "3:9"]) == 0
    assert len(list((tmp_path / "frames").glob("*.png"))) == 6


def test_frames_are_read_a_segment_at_a_time(tmp_path, monkeypatch):
    read = []
    load = runs.load_frames

    def counting(spec):
        frames = load(spec)
        read.append(len(frames))
        return frames

    monkeypatch.setattr(runs, "load_frames", counting)
    _encode(tmp_path / "clip.tnrv")
    assert max(read) == 4 and 2 in read, read  # never more than a segment's frames at once


def test_an_interrupted_encode_resumes_at_its_segment_and_writes_the_same_file(coded, tmp_path, monkeypatch):
    result, folder = coded
    fitted = []
    fit_run = compress.fit_run

    def interrupted(video, run_dir, **kwargs):
        fitted.append(video.start)
        if fitted == [0, 4]:  # killed during the second segment of the first encode
            raise KeyboardInterrupt
        return fit_run(video, run_dir, **kwargs)

    monkeypatch.setattr(compress, "fit_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _encode(tmp_path / "clip.tnrv")
    assert not (tmp_path / "clip.tnrv").exists()
    with pytest.raises(Exception, match="--resume"):
        _encode(tmp_path / "clip.tnrv")  # a new encode would overwrite the segment done: refused
    fitted.clear()
    resumed = _encode(tmp_path / "clip.tnrv", resume=True)
    assert fitted == [4, 8]  # the first segment is not fitted again
    assert (tmp_path / "clip.tnrv").read_bytes() == (folder / "clip.tnrv").read_bytes()
    assert resumed.psnr == result.psnr


def _segmented(files, change=None):
    data = pack_segments(files)
    if change is None:
        return data
    header, sections = unpack(data)
    header, bodies = change(header, [s.data for s in sections])
    return frame_sections(header, json.dumps(header).encode(), bodies, [SEGMENT] * len(bodies))


def test_a_crafted_segment_list_is_refused_in_one_line(coded, tmp_path):
    _, folder = coded
    files = [(folder / "clip.tnrv.run" / f"segment-{i:03d}.tnrv").read_bytes() for i in range(3)]
    assert _segmented(files) == (folder / "clip.tnrv").read_bytes()

    def gap(header, bodies):
        header["segments"][1]["first"] = 5
        return header, bodies

    def short(header, bodies):
        header["video"]["num_frames"] = 11
        return header, bodies

    def nested(header, bodies):
        return header, [bodies[0], _segmented(files[:2]), bodies[2]]

    def swapped(header, bodies):  # segment 2 holds 2 frames: segment 1's file of 4 does not fit there
        return header, [bodies[0], bodies[2], bodies[1]]

    cases = {gap: "does not start where", short: "hold 10 frames, its video 11", nested: "itself a segmented file",
             swapped: "not of the frames"}
    for change, message in cases.items():
        bad = tmp_path / f"{change.__name__}.tnrv"
        bad.write_bytes(_segmented(files, change))
        for refused in (lambda: decode_frames(bad, 0, 10), lambda: inspect_file(bad)):
            with pytest.raises(BitstreamError, match=message):
                refused()
    def garbled(header, bodies):  # segment 2's own file is no file (the outer checksums recomputed)
        return header, [bodies[0], bodies[1], b"not a tnerv file"]

    bad = tmp_path / "garbled.tnrv"
    bad.write_bytes(_segmented(files, garbled))
    assert torch.equal(decode_frames(bad, 0, 8)[0], decode_frames(folder / "clip.tnrv", 0, 8)[0])  # not read
    for refused in (lambda: decode_frames(bad, 7, 9), lambda: inspect_file(bad)):
        with pytest.raises(BitstreamError, match="segment 2 is not a tnerv bitstream"):
            refused()
    header, sections = unpack(files[0])
    listing = json.dumps({**header, "segments": [{"name": "segment 0"}]}).encode()  # a one-model file, and segments
    with pytest.raises(BitstreamError, match="lists segments too"):
        unpack(frame_sections(header, listing, [s.to_bytes() for s in sections], [s.kind for s in sections]))


def test_a_video_too_long_for_the_machine_is_refused_before_any_work_naming_a_length_that_fits(
        tmp_path, monkeypatch, capsys):
    import tnerv.host as host

    per_frame = 32 * 64 * 3 * host.FRAME_BYTES_PER_VALUE
    monkeypatch.setattr(host, "FRAMES_SHARE", 3.5 * per_frame / host.machine_memory())  # 3 frames fit here
    code = main(["encode", "bikes", "--frames", "10", "--resize", "32x64", "-o", str(tmp_path / "clip.tnrv"),
                 "--epochs", "1", "--segment-frames", "4"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "4 frames of 64x32" in err and "--segment-frames 3 fits" in err, err
    assert not any(tmp_path.iterdir())  # nothing read, nothing written
    host.check_frames_fit(3, 32, 64)  # the length it names does fit
    with pytest.raises(Exception, match="--segment-frames 3 fits"):
        host.check_frames_fit(4, 32, 64)
    # Without --segment-frames, segments are as long as fit here (3 frames), not the default's 600.
    result = encode_video(CLIP, tmp_path / "fits.tnrv", preset="nerv-s-cpu", progress=False, model_overrides=TINY,
                          train_overrides={"epochs": 1}, segment_frames=None)
    assert [s["num_frames"] for s in result.segments] == [3, 3, 3, 1]


def test_two_workers_and_a_join_write_the_file_of_one_process(coded, tmp_path, capsys):
    _, folder = coded
    out = tmp_path / "clip.tnrv"
    args = ["encode", "bikes", "--frames", "10", "--resize", "32x64", "--preset", "nerv-s-cpu", "--set",
            "stem_dims=[32]", "--set", "channels=8", "--epochs", "2", "--segment-frames", "4", "-o", str(out), "--quiet"]
    assert main([*args, "--worker", "0/2"]) == 0  # segments 0 and 2
    err = capsys.readouterr().err
    assert "segments 1 of 3 are not written yet" in err and not out.exists()
    assert main([*args, "--join"]) == 2 and "cannot join: segments 1 of 3" in capsys.readouterr().err
    assert not out.exists()  # a join with a segment missing writes nothing
    assert main([*args, "--worker", "1/2"]) == 0  # the last worker writes the file
    assert out.read_bytes() == (folder / "clip.tnrv").read_bytes()
    out.unlink()
    assert main([*args, "--join"]) == 0 and out.read_bytes() == (folder / "clip.tnrv").read_bytes()


def test_a_segmented_encode_shows_one_bar_over_the_whole_video(tmp_path, capsys):
    encode_video(CLIP, tmp_path / "clip.tnrv", preset="nerv-s-cpu", model_overrides=TINY,
                 train_overrides={"epochs": 2}, segment_frames=4)
    err = capsys.readouterr().err
    shares = [int(share) for share in re.findall(r"video: +(\d+)%", err)]
    assert shares[-1] == 100 and shares == sorted(shares)
    assert "segment=3/3" in err and "segment 3 of 3: frames 8.. (2)" in err
    assert not re.search(r"\d+/\d+ \[.*step", err)  # no bar of a segment's own steps


def test_a_warm_start_begins_each_segment_from_the_one_before(coded, tmp_path, capsys):
    _, folder = coded
    warm = _encode(tmp_path / "warm.tnrv", warm_start=True)
    records = [json.loads((tmp_path / "warm.tnrv.run" / f"segment-{i:03d}" / "run.json").read_text()) for i in range(3)]
    assert "started_from" not in records[0]
    for i in (1, 2):  # NeRV has no per-frame parameter: all of them carry over, to the shorter last segment too
        assert records[i]["started_from"]["run"].endswith(f"segment-{i - 1:03d}")
        assert records[i]["started_from"]["parameters"] == len(list(runs.load_run(tmp_path / "warm.tnrv.run" / "segment-000")[0].parameters()))
    assert (tmp_path / "warm.tnrv").read_bytes() != (folder / "clip.tnrv").read_bytes() and warm.num_frames == 10
    args = ["encode", "bikes", "--frames", "10", "--resize", "32x64", "--segment-frames", "4", "-o",
            str(tmp_path / "w.tnrv"), "--warm-start"]
    capsys.readouterr()
    assert main([*args, "--worker", "0/2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tnerv: error: --warm-start") and "\n" not in err and not (tmp_path / "w.tnrv").exists()


def test_a_warm_start_from_a_run_without_a_usable_checkpoint_is_refused_in_one_line(coded, tmp_path):
    net = runs.load_run(coded[1] / "clip.tnrv.run" / "segment-000")[0]
    with pytest.raises(TnervError, match="has no checkpoint yet"):
        runs.warm_start(net, tmp_path)
    torch.save({"epoch": 3}, tmp_path / "checkpoint.pt")
    with pytest.raises(TnervError, match="holds no model"):
        runs.warm_start(net, tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TnervError, match="cannot read the checkpoint"):
        runs.warm_start(net, tmp_path)
