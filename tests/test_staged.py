"""HiNeRV's compression pipeline (tnerv.codec.staged): its quantiser against the official code's outputs, its
pruning rule, its stages, and its files (version 3 sections) end to end."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tnerv.codec.bitstream import BitstreamError, ChannelSection, HalfSection, pack, read_file, unpack
from tnerv.codec.quantize import best_channel_axis, channel_quantize
from tnerv.codec.settings import StagedSettings, compression_settings
from tnerv.codec.staged import StagedCompression, quant_noise
from tnerv.compress import encode_video
from tnerv.decode import decode_frames, inspect_file
from tnerv.errors import TnervError
from tnerv.metrics import psnr
from tnerv.models import create_model, load_preset
from tnerv.models.base import TrainingStage
from tnerv.models.budget import config_for_video
from tnerv.runs import VideoSpec, load_frames
from tnerv.train import CHECKPOINT, TrainConfig, fit, stage_lr_factor
from tnerv.video import read_video

# Tensors quantised by the official code (hmkx/HiNeRV @ fdb92ec: compute_best_quant_axis, then the 6-bit
# quantiser of its quant_model), saved with its axis, symbols and float16 scales.
OFFICIAL = Path(__file__).parent / "data" / "hinerv_quantiser_official.pt"


def tiny_hinerv(frames: torch.Tensor, size: int = 20_000):
    n, _, h, w = frames.shape
    config, _ = config_for_video("hinerv", h, w, n, size=size)
    torch.manual_seed(0)
    return create_model("hinerv", config)


def test_the_channel_quantiser_gives_the_official_codes_symbols_and_scales():
    for case in torch.load(OFFICIAL):
        x, axis = case["x"], case["axis"]
        assert best_channel_axis(tuple(x.shape)) == (None if axis < 0 else axis), x.shape
        q = channel_quantize(x, 6, tuple(x.shape))
        assert torch.equal(q.symbols, case["symbols"].long()), x.shape
        assert torch.equal(q.scales, case["scale"].reshape(-1)), x.shape
        # Decoded as the official decoder does it: symbols times the stored float16 scales.
        assert torch.equal(q.dequantize(), case["symbols"].float() * case["scale"].float()), x.shape


def test_the_best_axis_is_the_longest_above_twenty():
    assert best_channel_axis((20, 30)) == 1
    assert best_channel_axis((21, 8)) == 0
    assert best_channel_axis((20, 5, 3)) is None  # no axis longer than 20: one scale
    assert best_channel_axis((30, 30)) == 0  # the first of equals


def test_hinervs_base_grid_is_quantised_in_the_official_layout(tiny_clip):
    model = tiny_hinerv(tiny_clip)
    name = "base_grid.slices.0"
    shape = tuple(dict(model.named_parameters())[name].shape)
    _, cells, channels = model.base_grid.levels[0]
    assert model.channel_layout(name, shape) == (shape[0] * cells, channels)
    assert model.channel_layout("stem.weight", (4, 3, 3, 3)) == (4, 3, 3, 3)
    # The official model of hinerv-ref-cpu (hmkx/HiNeRV @ fdb92ec, built on the CPU) holds its base grid as
    # encoding.grids.0.weight (2736, 8) and encoding.grids.1.weight (1296, 16).
    preset = load_preset("hinerv-ref-cpu")
    with torch.device("meta"):
        reference = create_model("hinerv", preset.config())
    shapes = {n: tuple(p.shape) for n, p in reference.named_parameters()}
    assert reference.channel_layout("base_grid.slices.0", shapes["base_grid.slices.0"]) == (2736, 8)
    assert reference.channel_layout("base_grid.slices.1", shapes["base_grid.slices.1"]) == (1296, 16)


def test_pruning_scores_each_weight_by_its_tensors_size(tiny_clip):
    model = tiny_hinerv(tiny_clip)
    wrapped = StagedCompression(model, StagedSettings())
    wrapped.on_phase_start()
    named = dict(model.named_parameters())
    names = wrapped._prunable()
    assert names and not any(n.startswith(("local_linears.", "base_grid.", "local_grids.")) for n in names)
    assert all(named[n].dim() > 1 for n in names)
    pruned = sum(int((~wrapped._mask(n)).sum()) for n in names)
    assert pruned == int(model.parameter_counts()["transmitted"] * 0.15)  # a share of all the parameters
    # The pruned weights are those of smallest |w| / sqrt(n): not those of smallest |w|.
    scores = torch.cat([(named[n].abs() / named[n].numel() ** 0.5).flatten() for n in names])
    magnitudes = torch.cat([named[n].abs().flatten() for n in names])
    masks = torch.cat([wrapped._mask(n).flatten() for n in names])
    assert torch.equal(~masks, scores <= scores.sort().values[pruned - 1])
    assert not torch.equal(~masks, magnitudes <= magnitudes.sort().values[pruned - 1])


def test_quant_noise_replaces_a_share_and_passes_no_gradient_through_the_rounding():
    x = torch.randn(64, 30, generator=torch.Generator().manual_seed(1)).requires_grad_()
    quantized = channel_quantize(x, 6, (64, 30))
    scale = (2 * x.detach().abs().amax(0, keepdim=True) / 63 + 1e-6)
    everything = quant_noise(x, 6, (64, 30), share=1.0)
    assert torch.allclose(everything, quantized.symbols.float() * scale, atol=0, rtol=1e-6)
    assert torch.equal(quant_noise(x, 6, (64, 30), share=0.0), x)
    # With every entry replaced, the gradient reaches x through the scales alone: at each column's largest
    # |x|, d(scale)/dx = 2 sign(x) / 63 times the column's symbols (a straight-through rounding would give 1s).
    everything.sum().backward()
    peaks = x.detach().abs().argmax(0)
    expected = torch.zeros_like(x)
    expected[peaks, torch.arange(30)] = 2 / 63 * x.detach()[peaks, torch.arange(30)].sign() * quantized.symbols.sum(0)
    assert torch.allclose(x.grad, expected, atol=1e-6)
    torch.manual_seed(0)
    some = quant_noise(x, 6, (64, 30), share=0.9).detach()
    replaced = (some != x.detach()).float().mean().item()
    assert 0.85 < replaced < 0.95


def test_each_stage_restarts_the_schedule_and_the_optimiser(tiny_clip, tmp_path):
    config = TrainConfig(warmup=0.1, warmup_start=0.01, schedule="cosine-full", final_lr=0.01)
    stages = [TrainingStage("main", 10), TrainingStage("prune", 2), TrainingStage("quant", 1, 0.1)]
    assert stage_lr_factor(0, 0, 4, stages, config) == pytest.approx(0.01)  # the warm-up's start
    assert stage_lr_factor(10, 0, 4, stages, config) == 1.0  # pruning: a new cosine, no warm-up
    assert stage_lr_factor(11, 0, 4, stages, config) == pytest.approx(0.505)
    assert stage_lr_factor(12, 0, 4, stages, config) == pytest.approx(0.1)  # quantisation: a tenth
    assert StagedCompression(tiny_hinerv(tiny_clip), StagedSettings()).training_stages(390) == [
        TrainingStage("main", 300), TrainingStage("prune", 60), TrainingStage("quant", 30, 0.1),
    ]
    wrapped = StagedCompression(tiny_hinerv(tiny_clip), StagedSettings())
    assert [s.epochs for s in wrapped.training_stages(6)] == [5, 1]  # no quantisation stage in 6 epochs
    wrapped = StagedCompression(tiny_hinerv(tiny_clip), StagedSettings(phase_start=0.5))
    assert [s.epochs for s in wrapped.training_stages(6)] == [3, 2, 1]
    fit(wrapped, tiny_clip, TrainConfig(epochs=6, batch_size=4, loss="l2", eval_every=6), tmp_path, progress=False)
    steps_per_epoch = 2  # 8 frames in batches of 4
    state = torch.load(tmp_path / CHECKPOINT, weights_only=False)["optimizer"]["state"]
    assert {int(s["step"]) for s in state.values()} == {1 * steps_per_epoch}  # Adam restarted with the last stage
    assert wrapped.masks_ready and wrapped.in_quant


def test_hinerv_is_compressed_in_its_stages_by_default():
    settings = compression_settings("hinerv")
    assert isinstance(settings, StagedSettings) and settings.prune == 0.15 and settings.bits == 6
    assert compression_settings("hinerv", prune=0.3).prune == 0.3
    with pytest.raises(TnervError, match="--lambda"):
        compression_settings("hinerv", lam=0.1)
    assert compression_settings("nerv").phase_start == 0.8  # the others keep their own phase


@pytest.fixture(scope="module")
def encoded_hinerv(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hinerv")
    clip = VideoSpec(path="bikes", count=8, resize=(32, 64))
    result = encode_video(clip, folder / "clip.tnrv", model="hinerv", size=20_000, train_overrides={"epochs": 6,
                          "batch_size": 4}, phase_start=0.5, progress=False)
    return folder, result


def test_a_hinerv_file_holds_its_channel_and_float16_sections(encoded_hinerv):
    folder, result = encoded_hinerv
    assert result.method == "staged"
    data = (folder / "clip.tnrv").read_bytes()
    assert int.from_bytes(data[4:6], "little") == 3
    header, sections = unpack(data)
    kinds = {entry["name"]: type(section) for entry, section in zip(header["tensors"], sections)}
    assert kinds["stem.weight"] is ChannelSection and kinds["stem.bias"] is HalfSection
    assert kinds["base_grid.slices.0"] is ChannelSection
    masked = [e["name"] for e, s in zip(header["tensors"], sections) if getattr(s, "mask_counts", None) is not None]
    assert "stem.weight" in masked and not any(n.startswith(("local", "base")) for n in masked)
    assert header["compression"]["method"] == "staged"
    assert inspect_file(folder / "clip.tnrv")  # inspect reads it


def test_a_fresh_process_decodes_a_hinerv_file_to_the_encoded_quality(encoded_hinerv):
    folder, result = encoded_hinerv
    proc = subprocess.run(
        [sys.executable, "-m", "tnerv.cli", "decode", str(folder / "clip.tnrv"), "-o", str(folder / "png"), "--json"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    decoded = torch.from_numpy(read_video(folder / "png").frames).permute(0, 3, 1, 2).float() / 255
    value = psnr(decoded, load_frames(VideoSpec(path="bikes", count=8, resize=(32, 64))).float() / 255).mean().item()
    assert value == pytest.approx(result.psnr, abs=0.01)


def _first_channel_section(data: bytes):
    header, sections = unpack(data)
    index = next(i for i, s in enumerate(sections) if isinstance(s, ChannelSection))
    return header, sections, index


@pytest.mark.parametrize("change", ["nan scale", "zero scale", "scales do not tile", "mask keeps too few"])
def test_a_crafted_channel_section_is_refused_in_one_line(encoded_hinerv, tmp_path, change):
    folder, _ = encoded_hinerv
    header, sections, i = _first_channel_section((folder / "clip.tnrv").read_bytes())
    s = sections[i]
    if change == "nan scale":
        s.scales = s.scales.copy()
        s.scales[0] = np.float16("nan")
    elif change == "zero scale":
        s.scales = s.scales.copy()
        s.scales[-1] = 0
    elif change == "scales do not tile":
        s.scales = s.scales[:-1]
    else:
        s.mask_counts = np.array([2**16 - 1, 1], dtype=np.uint32)  # the same payload read with another table
    path = tmp_path / "crafted.tnrv"
    path.write_bytes(pack(header, sections))
    with pytest.raises(BitstreamError) as info:
        decode_frames(path, 0, 2)
    assert "\n" not in str(info.value)


def test_a_non_finite_float16_section_is_refused(encoded_hinerv, tmp_path):
    folder, _ = encoded_hinerv
    header, sections = unpack((folder / "clip.tnrv").read_bytes())
    i = next(i for i, s in enumerate(sections) if isinstance(s, HalfSection))
    sections[i].values = sections[i].values.copy()
    sections[i].values[0] = np.float16("inf")
    path = tmp_path / "inf.tnrv"
    path.write_bytes(pack(header, sections))
    with pytest.raises(BitstreamError, match="not finite"):
        read_file(path)


def test_files_without_the_new_kinds_stay_version_2_and_version_2_holds_no_new_kind(encoded_hinerv, monkeypatch):
    from tnerv.codec import bitstream
    from tnerv.codec.bitstream import TensorSection

    folder, _ = encoded_hinerv
    header, sections = unpack((folder / "clip.tnrv").read_bytes())
    per_tensor = [s for s in sections if isinstance(s, TensorSection)]
    assert not per_tensor  # every HiNeRV tensor is per channel or float16
    counts = np.array([2**16], dtype=np.uint32)
    plain = {**header, "tensors": header["tensors"][:1]}
    assert pack(plain, [TensorSection(1.0, 0.0, 0, counts, b"")])[4:6] == (2).to_bytes(2, "little")
    monkeypatch.setattr(bitstream, "VERSION", 2)  # a writer that calls a file with kind 3 version 2
    with pytest.raises(BitstreamError, match="has kind 3, expected 2"):
        unpack(pack(header, sections))
