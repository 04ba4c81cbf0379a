"""The decoder never writes a frame it cannot vouch for, and its caps hold (issue 21): section fields
within the writers' ranges, finite tensors and frames, a memory estimate that includes the
decoder's activations (checked against the measured peak), a fixed default cap, and files that
declare more work than their size allows refused before anything is decoded."""

import json
import math
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import tnerv.codec.container as container
import tnerv.host as host
from tnerv.cli import main
from tnerv.codec.bitstream import BitstreamError, read_file
from tnerv.decode import decode_frames
from test_untrusted_files import fuzz  # benchmarks/fuzz.py, loaded there

GIB = 2**30


@pytest.fixture(scope="module")
def seed_files(tmp_path_factory):
    """Small real files of HNeRV and T-NeRV written by tnerv's encoder (fuzz.write_seed)."""
    folder = tmp_path_factory.mktemp("seeds")
    return {model: fuzz.write_seed(model, folder, 0) for model in ("hnerv", "tnerv")}


def _craft(path: Path, out: Path, change) -> Path:
    """A file made from `path` by `change(header, bodies)` -> (header, bodies), every checksum valid."""
    header, _, bodies = fuzz.parts(path.read_bytes())
    header, bodies = change(header, list(bodies))
    out.write_bytes(fuzz.frame_sections(header, json.dumps(header, separators=(",", ":")).encode(), bodies))
    return out


def _with_quantiser(index: int, **fields):
    """A change that sets a tensor section's step, offset or qmin."""
    def change(header, bodies):
        step, offset, qmin, entries = struct.unpack_from("<ffiI", bodies[index])
        values = {"step": step, "offset": offset, "qmin": qmin, **fields}
        bodies[index] = struct.pack("<ffiI", values["step"], values["offset"], values["qmin"], entries) + bodies[index][16:]
        return header, bodies
    return change


def _decode_cli(path: Path, out: Path, capsys, *extra: str) -> tuple[int, str]:
    status = main(["decode", str(path), "-o", str(out), "--precision", "fp32", *extra])
    return status, capsys.readouterr().err.strip()


def test_a_step_of_3e38_is_refused_naming_its_tensor_and_nothing_is_written(seed_files, tmp_path, capsys):
    # Before: every value of the tensor became inf, every frame NaN, and `tnerv decode` wrote black PNGs.
    header, _ = read_file(seed_files["hnerv"])
    index = next(i for i, e in enumerate(header["tensors"]) if e["component"] == "decoder")
    bad = _craft(seed_files["hnerv"], tmp_path / "step.tnrv", _with_quantiser(index, step=3e38))
    status, err = _decode_cli(bad, tmp_path / "frames", capsys)
    assert status == 2 and err.startswith("tnerv: error: ") and "\n" not in err
    assert header["tensors"][index]["name"] in err and "step 3e+38" in err
    assert not (tmp_path / "frames").exists()


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"qmin": -(2**31)}, "symbols -2147483648"),
        ({"offset": 1e30}, "dequantise to values up to 1e\\+30"),
        ({"step": 1e-30}, "step 1e-30 is outside"),
        ({"step": 2.0**17}, "step 131072 is outside"),
    ],
)
def test_section_fields_outside_the_writers_range_are_refused(seed_files, tmp_path, fields, message):
    # Before: any finite step or offset and any 32-bit qmin passed; these decoded to other frames.
    bad = _craft(seed_files["hnerv"], tmp_path / "field.tnrv", _with_quantiser(0, **fields))
    with pytest.raises(BitstreamError, match=message):
        decode_frames(bad, 0, 1)


def test_values_at_the_writers_bound_that_overflow_are_refused_naming_the_layer(seed_files, tmp_path, capsys):
    # Every tensor one symbol of value 2^16: each field within range, the tensors finite, the activations
    # not. Before: infinities clamped to plausible 0s and 1s, or NaN frames written black, exit 0.
    def change(header, bodies):
        return header, [fuzz.one_symbol_body(2.0**16, 0.0, 1) for _ in bodies]

    bad = _craft(seed_files["hnerv"], tmp_path / "overflow.tnrv", change)
    status, err = _decode_cli(bad, tmp_path / "frames", capsys)
    assert status == 2 and "\n" not in err and re.search("the output of layer '.*' decodes to non-finite", err)
    assert not (tmp_path / "frames").exists()


def test_a_non_finite_tensor_or_frame_is_named():
    import torch

    values = torch.ones(2, 3, 4, 4)
    assert container.check_frames(values, 10) is values
    values[1, 2, 3, 0] = float("nan")
    with pytest.raises(BitstreamError, match="frame 11 decodes to non-finite"):
        container.check_frames(values, 10)
    with pytest.raises(BitstreamError, match="tensor 'w' decodes to non-finite"):
        container.check_finite(torch.tensor([1.0, float("inf")]), "tensor 'w'")


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if the entropy decoder is reached: a bomb must be refused before any decoding."""
    def reached(*args, **kwargs):
        raise AssertionError("the file was decoded instead of refused")

    monkeypatch.setattr(container, "decode_symbols", reached)


def test_a_2kb_one_symbol_table_bomb_is_refused_before_decoding(seed_files, tmp_path, no_decoding):
    # HNeRV's widths 300x, every table one symbol (no payload): ~1e9 values, ~19 GiB at 20 bytes a value,
    # in about 2 KB. Before: it passed every check with this machine's memory as the default cap.
    bomb = _craft(seed_files["hnerv"], tmp_path / "bomb.tnrv",
                  lambda h, b: fuzz.with_config(h, b, fuzz.widened(h["config"], 300)))
    assert bomb.stat().st_size < 4096
    with pytest.raises(BitstreamError, match=r"values in [\d,]+ bytes .* at most 1024 per byte"):
        decode_frames(bomb, 0, 1)


def _frame_bomb(path: Path, out: Path, k: int) -> Path:
    """The file's model at a frame k x k times larger (its latent-sized tensors one-symbol tables)."""
    def change(header, bodies):
        c, v = header["config"], header["video"]
        size = {"height": c["height"] * k, "width": c["width"] * k}
        return fuzz.with_config(header, bodies, size, {"height": v["height"] * k, "width": v["width"] * k})

    return _craft(path, out, change)


def test_a_frame_bomb_is_refused_by_its_activations(seed_files, tmp_path, no_decoding):
    # T-NeRV at a 16x larger frame (128x256) decoded in batches of 4: the estimate with the decoder's
    # activations is about 0.09 GiB; the old one (20 bytes a value plus the frames) said 0.004 GiB and let
    # it through a 0.05 GiB cap.
    bomb = _frame_bomb(seed_files["tnerv"], tmp_path / "frames16.tnrv", 4)
    header, _ = read_file(bomb)
    config = container.check_header(header, str(bomb))
    values = sum(math.prod(e["shape"]) for e in header["tensors"])
    assert values * host.BYTES_PER_VALUE + 8 * 3 * config.height * config.width * 4 < 0.01 * GIB
    with pytest.raises(BitstreamError, match="more than the 0.05 GiB allowed"):
        decode_frames(bomb, 0, 8, max_memory=GIB // 20)


def test_a_4096x8192_video_is_refused_by_the_default_cap(seed_files, tmp_path, no_decoding):
    # Before: the default cap was this machine's memory and the estimate 2.1 GiB.
    bomb = _frame_bomb(seed_files["hnerv"], tmp_path / "huge.tnrv", 128)
    assert read_file(bomb)[0]["video"]["height"] == 4096
    with pytest.raises(BitstreamError, match="allowed \\(--max-memory"):
        decode_frames(bomb, 0, 1)


def test_the_default_cap_is_a_fixed_ceiling():
    from tnerv.host import default_memory_cap, machine_memory

    assert default_memory_cap() == min(4 * GIB, machine_memory())


def test_more_work_per_output_pixel_than_a_model_of_its_size_is_refused(seed_files):
    header, _ = read_file(seed_files["hnerv"])
    config = container.check_header(header)
    bad = lambda what: BitstreamError(what)  # noqa: E731
    container.check_work(header, config, seed_files["hnerv"].stat().st_size, bad)  # the real file passes
    header["video"] = {**header["video"], "height": 1, "width": 1}  # all that work for one pixel
    with pytest.raises(BitstreamError, match="multiply-accumulates per output pixel"):
        container.check_work(header, config, seed_files["hnerv"].stat().st_size, bad)


def test_a_model_frame_far_larger_than_its_video_is_refused(seed_files, tmp_path):
    def change(header, bodies):
        c = header["config"]
        return fuzz.with_config(header, bodies, {"height": c["height"] * 4, "width": c["width"] * 4})

    bad = _craft(seed_files["hnerv"], tmp_path / "crop.tnrv", change)
    with pytest.raises(BitstreamError, match="more than 2x the video's"):
        decode_frames(bad, 0, 1)


_MEASURE = r"""
import ctypes, json, re, sys
from pathlib import Path
import torch
from tnerv.codec.bitstream import read_file
from tnerv.codec.container import check_header, declared_values
from tnerv.host import decode_memory
from tnerv.decode import decode_frames
torch.set_num_threads(1)
libc = ctypes.CDLL(None)
def status(key):
    return int(re.search(key + r":\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
warm, *paths = sys.argv[1:]
decode_frames(warm, 0, 8, batch_size=4, max_memory=1 << 40)  # kernels and thread pools start once
for path in paths:
    libc.malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident size
    base = status("VmRSS")
    decode_frames(path, 0, 8, batch_size=4, max_memory=1 << 40)
    header, _ = read_file(path)
    estimate = decode_memory(header["model"], check_header(header), declared_values(header), 8, 4)
    print(json.dumps({"path": path, "measured": status("VmHWM") - base, "estimate": estimate}))
"""

SIZES = ((128, 256), (192, 384), (256, 512))


@pytest.mark.parametrize("model", ["nerv", "enerv", "cnerv", "ffnerv", "hnerv", "dnerv", "tnerv", "hinerv"])
def test_the_memory_estimate_holds_the_measured_peak(model, tmp_path):
    """Decoding 8 frames in batches of 4 at three frame sizes, in a fresh process with the Makefile's
    glibc settings: the estimate is at least 1/1.5 and at most 2x of what the process grew by (its peak
    resident size over the size before). Before: the estimate left out the activations (0.02-0.05x at these sizes)."""
    warm = _seed_file(model, 32, 64, tmp_path)
    paths = [str(_seed_file(model, h, w, tmp_path)) for h, w in SIZES]
    # glibc as the Makefile sets it for tnerv (README): large buffers kept, not returned after each pass.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "268435456", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
    run = subprocess.run([sys.executable, "-c", _MEASURE, str(warm), *paths], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(rows) == len(SIZES)
    # Never under the measured growth by more than 1.5x (the cap's promise); over it by up to 2x, because
    # the measurement itself varies: three repeats of this run per model (2026-12-07, AVX-512 machine) gave
    # 0.74-1.42, yet in a full suite run NeRV at 256x512 grew by 48.4 MB once (76-95 MB in the others) for
    # an estimate of 87.7 MB: 1.81, which failed a 1.5x upper bound.
    for row in rows:
        ratio = row["estimate"] / row["measured"]
        assert 1 / 1.5 <= ratio <= 2.0, f"{model}: estimate {row['estimate']:,} measured {row['measured']:,}"


def _seed_file(model: str, height: int, width: int, folder: Path) -> Path:
    """A file of `model` at a frame size (fuzz.write_seed's recipe: 8 frames, 20k parameters)."""
    sizes = fuzz.HEIGHT, fuzz.WIDTH, fuzz.SIZE
    fuzz.HEIGHT, fuzz.WIDTH, fuzz.SIZE = height, width, 20_000
    try:
        path = fuzz.write_seed(model, folder, 0)
    finally:
        fuzz.HEIGHT, fuzz.WIDTH, fuzz.SIZE = sizes
    return path.rename(folder / f"{model}-{height}x{width}.tnrv")
