"""CPU scale keeps each model's paper-scale proportions: the split of the transmitted parameters, the
latent's shape, grids that every frame reads; the published T-NeRV configs run as they are."""

import dataclasses
import functools
import math

import pytest
import torch

from tnerv.bench.protocols import CPU_BUDGET_PER_FRAME, CPU_SCALE
from tnerv.cli import main
from tnerv.models import create_model, list_models, load_preset, model_class
from tnerv.models.budget import cpu_config, setting_config
from tnerv.models.counting import format_split, split_of, transmitted_size
from tnerv.models.ffnerv import MIN_GRID_CHANNELS, FFNeRV
from tnerv.models.settings import SETTINGS
from tnerv.models.strides import config_geometry

MODELS = list_models()
# The presets that the settings name: T-NeRV's published configs (supplementary Tab. 6, 7, 8).
PUBLISHED = {"setting1": "tnerv-12.4m-720p", "setting2": "tnerv-3.0m-960p", "uvg-1080p": "tnerv-9.3m-1080p"}


@functools.cache
def paper(model: str, setting: str):
    return setting_config(model, setting)


@functools.cache
def cpu(model: str, setting: str):
    height, width, frames, budget, _ = CPU_SCALE[setting]
    return cpu_config(model, setting, height, width, frames, budget)


def unread_slices(resolutions: tuple[int, ...], num_frames: int) -> list[tuple[int, int]]:
    """(grid, slice) pairs that no frame reads: frame i (t = i/N) reads slices floor(i*T/N) and the next."""
    unread = []
    for k, slices in enumerate(resolutions):
        read = set()
        for i in range(num_frames):
            left = min(i * slices // num_frames, slices - 1)
            read |= {left, min(left + 1, slices - 1)}
        unread += [(k, j) for j in range(slices) if j not in read]
    return unread


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("model", MODELS)
def test_cpu_scale_keeps_the_paper_split_within_5_points(model, setting):
    p, c = paper(model, setting), cpu(model, setting)
    height, width, frames, budget, _ = CPU_SCALE[setting]
    assert (c.height, c.width, c.num_frames) == (height, width, frames)
    counts = transmitted_size(model, c)
    assert abs(counts["transmitted"] / budget - 1) < 0.05
    paper_split, cpu_split = split_of(transmitted_size(model, p)), split_of(counts)
    for part in ("decoder", "grids", "embeddings"):
        assert abs(cpu_split[part] - paper_split[part]) < 0.05, (part, paper_split, cpu_split)


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("model", ["ffnerv", "tnerv"])
def test_every_grid_slice_is_read_at_both_scales(model, setting):
    for config in (paper(model, setting), cpu(model, setting)):
        assert unread_slices(config.grid_resolutions, config.num_frames) == []
    # The grids keep their relation to the frame count (T-NeRV: 64/128/256 slices for 600 frames).
    ref = load_preset(model_class(model).card.reference_preset).config()
    c = cpu(model, setting)
    for slices, ref_slices in zip(c.grid_resolutions, ref.grid_resolutions):
        assert abs(slices - ref_slices * c.num_frames / ref.num_frames) <= 1


def test_unread_slices_counts_what_no_frame_reads():
    assert unread_slices((64, 128, 256, 512), 132) == [(3, j) for j in range(512) if j not in _read(512, 132)]
    assert unread_slices((3, 7, 14, 27), 32) == []


def _read(slices: int, frames: int) -> set[int]:
    return {j for i in range(frames) for j in (i * slices // frames, min(i * slices // frames + 1, slices - 1))}


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("model", MODELS)
def test_the_latent_keeps_its_paper_shape(model, setting):
    # The embedding (HNeRV, DNeRV, T-NeRV) and every latent keep the paper-scale shape: 9x16 for 16:9
    # frames, 8x16 for 2:1 ones, HNeRV's 2x4 in its own 2:1 setting; the strides take up the frame size.
    p, c = paper(model, setting), cpu(model, setting)
    assert config_geometry(c)[1] == config_geometry(p)[1]
    assert len(config_geometry(c)[0]) == len(config_geometry(p)[0])


def test_dnerv_difference_embedding_keeps_its_relation_to_the_frame():
    with torch.device("meta"):
        big = create_model("dnerv", paper("dnerv", "setting1"))
        small = create_model("dnerv", cpu("dnerv", "setting1"))
    assert big.diff_h / 720 == small.diff_h / 144 == 1 / 16


def test_cpu_scale_frames_sizes_and_budgets():
    for name, (height, width, frames, budget, _) in CPU_SCALE.items():
        s = SETTINGS[name]
        assert width == 256 and height / width == pytest.approx(s.height / s.width, rel=0.02)
        per_frame = CPU_BUDGET_PER_FRAME * s.budget / s.num_frames
        assert budget == pytest.approx(per_frame * frames, rel=0.1)
    assert CPU_SCALE["setting2"][:2] == (128, 256)


@pytest.mark.parametrize("setting, preset", list(PUBLISHED.items()))
def test_paper_scale_runs_the_published_tnerv_configs_as_they_are(setting, preset):
    assert setting_config("tnerv", setting) == load_preset(preset).config()


@pytest.mark.parametrize("setting", ["davis", "mcl-jcv"])
def test_tnerv_with_fewer_frames_keeps_its_embedding_share(setting):
    tab6 = split_of(transmitted_size("tnerv", load_preset("tnerv-12.4m-720p").config()))
    config = paper("tnerv", setting)
    split = split_of(transmitted_size("tnerv", config))
    assert abs(split["embeddings"] - tab6["embeddings"]) < 0.02  # about 25%, as at 600 frames
    assert max(config.grid_resolutions) <= config.num_frames


def test_nerv_keeps_its_stem_share():
    from tnerv.models.nerv import _stem_share

    for setting in SETTINGS:
        assert abs(_stem_share(cpu("nerv", setting)) - _stem_share(paper("nerv", setting))) < 0.05


def test_ffnerv_size_knob_keeps_sane_grids():
    config = load_preset("ffnerv-12.4m-720p").config(height=144, width=256, num_frames=132, strides=(2, 2, 2, 2, 1))
    small = FFNeRV.scale_widths(config, 0.05)
    assert small.grid_channels == MIN_GRID_CHANNELS
    assert max(small.grid_resolutions) <= 132


@pytest.mark.parametrize("model", MODELS)
def test_small_presets_are_the_rule_at_setting1_for_32_frames_and_400k(model):
    # The bench's setting-1 CPU scale takes 16 frames (an hour for seven models); the presets that the
    # demo and small runs use are the same rule at 32 frames and 400k.
    preset = load_preset(f"{model}-s-cpu")
    height, width, frames, budget = 144, 256, 32, 400_000
    derived = cpu_config(model, "setting1", height, width, frames, budget)
    config = preset.config()
    assert (config.height, config.width, config.num_frames) == (height, width, frames)
    # The preset leaves the strides to the frame size ("auto"), which gives the rule's strides here.
    assert config_geometry(config) == config_geometry(derived)
    assert dataclasses.replace(config, strides=derived.strides) == derived
    counts = transmitted_size(model, config)
    assert abs(counts["transmitted"] / budget - 1) < 0.05
    if model == "hnerv":
        assert (config.encoder_width, preset.train["lr"]) == (64, 1e-3)
    if model == "tnerv":
        with torch.device("meta"):
            net = create_model("tnerv", config)
        assert [b.up[0].kernel_size[0] for b in net.blocks] == [1, 3, 5, 5, 5]
        assert math.isclose(split_of(counts)["embeddings"], 0.25, abs_tol=0.03)


def test_models_setting_prints_both_splits(capsys):
    assert main(["models", "--setting", "setting2", "--scale", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "decoder/grids/embeddings %" in out and "CPU scale: 128x256, 32 frames" in out
    for model in MODELS:
        line = next(line for line in out.splitlines() if line.startswith(f"{model} ") and "/" in line.split()[-1])
        assert line.split()[2] == format_split(transmitted_size(model, paper(model, "setting2")))
        assert line.split()[-1] == format_split(transmitted_size(model, cpu(model, "setting2")))
    assert main(["models", "--setting", "setting2", "--scale", "cpu", "--json"]) == 0
    rows = __import__("json").loads(capsys.readouterr().out)
    tnerv = next(r for r in rows if r["model"] == "tnerv")
    assert tnerv["paper"]["num_frames"] == 600 and tnerv["cpu"]["num_frames"] == 32
    assert set(tnerv["cpu"]["split"]) == {"decoder", "grids", "embeddings"}
    assert tnerv["parameters"] == tnerv["cpu"]["parameters"]


def test_bench_tables_carry_each_results_split():
    from tnerv.bench import tables
    from tnerv.bench.runner import split_record

    split = split_record({"decoder": 600, "grids": 160, "embeddings": 240, "transmitted": 1000})
    assert split == {"decoder": 60.0, "grids": 16.0, "embeddings": 24.0}
    records = [
        {"bench": "representation", "video": v, "method": m, "parameters": 1000, "psnr": q, "ms_ssim": 0.9,
         "split": split if m == "tnerv" else {"decoder": 100.0, "grids": 0.0, "embeddings": 0.0}}
        for v, m, q in [("bikes", "tnerv", 30.0), ("bikes", "nerv", 28.0), ("carphone", "tnerv", 31.0)]
    ]
    table = tables.quality_table(records, "psnr")
    assert table.columns == ["Model", "Size", tables.SPLIT_COLUMN, "bikes", "carphone", "Avg."]
    assert [row[2].text for row in table.rows] == ["60/16/24", "100/0/0"]
    assert table.rows[0][3].emphasis == "best"
    # Records from before the split was recorded keep the table as it was.
    assert tables.SPLIT_COLUMN not in tables.quality_table([dict(r, split=None) for r in records]).columns
