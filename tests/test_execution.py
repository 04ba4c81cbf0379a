"""The fast execution paths: channels_last computes what NCHW computes, bf16 and NNPACK stay close to
fp32, and the decoder records which path it chose."""

import contextlib
import copy
import dataclasses
import json
import re
import time
import warnings

import pytest
import torch

from tnerv.cli import main
from tnerv.decode import MIN_AGREEMENT_DB, decode_file, decode_frames
from tnerv.metrics import psnr
from tnerv.models import create_model, list_models
from tnerv.models.budget import auto_config
from tnerv.models.execution import FP32, NNPACK, ExecutionPath, candidate_paths
from tnerv.models.layers import AdaIN
from tnerv.models.nnpack import NNPACKConv2d
from tnerv.models.nnpack import available as nnpack_available
from tnerv.train import LOSSES, TrainConfig, fit
from tnerv.video import read_video, round_to_8bit, sample

CHANNELS_LAST = ExecutionPath("fp32", channels_last=True)
BF16 = ExecutionPath("bf16", channels_last=True)


def one_step_gradients(model, frames: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gradients of one training step on frame 3 (the models' own training forward pass and loss)."""
    source = lambda idx: frames[idx]  # noqa: E731
    model.attach_video(source)
    model.on_fit_start(torch.arange(len(frames)), source)
    model.train()
    idx = torch.tensor([3])
    outputs = model(idx, frames[idx] if model.needs_frames else None)
    model.training_loss(outputs, frames[idx], LOSSES["fusion"]).backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", list_models())
def test_channels_last_training_step_equals_nchw_in_float64(name, tiny_clip):
    # In float64 only the order of the sums differs (1e-15); a layout-dependent error shows as 1e-3 or
    # more (torch's instance_norm backward with a channels_last gradient gave 9.0 before AdaIN's fix).
    config, _ = auto_config(name, 32, 64, 8)
    torch.manual_seed(0)
    nchw = create_model(name, config).double()
    nhwc = CHANNELS_LAST.apply(copy.deepcopy(nchw))
    frames = tiny_clip.double() / 255
    expected, got = one_step_gradients(nchw, frames), one_step_gradients(nhwc, frames)
    assert expected.keys() == got.keys() and len(expected) > 0
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-9, atol=1e-12, msg=key)


def test_adain_input_gradient_does_not_depend_on_the_gradient_layout():
    torch.manual_seed(0)
    adain = AdaIN(12, 10).double()
    x, z = torch.randn(1, 12, 32, 64, dtype=torch.float64), torch.randn(1, 10, dtype=torch.float64)
    grad = torch.randn(1, 12, 32, 64, dtype=torch.float64)
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last):
        xi = x.clone().requires_grad_()
        adain(xi, z).backward(grad.to(memory_format=layout))
        grads.append(xi.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    """A small HNeRV .tnrv file of 8 frames at 32x64."""
    path = tmp_path_factory.mktemp("exec") / "clip.tnrv"
    args = ["encode", str(sample("bikes")), "-o", str(path), "--model", "hnerv", "--size", "20k",
            "--frames", "8", "--resize", "32x64", "--epochs", "3", "--quiet"]
    assert main(args) == 0
    return path


def test_fast_decode_paths_stay_close_to_fp32(tiny_file):
    fp32, _, _ = decode_frames(tiny_file, 0, 8, execution=FP32)
    nhwc, _, _ = decode_frames(tiny_file, 0, 8, execution=CHANNELS_LAST)
    bf16, _, _ = decode_frames(tiny_file, 0, 8, execution=BF16)
    # channels_last: float32 sums in another order, each within a few ulps of outputs in [0, 1].
    assert (nhwc - fp32).abs().max() < 1e-5
    # bf16 keeps 8 significant bits (each rounding within 2^-9 relative). Through the decoder's 5 blocks
    # with activations of order 1, outputs in [0, 1] move by a few 2^-9 = 0.002; 0.02 is ten of them.
    assert (bf16 - fp32).abs().max() < 0.02
    assert not torch.equal(bf16, fp32)  # the bf16 path did compute in bf16


def written(folder) -> torch.Tensor:
    """The PNG frames a decode wrote, (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(read_video(folder).frames).permute(0, 3, 1, 2).float() / 255


def test_decode_records_its_path_and_never_trades_more_than_the_bound(tiny_file, tmp_path):
    asked = decode_file(tiny_file, tmp_path / "fp32", precision="fp32")
    assert asked.path == {"precision": "fp32", "channels_last": True, "nnpack": False, "reason": "fp32 asked",
                          "ran": "fp32, channels_last"}
    tried = decode_file(tiny_file, tmp_path / "bf16", precision="bf16", batch_size=2)
    trial = tried.path["trials"]["bf16, channels_last"]
    assert tried.path["precision"] == ("bf16" if trial["kept"] else "fp32")
    assert tried.path["compared_frames"] == [[0, 2], [4, 6], [6, 8]]  # first, middle, last batch of 4
    assert "compared: frames 0:2, 4:6, 6:8 of 8" in tried.path["reason"]
    if not trial["identical"]:
        assert f"({trial['worst_frame']}) is {trial['worst_frame_db']:.1f} dB from fp32's" in tried.path["reason"]
    # What was written, not the bookkeeping: every frame, the unprobed ones (2, 3) too, within the bound
    # of fp32's, or exactly fp32's where the path was refused.
    fp32, fast = written(tmp_path / "fp32"), written(tmp_path / "bf16")
    if tried.path["precision"] == "fp32":
        assert torch.equal(fast, fp32)
    else:
        assert psnr(fast, fp32).min() >= MIN_AGREEMENT_DB


def test_auto_decode_writes_frames_within_the_bound_of_fp32(tiny_file, tmp_path):
    fp32 = written(decode_file(tiny_file, tmp_path / "fp32", precision="fp32").output)
    auto = decode_file(tiny_file, tmp_path / "auto", batch_size=1)
    assert psnr(written(auto.output), fp32).min() >= MIN_AGREEMENT_DB  # the worst frame, inf where identical
    # A range decodes on the path the whole video does (the probes are the video's), to the same pixels.
    part = decode_file(tiny_file, tmp_path / "part", "3:6", batch_size=1)
    assert part.path == auto.path and torch.equal(written(part.output), written(auto.output)[3:6])


_standing_in: list = []  # the stand-in path whose decode runs now, if any


@dataclasses.dataclass(frozen=True)
class StandIn(ExecutionPath):
    """A fast path that computes exactly what fp32 does, except that frames `wrong` come out 0.18 brighter
    (about 15 dB from fp32's): a wrong kernel that only some frames reveal."""

    wrong: tuple[int, ...] = ()

    @contextlib.contextmanager
    def autocast(self, device):
        _standing_in.append(self)
        try:
            yield
        finally:
            _standing_in.pop()

    def describe(self) -> str:
        return "stand-in"


def black_first_frame(build):
    """`build_decoder` for a clip whose first frame is black (every path decodes it to 0, exactly),
    with the stand-in path's errors on its `wrong` frames."""
    def built(*args, **kwargs):
        decoder = build(*args, **kwargs)

        def hook(module, inputs, output):
            idx, out = inputs[0], output["output"].clone()
            out[idx == 0] = -1.0  # black once clamped, on any path
            if _standing_in:
                out[torch.isin(idx, torch.tensor(_standing_in[-1].wrong))] += 0.18
            return {**output, "output": out}

        decoder.register_forward_hook(hook)
        return decoder
    return built


@pytest.fixture
def stand_in(monkeypatch):
    """Makes `tnerv.decode` try a stand-in fast path (returned as a setter of its wrong frames) before fp32,
    on a clip whose first frame is black."""
    import tnerv.decode as decode

    monkeypatch.setattr(decode, "build_decoder", black_first_frame(decode.build_decoder))

    def use(wrong: tuple[int, ...]) -> StandIn:
        path = StandIn("fp32", channels_last=True, wrong=wrong)

        def paths(device, precision="auto"):  # --precision fp32 still decodes on fp32 alone
            return [CHANNELS_LAST] if precision == "fp32" else [path, CHANNELS_LAST]

        monkeypatch.setattr(decode, "candidate_paths", paths)
        return path
    return use


@pytest.mark.parametrize("wrong", [(1, 2, 3), (4,), (7,)], ids=["after-the-black-frame", "middle", "last"])
def test_a_fast_path_wrong_on_any_probed_batch_is_refused(tiny_file, tmp_path, stand_in, wrong):
    # With the old mean over the first batch, the black frame's inf made any path pass ("100.0 dB"), and
    # frames past the first batch were never compared.
    path = stand_in(wrong)
    fp32 = decode_file(tiny_file, tmp_path / "fp32", precision="fp32")
    kept, _, _ = decode_frames(tiny_file, 0, 8, 2, execution=path)  # what the stand-in would have written
    assert psnr(round_to_8bit(kept), written(fp32.output)).min() < 20
    result = decode_file(tiny_file, tmp_path / "auto", batch_size=2)
    assert torch.equal(written(result.output), written(fp32.output))  # the fp32 path's frames, exactly
    assert result.path["precision"] == "fp32" and result.path["ran"] == "fp32, channels_last"
    trial = result.path["trials"]["stand-in"]
    assert not trial["kept"] and trial["worst_frame"] in wrong and 10 < trial["worst_frame_db"] < 20
    assert f"stand-in refused: its worst 8-bit frame ({trial['worst_frame']}) is" in result.path["reason"]


def test_identical_frames_are_reported_as_identical_not_as_a_capped_number(tiny_file, tmp_path, stand_in, capsys):
    stand_in(())
    result = decode_file(tiny_file, tmp_path / "auto", batch_size=2)
    assert "100.0" not in result.path["reason"]
    assert "stand-in kept: its 8-bit frames are identical to fp32's" in result.path["reason"]
    assert result.path["ran"] == "stand-in" and result.path["trials"]["stand-in"] == {
        "kept": True, "identical": True, "worst_frame": None, "worst_frame_db": None}
    json.dumps(result.to_dict(), allow_nan=False)  # --json stays JSON: no Infinity or NaN


def test_a_path_with_frames_that_are_not_finite_is_refused():
    from tnerv.decode import _trial, worst_frame

    good = torch.rand(3, 3, 8, 8)
    bad = good.clone()
    bad[1, 0, 2, 2] = float("nan")
    worst_db, at = worst_frame(bad, good)
    assert at == 1 and worst_db != worst_db  # NaN
    kept, record, sentence = _trial("x", worst_db, at)
    assert not kept and record["worst_frame_db"] is None and "frame 1 is not finite" in sentence
    assert worst_frame(good, good)[0] == float("inf")


def test_decode_times_the_path_choice_apart_and_reports_it(tiny_file, tmp_path, monkeypatch, capsys):
    # The path trials decode the probe batches once per path: 0.36 s of a 0.49 s decode of 4 frames went
    # unreported. Slowed by 0.5 s here, the trials' time is reported apart and not hidden in the fps.
    import tnerv.decode as decode

    choose = decode.choose_decode_path

    def slow(*args, **kwargs):
        time.sleep(0.5)
        return choose(*args, **kwargs)

    monkeypatch.setattr(decode, "choose_decode_path", slow)
    started = time.time()
    result = decode_file(tiny_file, tmp_path / "out")
    wall = time.time() - started
    assert result.path_seconds >= 0.5 and result.seconds + result.path_seconds <= wall
    assert result.fps == result.num_frames / result.seconds and result.seconds < wall - 0.5
    assert main(["decode", str(tiny_file), "-o", str(tmp_path / "cli"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path_seconds"] >= 0.5 and report["seconds"] > 0
    assert main(["decode", str(tiny_file), "-o", str(tmp_path / "text")]) == 0
    printed = re.search(r"in [\d.]+ s \([\d.]+ frames per second\) on .+; choosing the path took ([\d.]+) s",
                        capsys.readouterr().out)
    assert printed and float(printed[1]) >= 0.5


needs_nnpack = pytest.mark.skipif(not nnpack_available(), reason="this torch build has no NNPACK")


@needs_nnpack
@pytest.mark.parametrize("name", ["nerv", "hnerv", "ffnerv", "tnerv"])
def test_a_training_step_on_nnpack_gives_the_gradients_of_fp32(name, tiny_clip):
    # At 64x128 the models' last blocks have 2048 and more output pixels, so NNPACK runs there. Its
    # convolutions round within ~1e-5 of the output's scale (tests/test_nnpack.py); through the other
    # layers and the loss that stays far below 1e-3 of each gradient's scale, while a wrong kernel or a
    # swapped gradient gives errors of that scale itself.
    config, _ = auto_config(name, 64, 128, 8)
    torch.manual_seed(0)
    plain = create_model(name, config)
    fast = NNPACK.apply(copy.deepcopy(plain))
    assert any(type(m) is NNPACKConv2d for m in fast.modules())
    frames = torch.nn.functional.interpolate(tiny_clip.float() / 255, size=(64, 128), mode="bilinear")
    expected, got = one_step_gradients(plain, frames), one_step_gradients(fast, frames)
    assert expected.keys() == got.keys() and len(expected) > 0
    assert not all(torch.equal(got[k], expected[k]) for k in expected)  # NNPACK's roundings are there
    for key in expected:
        scale = expected[key].abs().max().item()
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-3 * scale + 1e-12, msg=key)


@needs_nnpack
def test_auto_decodes_through_nnpack_on_a_cpu_without_bf16_units(tiny_file, tmp_path, monkeypatch):
    import tnerv.models.execution as execution

    fp32, _, _ = decode_frames(tiny_file, 0, 8, execution=FP32)
    fast, _, _ = decode_frames(tiny_file, 0, 8, execution=NNPACK)
    # NNPACK's float32 roundings (~1e-5 of the scale, tests/test_nnpack.py) through 5 blocks: 1e-4.
    assert not torch.equal(fast, fp32) and (fast - fp32).abs().max() < 1e-4
    monkeypatch.setattr(execution, "native_bf16", lambda device: False)
    result = decode_file(tiny_file, tmp_path / "auto")
    assert result.path["trials"]["fp32, nnpack"]["kept"] and result.path["ran"] == "fp32, nnpack"
    assert result.path["nnpack"] and not result.path["channels_last"] and result.path["nnpack_fallbacks"] == 0
    assert "fp32, nnpack kept: its " in result.path["reason"]


@needs_nnpack
def test_a_decode_whose_nnpack_calls_fail_says_so(tiny_file, tmp_path, monkeypatch, capsys):
    # NNPACK failing (out of memory, a shape it refuses) runs PyTorch's kernels: the frames are right, but
    # a report of "nnpack" would be false. The trials then compare PyTorch's kernels, so NNPACK is kept.
    import tnerv.models.execution as execution

    def fail(*args):
        raise RuntimeError("NNPACK SpatialConvolution_updateOutput failed: out of memory")

    monkeypatch.setattr(execution, "native_bf16", lambda device: False)
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", fail)
    result = decode_file(tiny_file, tmp_path / "auto")
    assert result.path["nnpack"] and result.path["nnpack_fallbacks"] > 0
    calls = result.path["nnpack_fallbacks"]
    assert result.path["ran"] == (f"fp32, nnpack (fell back to PyTorch's kernels on {calls} of {calls} convolution "
                                  "calls: NNPACK SpatialConvolution_updateOutput failed: out of memory)")
    assert main(["decode", str(tiny_file), "-o", str(tmp_path / "cli")]) == 0
    assert f"on fp32, nnpack (fell back to PyTorch's kernels on {calls} of {calls}" in capsys.readouterr().out


def test_cli_decode_report_names_the_path(tiny_file, tmp_path, capsys):
    assert main(["decode", str(tiny_file), "-o", str(tmp_path / "out.mp4"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    auto = candidate_paths(torch.device("cpu"), "auto")
    assert report["path"]["precision"] in {p.precision for p in auto} and report["path"]["reason"]


def test_auto_never_picks_emulated_bf16(monkeypatch):
    import tnerv.models.execution as execution

    nnpack = [NNPACK] if nnpack_available() else []
    monkeypatch.setattr(execution, "native_bf16", lambda device: False)
    assert execution.candidate_paths(torch.device("cpu"), "auto") == [*nnpack, CHANNELS_LAST]
    monkeypatch.setattr(execution, "native_bf16", lambda device: True)
    assert execution.candidate_paths(torch.device("cpu"), "auto") == [BF16, *nnpack, CHANNELS_LAST]
    assert execution.candidate_paths(torch.device("cpu"), "fp32") == [CHANNELS_LAST]
    assert execution.candidate_paths(torch.device("cpu"), "bf16") == [BF16, CHANNELS_LAST]


@pytest.mark.parametrize("name", ["hnerv", "tnerv"])
def test_bf16_training_forward_stays_close_to_fp32(name, tiny_clip):
    # The training forward pass under bf16 autocast (weights stay float32): the same bound as the bf16
    # decode (a few roundings of 2^-9 on outputs in [0, 1]). Not the loss: an untrained model's nearly
    # flat output makes SSIM's structure term amplify such differences.
    config, _ = auto_config(name, 32, 64, 8)
    torch.manual_seed(0)
    model = create_model(name, config)
    frames = tiny_clip.float() / 255
    source = lambda idx: frames[idx]  # noqa: E731
    model.attach_video(source)
    model.on_fit_start(torch.arange(8), source)
    idx = torch.tensor([3, 5])
    outputs = []
    for enabled in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            outputs.append(model(idx, frames[idx] if model.needs_frames else None)["output"].float())
    assert not torch.equal(outputs[1], outputs[0]) and (outputs[1] - outputs[0]).abs().max() < 0.02


def test_bf16_training_warns_where_it_is_emulated(monkeypatch, tiny_clip):
    import tnerv.train

    config, _ = auto_config("nerv", 32, 64, 8)
    recipe = TrainConfig(epochs=1, batch_size=8, precision="bf16", device="cpu", eval_every=1)
    monkeypatch.setattr(tnerv.train, "native_bf16", lambda device: False)
    with pytest.warns(UserWarning, match="bf16 is emulated on this cpu"):
        fit(create_model("nerv", config), tiny_clip, recipe, progress=False)
    monkeypatch.setattr(tnerv.train, "native_bf16", lambda device: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fit(create_model("nerv", config), tiny_clip, recipe, progress=False)


def test_decode_lets_openmp_threads_sleep_unless_the_user_chose(tmp_path):
    import os
    import subprocess
    import sys

    code = "from tnerv.cli.compression import _passive_openmp; _passive_openmp(); import os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = lambda env: subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)  # noqa: E731
    assert run(env).stdout.strip() == "PASSIVE"
    assert run({**env, "OMP_WAIT_POLICY": "ACTIVE"}).stdout.strip() == "ACTIVE"


def test_nnpack_training_warns_where_it_cannot_run(monkeypatch, tiny_clip):
    import tnerv.train

    config, _ = auto_config("nerv", 32, 64, 8)
    recipe = TrainConfig(epochs=1, batch_size=8, nnpack=True, device="cpu", eval_every=1)
    monkeypatch.setattr(tnerv.train, "nnpack_available", lambda: False)
    with pytest.warns(UserWarning, match="nnpack has no effect here"):
        fit(create_model("nerv", config), tiny_clip, recipe, progress=False)
