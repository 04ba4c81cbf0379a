"""Reference-exact presets: each builds what the official code builds for its flags (parameter counts
measured with the official code, docs/official-runs.md), with the official recipe;
and the reference behaviours they need (NeRV's expansion, FFNeRV's compact blocks and a window with 0)."""

import json

import pytest
import torch

from tnerv.cli import main
from tnerv.errors import TnervError
from tnerv.models import create_model, load_preset
from tnerv.models.layers import CompactUpsampleBlock, UpsampleBlock
from tnerv.train import TrainConfig, VideoFrames, lr_factor

# preset -> (transmitted, decoder, grids, embeddings) as the official code builds it.
OFFICIAL_COUNTS = {
    # HNeRV-c flags at 128x256, --modelsize 0.36 -> fc_dim 53: decoder 350,489 + 3x3 head 597, embeddings 16x2x4 x 64.
    "hnerv-ref-cpu": (359_278, 351_086, 0, 8_192),
    # NeRV: --embed 1.25_40 --stem_dim_num 128_1 --fc_hw_dim 9_16_12 --lower-width 36 --strides 2 2 2 2 at 144x256.
    "nerv-ref-cpu": (347_919, 347_919, 0, 0),
    # FFNeRV: --fc-hw-dim 9_16_22 --t-dim 32 64 --lower-width 44 --strides 2 2 2 2 at 144x256, 64 frames.
    "ffnerv-ref-cpu": (345_109, 193_045, 152_064, 0),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_COUNTS))
def test_reference_preset_has_the_official_parameter_count(name):
    preset = load_preset(name)
    with torch.device("meta"):
        counts = create_model(preset.model, preset.config()).parameter_counts()
    assert (counts["transmitted"], counts["decoder"], counts["grids"], counts["embeddings"]) == OFFICIAL_COUNTS[name]
    assert preset.config().num_frames == 64 and preset.train["epochs"] == 60


def test_reference_hnerv_matches_the_official_layer_shapes():
    model = create_model("hnerv", load_preset("hnerv-ref-cpu").config())
    assert model.strides == (4, 2, 2, 2, 2) and (model.latent_h, model.latent_w) == (2, 4)
    shapes = [tuple(block[0].weight.shape) for block in model.blocks]
    # fc_dim 53 -> 44 -> 37 -> 31 -> 26 -> 22, kernels 1, 3, 5, 5, 5, PixelShuffle after each conv.
    assert shapes == [(704, 53, 1, 1), (148, 44, 3, 3), (124, 37, 5, 5), (104, 31, 5, 5), (88, 26, 5, 5)]
    assert model.encoder is not None and model.parameter_counts()["encoder"] == 206_128


def test_reference_recipes_are_the_official_ones():
    hnerv, nerv, ffnerv = (TrainConfig.from_dict(load_preset(f"{m}-ref-cpu").train) for m in ("hnerv", "nerv", "ffnerv"))
    assert (hnerv.batch_size, hnerv.lr, hnerv.betas, hnerv.warmup, hnerv.loss) == (2, 1e-3, (0.9, 0.999), 0.1, "l2")
    for recipe in (nerv, ffnerv):
        assert (recipe.batch_size, recipe.lr, recipe.betas, recipe.warmup, recipe.loss) == (1, 5e-4, (0.5, 0.999), 0.2, "fusion")


def test_nerv_expansion_widens_the_first_block():
    base = dict(height=32, width=64, num_frames=4, pe_levels=8, stem_dims=[16], channels=8, strides=[2, 2],
                reduction=2.0, lower_width=4)
    plain, wide = create_model("nerv", base), create_model("nerv", dict(base, expansion=3.0))
    assert plain.blocks[0][0].out_channels == 8 * 4 and wide.blocks[0][0].out_channels == 24 * 4
    assert wide.blocks[1][0].in_channels == 24 and wide.blocks[1][0].out_channels == 12 * 4  # 24 / 2, then shuffled
    assert wide(torch.arange(2))["output"].shape == (2, 3, 32, 64)


def test_ffnerv_compact_blocks_are_grouped_except_the_stride_5_block():
    model = create_model("ffnerv", dict(height=40, width=80, num_frames=4, grid_resolutions=[2, 4], grid_channels=8,
                                        strides=[5, 2, 2], first_width=32, lower_width=16, conv_type="compact"))
    assert isinstance(model.blocks[0], UpsampleBlock)
    assert all(isinstance(b, CompactUpsampleBlock) for b in model.blocks[1:])
    assert model.blocks[1][0].groups == 8 and model.blocks[1][1].kernel_size == (1, 1)
    assert model.eval()(torch.arange(2))["output"].shape == (2, 3, 40, 80)
    with pytest.raises(TnervError, match="divisible by 8"):
        CompactUpsampleBlock(12, 4, 2)


def test_ffnerv_window_with_zero_reads_the_current_frame_while_training():
    frames = torch.rand(6, 3, 32, 64)
    model = create_model("ffnerv", dict(height=32, width=64, num_frames=6, grid_resolutions=[3, 6], grid_channels=4,
                                        strides=[2, 2, 2], lower_width=8, window=[-1, 0, 1], flow_head_block=-2))
    model.train()
    model.on_fit_start(torch.arange(6), VideoFrames(frames, torch.device("cpu")))
    model.frame_buffer.zero_()  # stale content: offset 0 must not read it
    idx = torch.tensor([2])
    out = model(idx)
    assert torch.equal(model.frame_buffer[2], out["independent"][0].detach())  # written before aggregating
    assert model.frame_buffer[[1, 3]].abs().sum() == 0
    model.eval()
    full = torch.cat([o for _, o in model.reconstruct(torch.arange(6), None, 1)])
    part = torch.cat([o for _, o in model.reconstruct(torch.arange(2, 4), None, 1)])
    assert torch.equal(full[2:4], part)


def test_schedule_constant_keeps_the_rate_after_the_warm_up():
    assert lr_factor(5, 100, 0.1, 0.1, "constant") == pytest.approx(0.55)
    assert lr_factor(99, 100, 0.1, 0.1, "constant") == 1.0
    assert lr_factor(99, 100, 0.1, 0.1, "cosine") < 0.01


@pytest.mark.parametrize(
    "values, message",
    [({"betas": [0.9]}, "takes 2 numbers"), ({"warmup": "x"}, "takes a float"), ({"lr": float("nan")}, "positive"),
     ({"schedule": "step"}, "unknown schedule"), ({"grad_clip": -1.0}, "grad_clip"), ({"eval_every": 0}, "at least 1")],
)
def test_bad_training_options_are_named(values, message):
    with pytest.raises(TnervError, match=message):
        TrainConfig.from_dict(values)


def test_train_set_overrides_every_recipe_field(tmp_path, capsys):
    out = tmp_path / "run"
    _write_clip(tmp_path / "clip")
    code = main([
        "fit", str(tmp_path / "clip"), "--preset", "nerv-s-cpu", "--out", str(out), "--quiet",
        "--set", "stem_dims=[16]", "--set", "channels=8", "--epochs", "1",
        "--train-set", "betas=[0.8, 0.99]", "--train-set", "warmup=0", "--train-set", "schedule=constant",
        "--train-set", "grad_clip=0.5", "--train-set", "weight_decay=1e-4",
    ])
    capsys.readouterr()
    assert code == 0
    recipe = json.loads((out / "run.json").read_text())["train_config"]
    assert (recipe["betas"], recipe["warmup"], recipe["schedule"], recipe["grad_clip"], recipe["weight_decay"]) == (
        [0.8, 0.99], 0.0, "constant", 0.5, 1e-4)


def test_train_set_with_a_bad_value_is_one_line(tmp_path, capsys):
    _write_clip(tmp_path / "clip")
    code = main(["fit", str(tmp_path / "clip"), "--preset", "nerv-s-cpu", "--out", str(tmp_path / "run"),
                 "--train-set", "betas=fast"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "betas" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "run.json").exists()


def _write_clip(folder) -> None:
    from tnerv.video import write_png

    folder.mkdir()
    for i in range(2):
        write_png(torch.randint(0, 256, (32, 64, 3), dtype=torch.uint8).numpy(), folder / f"{i:03d}.png")
