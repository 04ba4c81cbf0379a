"""The command line: results on good input, one clean error line on bad input."""

import json
import subprocess
import sys

import pytest

from tnerv.cli import main
from tnerv.video import sample

TINY_FIT = ["--preset", "nerv-s-cpu", "--frames", "4", "--resize", "32x64", "--epochs", "2", "--quiet",
            "--set", "stem_dims=[32]", "--set", "channels=8"]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, pattern: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tnerv: error: "), err
    assert pattern in lines[0], lines[0]


def test_info_reports_the_sample(capsys):
    code, out, _ = run_cli(capsys, "info", str(sample("bikes")), "--json")
    info = json.loads(out)
    assert code == 0 and (info["num_frames"], info["width"], info["height"]) == (250, 640, 272)
    assert info["codec"] == "h264"


def test_models_json_lists_nerv_720p_at_12_5m(capsys):
    code, out, _ = run_cli(capsys, "models", "--json")
    rows = {r["preset"]: r for r in json.loads(out)}
    assert code == 0
    assert abs(rows["nerv-12.5m-720p"]["parameters"]["transmitted"] / 12.5e6 - 1) < 0.01


def test_fit_then_eval(capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, out, _ = run_cli(capsys, "fit", str(sample("bikes")), *TINY_FIT, "--out", str(out_dir), "--json")
    fitted = json.loads(out)
    assert code == 0 and fitted["epochs"] == 2
    for name in ("run.json", "checkpoint.pt", "metrics.jsonl", "result.json"):
        assert (out_dir / name).exists()
    code, out, _ = run_cli(capsys, "eval", str(out_dir), "--frames-out", str(tmp_path / "frames"), "--json")
    evaluated = json.loads(out)
    assert code == 0 and evaluated["psnr"] == pytest.approx(fitted["psnr"], abs=1e-4)
    assert len(list((tmp_path / "frames").glob("*.png"))) == 4
    code, _, err = run_cli(capsys, "eval", str(out_dir), "--frames-out", str(tmp_path / "frames"))
    assert_one_line_error(code, err, "is not empty")


def test_a_run_directory_is_never_silently_replaced(capsys, tmp_path):
    out_dir = str(tmp_path / "run")
    assert run_cli(capsys, "fit", str(sample("bikes")), *TINY_FIT, "--out", out_dir)[0] == 0
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    code, _, err = run_cli(capsys, "fit", str(sample("bikes")), *TINY_FIT, "--out", out_dir)
    assert_one_line_error(code, err, "already holds a run")
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before
    assert run_cli(capsys, "fit", str(sample("bikes")), *TINY_FIT, "--out", out_dir, "--overwrite")[0] == 0
    # A finished run resumed has nothing left to do and reports the same result.
    assert run_cli(capsys, "fit", str(sample("bikes")), "--out", out_dir, "--resume", "--quiet")[0] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "no-such-video.mp4"], "no such file"),
        (["fit", "no-such-video.mp4", "--model", "nerv", "--out", "OUT"], "no such file"),
        (["fit", "BIKES", "--model", "nerf", "--out", "OUT"], "unknown model 'nerf'"),
        (["fit", "BIKES", "--preset", "nerv-1m", "--out", "OUT"], "unknown preset 'nerv-1m'"),
        (["fit", "BIKES", *TINY_FIT, "--set", "strides=[5,2,2,2,2]", "--out", "OUT"], "cannot be reached"),
        (["fit", "BIKES", "--model", "nerv", "--start", "300", "--out", "OUT"], "250 frames"),
        (["fit", "BIKES", "--model", "nerv", "--start", "240", "--frames", "20", "--out", "OUT"], "250 frames"),
        (["fit", "BIKES", "--model", "nerv", "--frames", "0", "--out", "OUT"], "frame"),
        (["fit", "BIKES", *TINY_FIT, "--set", "colour=3", "--out", "OUT"], "unknown config field 'colour'"),
        (["eval", "OUT"], "not a run directory"),
        (["fit", "NOTVIDEO", "--model", "nerv", "--out", "OUT"], "not a video"),
        (["info", "EMPTYDIR"], "PNG"),
        (["fit", "BIKES", "--model", "nerv", "--out", "OUT", "--resume"], "cannot resume"),
        (["decode", "OUT", "-o", "OUT2", "--batch-size", "0"], "argument --batch-size: expected a whole number at least 1"),
        (["decode", "OUT", "-o", "OUT2", "--batch-size", "-1"], "argument --batch-size"),
        (["fit", "BIKES", "--out", "OUT", "--lr", "nan"], "argument --lr: expected a number more than 0"),
        (["fit", "BIKES", "--out", "OUT", "--eval-every", "0"], "argument --eval-every"),
        (["fit", "BIKES", *TINY_FIT, "--loss", "l3", "--out", "OUT"], "unknown loss 'l3'; available: l2, fusion, l1-ms-ssim5"),
        (["fit", "BIKES", "--out", "OUT", "--epochs", "many"], "argument --epochs: expected a whole number"),
        (["encode", "BIKES", "-o", "OUT", "--lambda", "-1"], "argument --lambda"),
        (["fit", "BIKES", *TINY_FIT, "--device", "bogus", "--out", "OUT"], "unknown device 'bogus'"),
        (["models", "--frames", "-1"], "argument --frames"),
        (["fit", "BIKES"], "the following arguments are required: --out"),
        (["fit", "BIKES", *TINY_FIT, "--set", "channels=-4", "--out", "OUT"], "'channels' of nerv: must not be negative"),
        (["fit", "BIKES", *TINY_FIT, "--set", "channels=wide", "--out", "OUT"], "'channels' of nerv: 'wide' is not of type int"),
        (["fit", "BIKES", "--frames", "4", "--resize", "32x64", "--size", "1e12", "--out", "OUT"], "GiB to train"),
        (["fit", "BIKES", "--out", "OUT", "--size", "inf"], "argument --size: expected a parameter count"),
        (["fit", "BIKES", "--out", "OUT", "--size", "nanM"], "argument --size: expected a parameter count"),
        (["fit", "BIKES", *TINY_FIT, "--device", "cuda", "--out", "OUT"], "no CUDA GPU"),
        (["fit", "BIKES", *TINY_FIT, "--out", "FULLDIR"], "holds files but no run"),
        (["decode", "TNRV", "-o", "OUT", "--frames", "-3:2"], "frames -3:2 requested"),
        (["decode", "TNRV", "-o", "OUT", "--frames", "2:1"], "frames 2:1 requested"),
        (["decode", "TNRV", "-o", "MISSING/x.mp4"], "does not exist"),
        (["decode", "TNRV", "-o", "OUT.avi"], "the output must be an .mp4 file, or a folder"),
        (["decode", "TNRV", "-o", "FULLDIR"], "exists; pass --overwrite"),
        (["decode", "TNRV", "-o", "OUT", "--max-memory", "0"], "argument --max-memory"),
        (["decode", "NOTVIDEO", "-o", "OUT"], "not a tnerv bitstream"),
        (["encode", "BIKES", *TINY_FIT, "-o", "OUT.mp4"], "the output must be a .tnrv file"),
        (["encode", "BIKES", *TINY_FIT, "-o", "TNRV"], "exists; pass --overwrite"),
        (["encode", "BIKES", *TINY_FIT, "-o", "MISSING/x.tnrv"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, tiny_file, args, message):
    (tmp_path / "not-a-video.mp4").write_text("hello, I am text")
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    tnrv = tmp_path / "clip.tnrv"
    tnrv.write_bytes(tiny_file.read_bytes())
    subst = {
        "BIKES": str(sample("bikes")),
        "OUT": str(tmp_path / "out"),
        "OUT.avi": str(tmp_path / "out.avi"),
        "OUT.mp4": str(tmp_path / "out.mp4"),
        "NOTVIDEO": str(tmp_path / "not-a-video.mp4"),
        "EMPTYDIR": str(tmp_path / "empty"),
        "FULLDIR": str(tmp_path / "full"),
        "TNRV": str(tnrv),
    }
    args = [subst.get(a, a.replace("MISSING", str(tmp_path / "missing"))) for a in args]
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, message)
    assert snapshot(tmp_path) == before  # nothing created, changed or removed


def snapshot(folder) -> dict[str, bytes | None]:
    """Every file and folder under `folder`: its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    """A .tnrv file of 4 frames (NeRV, 2 epochs)."""
    path = tmp_path_factory.mktemp("tiny") / "clip.tnrv"
    assert main(["encode", str(sample("bikes")), *TINY_FIT, "-o", str(path)]) == 0
    return path


def test_resume_takes_the_device_given_now(capsys, tmp_path):
    out_dir = tmp_path / "run"
    assert run_cli(capsys, "fit", str(sample("bikes")), *TINY_FIT, "--device", "cpu", "--out", str(out_dir))[0] == 0
    before = snapshot(tmp_path)
    # The stored device (cpu) would work; the one asked for now is used, and refused here.
    code, _, err = run_cli(capsys, "fit", str(sample("bikes")), "--out", str(out_dir), "--resume", "--device", "cuda")
    assert_one_line_error(code, err, "no CUDA GPU")
    assert snapshot(tmp_path) == before


def test_encode_resumes_after_its_file_was_written(capsys, tmp_path):
    path = tmp_path / "clip.tnrv"
    assert run_cli(capsys, "encode", str(sample("bikes")), *TINY_FIT, "-o", str(path))[0] == 0
    written = path.read_bytes()
    code, out, _ = run_cli(capsys, "encode", str(sample("bikes")), "-o", str(path), "--resume", "--quiet", "--json")
    assert code == 0 and json.loads(out)["num_bytes"] == len(written)
    assert path.read_bytes() == written
    # Another run's file is still protected.
    other = tmp_path / "other.tnrv"
    other.write_bytes(b"mine")
    code, _, err = run_cli(capsys, "encode", str(sample("bikes")), "-o", str(other), "--run-dir", str(path) + ".run", "--resume")
    assert_one_line_error(code, err, "exists; pass --overwrite")
    assert other.read_bytes() == b"mine"


def test_the_installed_command_reports_errors_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tnerv.cli", "info", str(tmp_path / "missing.mkv")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("tnerv: error:") and "Traceback" not in proc.stderr



def test_a_reader_that_stops_early_is_no_error():
    # `tnerv models | head -1`: the pipe closes before tnerv has written its table.
    proc = subprocess.Popen([sys.executable, "-m", "tnerv.cli", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 0 and err == ""

def test_demo_encodes_and_decodes_the_sample(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "demo", "--epochs", "1", "--frames", "4", "--out", str(tmp_path / "demo"), "--quiet", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["encode"]["bpp"] == (tmp_path / "demo" / "bikes.tnrv").stat().st_size * 8 / (4 * 128 * 256)
    assert report["decode"]["num_frames"] == 4 and (tmp_path / "demo" / "bikes-decoded.mp4").exists()
    assert (tmp_path / "demo" / "bytes.png").exists()
    # x265 beside it: the largest CRF whose PSNR reaches the file's (the demo always compares).
    anchor = report["anchor"]
    assert anchor is None or (anchor["psnr"] >= report["encode"]["psnr"] and anchor["num_frames"] == 4)
