"""The baselines (E-NeRV, C-NeRV, FFNeRV, HNeRV, DNeRV), the size solver and the paper's settings.

Full-size models are only built on the meta device; the fitted models are tiny."""

import pytest
import torch

from tnerv.errors import TnervError
from tnerv.metrics import psnr
from tnerv.models import create_model, list_models, list_presets, load_preset, make_config, model_class
from tnerv.models.budget import base_config, setting_config, size_table
from tnerv.models.counting import transmitted_size
from tnerv.models.layers import ExpandingUpsampleBlock, GatedFusion, TransformerBlock
from tnerv.models.scaling import solve_for_budget
from tnerv.models.settings import SETTINGS
from tnerv.train import TrainConfig, fit

BASELINES = ["nerv", "enerv", "cnerv", "ffnerv", "hnerv", "dnerv"]
NEW = ["enerv", "cnerv", "ffnerv", "hnerv", "dnerv"]

# Tiny configs that learn 8 frames of 32x64 in a few seconds (50 epochs, batch 1), and the learning rate
# each needs then.
TINY = {
    "nerv": (dict(pe_levels=16, stem_dims=[64], channels=16, num_blocks=3, reduction=1.5, lower_width=16), 5e-3),
    "enerv": (
        dict(pe_levels=16, xy_pe_levels=8, num_blocks=3, stem_dims=[32], token_dim=32, mlp_dim=32, heads=[1, 2],
             head_dim=16, channels=16, expansion=2.0, reduction=1.5, lower_width=16, modulation_dims=[32, 32]),
        5e-3,
    ),
    "cnerv": (
        dict(pe_levels=8, num_blocks=3, stem_channels=32, channels=16, expansion=2.0, reduction=1.5, lower_width=16,
             modulation_dims=[32, 32]),
        5e-3,
    ),
    "ffnerv": (dict(grid_resolutions=[4, 8], grid_channels=8, num_blocks=3, reduction=1.5, lower_width=16), 5e-3),
    "hnerv": (dict(num_blocks=3, target_latent_height=4, embed_channels=8, encoder_width=16, channels=32), 5e-3),
    "dnerv": (
        dict(num_blocks=3, target_latent_height=4, embed_channels=8, encoder_width=16, diff_encoder_width=8,
             fusion_block=0, diff_decoder_stride=2, channels=32),
        2e-3,  # DNeRV's sigmoid output saturates at higher rates in so short a fit
    ),
}


def tiny_model(name: str, frames: torch.Tensor):
    n, _, h, w = frames.shape
    return create_model(name, dict(TINY[name][0], strides="auto", height=h, width=w, num_frames=n))


def counts(name: str, config) -> dict[str, int]:
    return transmitted_size(name, config)


# ------------------------------------------------------------------------------------------------
# Registry, presets and reference structures.


def test_every_baseline_is_registered_with_its_presets():
    assert set(BASELINES) <= set(list_models())
    for name, preset in [
        ("enerv", "enerv-12.5m-720p"), ("cnerv", "cnerv-12.5m-720p"), ("ffnerv", "ffnerv-12.4m-720p"),
        ("hnerv", "hnerv-3.0m-960p"), ("dnerv", "dnerv-3.0m-960p"),
    ]:
        assert {preset, f"{name}-s-cpu"} <= set(list_presets(name))


@pytest.mark.parametrize("name", NEW)
def test_train_defaults_are_valid_training_options(name):
    config = TrainConfig.from_dict(dict(model_class(name).train_defaults))
    assert config.lr > 0


def test_reference_recipes():
    assert model_class("hnerv").train_defaults["loss"] == "l2" and model_class("hnerv").train_defaults["lr"] == 1e-3
    assert model_class("dnerv").train_defaults["grad_clip"] == 0.1
    for name in ("enerv", "ffnerv"):
        assert model_class(name).train_defaults["betas"] == (0.5, 0.999)


def test_enerv_720p_preset_is_about_12_5m():
    config = load_preset("enerv-12.5m-720p").config()
    c = counts("enerv", config)
    # Tokens: PE(x,y) 320 -> 256, transformers (1 and 8 heads of 64), temporal MLPs, AdaIN linears,
    # stages 196 -(x5, via 49 channels)-> 588 -> 294 -> 147 -> 96 -> 96, 1x1 head.
    assert c["transmitted"] == 12_490_314
    assert abs(c["transmitted"] / 12.5e6 - 1) < 0.01
    with torch.device("meta"):
        model = create_model("enerv", config)
    assert model.strides == (5, 2, 2, 2, 2) and (model.latent_h, model.latent_w) == (9, 16)
    widths = [b.up[-2].out_channels if isinstance(b.up, ExpandingUpsampleBlock) else b.up[0].out_channels // 4
              for b in model.decoder.blocks]
    assert widths == [588, 294, 147, 96, 96]


def test_cnerv_720p_preset_is_about_12_5m():
    assert abs(counts("cnerv", load_preset("cnerv-12.5m-720p").config())["transmitted"] / 12.5e6 - 1) < 0.01


def test_ffnerv_representation_preset_is_about_12_4m():
    c = counts("ffnerv", load_preset("ffnerv-12.4m-720p").config())
    # Grids (64+128+256+512) x 39 x 9 x 16; blocks 156 -> 156 -> 96 x4; heads 96 -> 12 and 96 -> 5.
    assert c["grids"] == 960 * 39 * 9 * 16
    assert c["transmitted"] == 12_408_509
    assert abs(c["transmitted"] / 12.4e6 - 1) < 0.01


def test_hnerv_3m_at_960p_solves_fc_dim_about_91():
    config, size = solve_for_budget("hnerv", load_preset("hnerv-3.0m-960p").config(), 3_000_000)
    assert abs(size / 3e6 - 1) < 0.01
    assert abs(config.channels - 91) <= 1
    with torch.device("meta"):
        model = create_model("hnerv", config)
    assert model.strides == (5, 4, 4, 3, 2) and (model.latent_h, model.latent_w) == (2, 4)
    assert [b[0].kernel_size[0] for b in model.blocks] == [1, 3, 5, 5, 5]
    widths = [config.channels, *config.block_channels]
    assert all(1.1 < a / b < 1.3 for a, b in zip(widths, widths[1:]))  # reduction 1.2
    assert model.parameter_counts()["embeddings"] == 600 * 16 * 2 * 4
    # HNeRV's own rule at the preset's width: round(w / 1.2) per block, the first included.
    with torch.device("meta"):
        auto = create_model("hnerv", load_preset("hnerv-3.0m-960p").config())
    assert [b[0].out_channels // b[1].upscale_factor**2 for b in auto.blocks] == [77, 64, 53, 44, 37]


def test_dnerv_geometry_follows_the_supplementary():
    with torch.device("meta"):
        reference = create_model("dnerv", make_config("dnerv", {}))  # 2x40x80 difference embeddings
        small = create_model("dnerv", load_preset("dnerv-3.0m-960p").config())  # C.3: 2x10x20, after block 2
        wide = create_model("dnerv", setting_config("dnerv", "setting1"))  # C.2: 2x45x80
    assert (reference.diff_h, reference.diff_w, reference.diff_strides) == (40, 80, (4, 3, 2))
    assert (small.diff_h, small.diff_w, small.config.fusion_block) == (10, 20, 1)
    assert (wide.diff_h, wide.diff_w, wide.latent_h, wide.latent_w) == (45, 80, 9, 16)
    c = small.parameter_counts()
    assert c["embeddings"] == 600 * (16 * 2 * 4 + 2 * 10 * 20)
    assert abs(c["transmitted"] / 3e6 - 1) < 0.01
    with pytest.raises(TnervError, match="diff_decoder_stride"):
        create_model("dnerv", {"diff_decoder_stride": 7})


def test_new_blocks():
    block = TransformerBlock(32, heads=2, head_dim=8, mlp_dim=16)
    assert block(torch.rand(3, 5, 32)).shape == (3, 5, 32)
    assert isinstance(TransformerBlock(64, 1, 64, 16).proj, torch.nn.Identity)
    up = ExpandingUpsampleBlock(16, 48, 5)
    assert up(torch.rand(1, 16, 2, 3)).shape == (1, 48, 10, 15)
    fusion = GatedFusion(4)
    c = torch.rand(2, 4, 6, 6)
    assert fusion(c, torch.rand(2, 4, 6, 6)).shape == c.shape


# ------------------------------------------------------------------------------------------------
# Size solver and settings.


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_every_baseline_meets_each_setting_within_3_percent(setting):
    s = SETTINGS[setting]
    rows = size_table(setting, models=BASELINES)
    for name, row in rows.items():
        assert abs(row["transmitted"] / s.budget - 1) < 0.03, (name, row)
        config = setting_config(name, setting)
        assert (config.height, config.width, config.num_frames) == (s.height, s.width, s.num_frames)


def test_settings_keep_each_models_split():
    # Content-agnostic models keep their component split (C.3); content-aware ones keep the embedding
    # shape of the frame size and give the rest to the decoder (C.2).
    ref = counts("ffnerv", load_preset("ffnerv-12.4m-720p").config())
    small = size_table("setting2", models=["ffnerv"])["ffnerv"]
    assert abs(small["grids"] / small["transmitted"] - ref["grids"] / ref["transmitted"]) < 0.05
    for name, shape in [("hnerv", (16, 9, 16)), ("dnerv", (16, 9, 16))]:
        config = setting_config(name, "setting1")
        with torch.device("meta"):
            model = create_model(name, config)
        assert model.embeddings.shape[1:] == shape
    assert size_table("setting2", models=["hnerv"])["hnerv"]["embeddings"] == 600 * 16 * 2 * 4


def test_settings_take_another_frame_count():
    config = setting_config("hnerv", "setting1", num_frames=300)
    assert config.num_frames == 300
    assert abs(counts("hnerv", config)["transmitted"] / 12.4e6 - 1) < 0.03


def test_solver_reports_the_size_reached_and_refuses_impossible_budgets():
    config = base_config("enerv", "setting2")
    solved, size = solve_for_budget("enerv", config, 1_000_000)
    assert size == counts("enerv", solved)["transmitted"]
    assert abs(size / 1e6 - 1) < 0.01
    with pytest.raises(TnervError, match="cannot be scaled"):
        solve_for_budget("hnerv", load_preset("hnerv-3.0m-960p").config(), 50_000)  # embeddings alone are 76,800
    with pytest.raises(TnervError, match="unknown setting"):
        setting_config("nerv", "setting3")


def test_tnerv_goes_through_the_solver_too():
    assert "tnerv" in list_models()  # a missing T-NeRV is a failure, not a skip
    config = base_config("tnerv", "mcl-jcv")
    _, size = solve_for_budget("tnerv", config, 5_000_000, tolerance=0.03)
    assert abs(size / 5e6 - 1) < 0.03


@pytest.mark.parametrize("name", NEW)
def test_scale_widths_grows_the_model(name):
    config = TINY[name][0]
    config = make_config(name, dict(config, strides="auto", height=32, width=64, num_frames=8))
    cls = model_class(name)
    sizes = [counts(name, cls.scale_widths(config, f))["transmitted"] for f in (0.5, 1.0, 2.0)]
    assert sizes[0] < sizes[1] < sizes[2]


# ------------------------------------------------------------------------------------------------
# Any frame size.


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("hw", [(144, 176), (96, 160)])
def test_any_frame_size_with_auto_strides(name, hw):
    config = dict(TINY[name][0], strides="auto", height=hw[0], width=hw[1], num_frames=5)
    if name == "dnerv":
        config.update(fusion_block=1, diff_decoder_stride="auto")
    model = create_model(name, config).eval()
    frames = torch.rand(5, 3, *hw)
    if model.needs_frames:
        model.encode_frames(lambda idx: frames[idx])
    with torch.no_grad():
        out = model(torch.arange(2), frames[:2])["output"]
    assert out.shape == (2, 3, *hw) and 0 <= out.min() and out.max() <= 1


# ------------------------------------------------------------------------------------------------
# Fitting a real clip, and decoding from the transmitted state.


@pytest.fixture(scope="module")
def fitted(tiny_clip):
    """Every baseline fitted to 8 frames of bikes at 32x64: (model, PSNR)."""
    out = {}
    for name in NEW:
        torch.manual_seed(0)
        model = tiny_model(name, tiny_clip)
        recipe = {**model_class(name).train_defaults, "epochs": 50, "lr": TINY[name][1], "warmup": 0.1}
        recipe["eval_every"] = 50
        out[name] = (model, fit(model, tiny_clip, TrainConfig.from_dict(recipe), progress=False).report.psnr)
    return out


@pytest.mark.parametrize("name", NEW)
def test_fits_a_real_clip_well_above_the_mean_frame(name, fitted, tiny_clip):
    frames = tiny_clip.float() / 255
    mean_frame = psnr(frames.mean(0, keepdim=True).expand_as(frames), frames).mean().item()
    assert fitted[name][1] > mean_frame + 4


@pytest.mark.parametrize("name", NEW)
def test_any_frame_range_decodes_from_the_transmitted_state(name, fitted, tiny_clip):
    model = fitted[name][0].eval()
    state = model.transmitted_state()
    assert not any(k.startswith(("encoder.", "diff_encoder.", "frame_buffer")) for k in state)
    decoder = model_class(name).from_transmitted(model.config, state)
    assert decoder.parameter_counts()["transmitted"] == model.parameter_counts()["transmitted"]
    n = model.config.num_frames
    full = torch.cat([out for _, out in decoder.reconstruct(torch.arange(n), None, batch_size=3)])
    assert full.shape == (n, 3, 32, 64)
    for a, b in [(0, 2), (3, 6), (5, 8)]:
        part = torch.cat([out for _, out in decoder.reconstruct(torch.arange(a, b), None, batch_size=2)])
        assert (part - full[a:b]).abs().max() < 1e-5
    # The fitted model (encoder side included) decodes the same frames.
    frames = tiny_clip.float() / 255
    direct = torch.cat([out for _, out in model.reconstruct(torch.arange(n), lambda idx: frames[idx], batch_size=4)])
    assert (direct - full).abs().max() < 1e-5


def test_content_adaptive_embeddings_follow_training(fitted, tiny_clip):
    model = fitted["hnerv"][0]
    frames = tiny_clip.float() / 255
    model.train()
    model.after_step(torch.arange(2), {})
    assert not model.embeddings_fresh.any()  # stale after a step: transmitted_state recomputes them
    model.encode_frames(lambda idx: frames[idx])
    assert model.embeddings_fresh.all()
    with torch.no_grad():
        assert torch.allclose(model.embeddings[:3], model.encoder(frames[:3]), atol=1e-6)
    model.eval()


@pytest.mark.parametrize("name", ["ffnerv", "hnerv", "dnerv"])
def test_an_interrupted_fit_resumes_exactly(name, tiny_clip, tmp_path):
    config = TrainConfig(epochs=3, batch_size=2, lr=TINY[name][1], checkpoint_every=1, eval_every=3, seed=5)
    torch.manual_seed(0)
    straight = fit(tiny_model(name, tiny_clip), tiny_clip, config, _mkdir(tmp_path / "a"), progress=False)

    def crash(epoch: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(name, tiny_clip), tiny_clip, config, _mkdir(tmp_path / "b"), progress=False, on_epoch_end=crash)
    torch.manual_seed(1)  # another initialisation: everything must come from the checkpoint
    resumed = fit(tiny_model(name, tiny_clip), tiny_clip, config, tmp_path / "b", resume=True, progress=False)
    assert resumed.report.psnr == pytest.approx(straight.report.psnr, abs=1e-6)


def _mkdir(path):
    path.mkdir()
    return path
