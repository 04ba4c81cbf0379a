"""Any video, no preset: geometry and size follow from the frame size and length (tnerv.models.auto)."""

import json

import numpy as np
import pytest
import torch

from tnerv.cli import main
from tnerv.compress import decode_file, encode_video
from tnerv.metrics import psnr
from tnerv.models import create_model, list_models, load_preset
from tnerv.models.auto import (
    MIN_BUDGET,
    PARAMETERS_PER_PIXEL,
    auto_config,
    choose_geometry,
    default_budget,
    describe,
    setting_for,
)
from tnerv.models.settings import setting_config
from tnerv.models.sizing import config_geometry, shapes_only
from tnerv.runs import VideoSpec, load_frames
from tnerv.video import pad_frames, write_frames

# (height, width): odd sizes that no stride product divides, square, 16:9 landscape and portrait, 2:1.
SIZES = [(17, 23), (64, 64), (144, 256), (256, 144), (128, 256), (90, 160)]


def generated_clip(height: int, width: int, frames: int = 4) -> np.ndarray:
    """Smooth moving colour patterns (N, H, W, 3) uint8: content a model can learn something of in one step."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    clip = [
        np.stack([128 + 100 * np.sin(x / 7 + t / 2), 128 + 100 * np.cos(y / 5 - t / 3), (3 * x + 2 * y + 20 * t) % 256], -1)
        for t in range(frames)
    ]
    return np.stack(clip).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("height, width", SIZES)
def test_every_model_encodes_any_size_without_preset_or_size(tmp_path, height, width):
    write_frames(generated_clip(height, width), tmp_path / "clip")
    original = load_frames(VideoSpec(str(tmp_path / "clip")))
    for name in list_models():
        chosen = []
        encoded = encode_video(
            VideoSpec(str(tmp_path / "clip")), tmp_path / f"{name}.tnrv", model=name,
            train_overrides={"epochs": 1, "batch_size": 4}, progress=False, on_config=chosen.append,
        )
        assert len(chosen) == 1 and chosen[0] == encoded.chosen
        coded_h, coded_w = encoded.chosen["size"]
        assert coded_h >= height and coded_w >= width and coded_h <= height + max(1, 0.06 * height)
        decode_file(encoded.path, tmp_path / f"{name}-decoded")
        decoded = load_frames(VideoSpec(str(tmp_path / f"{name}-decoded")))
        assert decoded.shape == original.shape, name
        measured = psnr(decoded.float() / 255, original.float() / 255).mean().item()
        assert measured == pytest.approx(encoded.psnr, abs=1e-4), name


def test_the_default_geometry_at_paper_sizes_is_the_paper_presets():
    # 600 frames of 1280x720 (setting 1) and 1920x960 (setting 2): strides, latent, embeddings, grids.
    for setting, (height, width) in (("setting1", (720, 1280)), ("setting2", (960, 1920))):
        assert setting_for(height, width) == setting
        for name in list_models():
            config, geometry = auto_config(name, height, width, 600)
            paper = setting_config(name, setting)
            assert not geometry.padded
            assert config_geometry(config) == config_geometry(paper), (setting, name)
            for field in ("grid_resolutions", "fusion_block", "diff_decoder_stride"):
                assert getattr(config, field, None) == getattr(paper, field, None), (setting, name, field)
            counts, paper_counts = describe(name, config), describe(name, paper)
            assert counts.get("embedding", [0])[1:] == paper_counts.get("embedding", [0])[1:]
            # The default size at setting 1 is the paper's; every component keeps its share (5 points).
            if setting == "setting1":
                assert abs(counts["parameters"]["transmitted"] / 12.4e6 - 1) < 0.03
            for part, share in paper_counts["split"].items():
                assert abs(counts["split"][part] - share) <= 5, (setting, name, part)


def test_the_geometry_rule():
    # Portrait frames get the transposed latent; 16:9 at 1080p the paper's 1080p strides.
    assert choose_geometry(1920, 1080, 5, 9).strides == (5, 3, 2, 2, 2)
    portrait = choose_geometry(1920, 1080, 5, 9)
    assert (portrait.coded_height // 120, portrait.coded_width // 120) == (16, 9)
    # 854x480 has no common stride product: padded by a few pixels, never more than 6% a side.
    odd = choose_geometry(480, 854, 5, 9)
    assert odd.padded and odd.coded_height % np.prod(odd.strides) == 0 and odd.coded_width % np.prod(odd.strides) == 0
    assert odd.coded_height <= 480 * 1.06 and odd.coded_width <= 854 * 1.06
    assert setting_for(128, 256) == "setting2" and setting_for(256, 128) == "setting2"
    assert setting_for(1080, 1920) == setting_for(64, 64) == setting_for(480, 640) == "setting1"


def test_the_default_size_follows_the_pixels():
    assert default_budget(600, 720, 1280) == 12_400_000
    assert default_budget(300, 720, 1280) == 6_200_000
    assert default_budget(4, 17, 23) == MIN_BUDGET
    assert PARAMETERS_PER_PIXEL * 600 * 1080 * 1920 == pytest.approx(27.9e6)


def test_padding_repeats_the_border_and_quality_ignores_it():
    frames = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    padded = pad_frames(frames, 8, 10)
    assert padded.dtype == torch.uint8 and padded.shape == (2, 3, 8, 10)
    assert torch.equal(padded[..., :5, :7], frames)
    assert torch.equal(padded[..., 7, :7], frames[..., 4, :]) and torch.equal(padded[..., :5, 9], frames[..., :, 6])


def test_a_preset_whose_strides_cannot_reach_the_video_is_rederived_at_its_size(tmp_path, capsys):
    # tnerv-s-cpu is made for 128x256; on 144x256 frames its strides are re-derived, its size kept.
    write_frames(generated_clip(144, 256, 2), tmp_path / "clip")
    code = main(["models", "--for", str(tmp_path / "clip"), "--preset", "tnerv-s-cpu", "--json"])
    (row,) = json.loads(capsys.readouterr().out)
    preset = load_preset("tnerv-s-cpu")
    with shapes_only():
        own = create_model("tnerv", preset.config(num_frames=2)).parameter_counts()["transmitted"]
    assert code == 0 and row["size"] == [144, 256]
    assert abs(row["parameters"]["transmitted"] / own - 1) < 0.1


def test_encode_needs_nothing_but_input_and_output(tmp_path, capsys):
    write_frames(generated_clip(36, 64), tmp_path / "clip")
    out = tmp_path / "out.tnrv"
    code = main(["encode", str(tmp_path / "clip"), "-o", str(out), "--epochs", "1", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0 and out.exists()
    # The chosen config is announced before training: model, geometry, size and split.
    assert printed.startswith("tnerv: 4 frames of 36x64; strides") and "parameters (decoder/grids/embeddings" in printed
    assert main(["decode", str(out), "-o", str(tmp_path / "decoded")]) == 0
    assert load_frames(VideoSpec(str(tmp_path / "decoded"))).shape == (4, 3, 36, 64)


def test_a_padded_run_evaluates_again_on_the_original_pixels(tmp_path, capsys):
    write_frames(generated_clip(17, 23, 2), tmp_path / "clip")
    run = tmp_path / "run"
    assert main(["fit", str(tmp_path / "clip"), "--out", str(run), "--model", "nerv", "--epochs", "1", "--quiet", "--json"]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert fitted["chosen"]["padded_from"] == [17, 23] and fitted["chosen"]["size"] == [18, 24]
    assert main(["eval", str(run), "--frames-out", str(tmp_path / "frames"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["psnr"] == pytest.approx(fitted["psnr"], abs=1e-4)
    assert load_frames(VideoSpec(str(tmp_path / "frames"))).shape == (2, 3, 17, 23)
