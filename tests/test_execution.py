"""The fast execution paths: channels_last computes what NCHW computes, bf16 and NNPACK stay close to
fp32, and the decoder records which path it chose."""

import copy
import json
import warnings

import pytest
import torch

from tnerv.cli import main
from tnerv.compress import MIN_AGREEMENT_DB, decode_file, decode_frames
from tnerv.models import create_model, list_models
from tnerv.models.auto import auto_config
from tnerv.models.execution import FP32, NNPACK, ExecutionPath, candidate_paths
from tnerv.models.nnpack import NNPACKConv2d
from tnerv.models.nnpack import available as nnpack_available
from tnerv.models.layers import AdaIN
from tnerv.train import LOSSES, TrainConfig, fit
from tnerv.video import sample

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


def test_decode_records_its_path_and_never_trades_more_than_the_bound(tiny_file, tmp_path):
    asked = decode_file(tiny_file, tmp_path / "fp32", precision="fp32")
    assert asked.path == {"precision": "fp32", "channels_last": True, "nnpack": False, "reason": "fp32 asked"}
    tried = decode_file(tiny_file, tmp_path / "bf16", precision="bf16")
    agreement = tried.path["agreement_db"]["bf16, channels_last"]
    assert tried.path["precision"] == ("bf16" if agreement >= MIN_AGREEMENT_DB else "fp32")
    assert f"{agreement:.1f} dB from fp32's" in tried.path["reason"]
    if tried.path["precision"] == "fp32":  # refused: the frames are the fp32 path's, exactly
        for a, b in zip(sorted((tmp_path / "fp32").iterdir()), sorted((tmp_path / "bf16").iterdir())):
            assert a.read_bytes() == b.read_bytes()


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
    agreement = result.path["agreement_db"]["fp32, nnpack"]
    assert agreement >= MIN_AGREEMENT_DB and result.path["nnpack"] and not result.path["channels_last"]
    assert f"fp32, nnpack kept: its 8-bit frames are {agreement:.1f} dB from fp32's" in result.path["reason"]


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

    code = "from tnerv.cli import _passive_openmp; _passive_openmp(); import os; print(os.environ['OMP_WAIT_POLICY'])"
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
