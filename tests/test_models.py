import pytest
import torch

from tnerv.errors import TnervError
from tnerv.models import VideoINR, create_model, list_models, list_presets, load_preset, make_config, model_class
from tnerv.models.layers import PositionalEncoding, reduced_widths
from tnerv.models.registry import model_card, register_model
from tnerv.models.strides import derive_strides, latent_shape, split_into_strides


def test_registry_lists_nerv_and_its_presets():
    assert "nerv" in list_models()
    assert {"nerv-12.5m-720p", "nerv-s-cpu"} <= set(list_presets("nerv"))


def test_every_model_has_a_card_whose_preset_is_its_own():
    for name in list_models():
        card = model_card(name)
        assert card is model_class(name).card and load_preset(card.reference_preset).model == name
    assert model_card("x265") is None


def test_a_model_without_a_card_is_refused_where_it_is_defined():
    class Bare(VideoINR):
        name = "bare"

    with pytest.raises(TypeError, match="no card"):
        register_model(Bare)
    assert "bare" not in list_models()


def test_nerv_720p_preset_is_nerv_l_size():
    preset = load_preset("nerv-12.5m-720p")
    with torch.device("meta"):
        model = create_model("nerv", preset.config())
    counts = model.parameter_counts()
    # NeRV-L: stem 160->512->9*16*112, blocks 112->112 (x5), 112->96 (x2), 96->96 (x2) x3, 1x1 head.
    assert counts["transmitted"] == 12_565_523
    assert abs(counts["transmitted"] / 12.5e6 - 1) < 0.01
    assert counts["encoder"] == counts["grids"] == counts["embeddings"] == 0
    assert model.strides == (5, 2, 2, 2, 2) and (model.latent_h, model.latent_w) == (9, 16)


def test_nerv_output_shape_and_range():
    model = create_model("nerv", load_preset("nerv-s-cpu").config(height=64, width=128, num_frames=4))
    out = model(torch.arange(3))["output"]
    assert out.shape == (3, 3, 64, 128)
    assert 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize(
    "hw, blocks, target, strides, latent",
    [
        ((720, 1280), 5, 9, (5, 2, 2, 2, 2), (9, 16)),
        ((1080, 1920), 5, 9, (5, 3, 2, 2, 2), (9, 16)),
        ((960, 1920), 5, 8, (5, 3, 2, 2, 2), (8, 16)),
        ((128, 256), 4, 9, (2, 2, 2, 2), (8, 16)),
        ((144, 176), 5, 9, (2, 2, 2, 2, 1), (9, 11)),
    ],
)
def test_strides_follow_the_frame_size(hw, blocks, target, strides, latent):
    assert derive_strides(*hw, blocks, target) == (strides, latent)


def test_split_into_strides():
    assert split_into_strides(80, 5) == (5, 2, 2, 2, 2)
    assert split_into_strides(128, 5) == (4, 4, 2, 2, 2)
    assert split_into_strides(7, 5) is None
    assert split_into_strides(2**12, 5) is None


def test_unreachable_size_names_the_nearest_sizes():
    with pytest.raises(TnervError, match=r"multiples of 80.*720x1280"):
        latent_shape(700, 1280, (5, 2, 2, 2, 2))
    with pytest.raises(TnervError, match="cannot be reached"):
        create_model("nerv", {"height": 272, "width": 640, "num_frames": 8})


def test_unknown_names_are_clear_errors():
    with pytest.raises(TnervError, match=r"unknown model 'nerf'.*did you mean 'nerv'"):
        create_model("nerf")
    with pytest.raises(TnervError, match="unknown preset"):
        load_preset("nerv-99m")
    with pytest.raises(TnervError, match="unknown config field 'chanels'"):
        make_config("nerv", {"chanels": 3})


def test_config_round_trips_through_plain_data():
    from tnerv.models import config_to_dict

    config = load_preset("nerv-12.5m-720p").config()
    assert make_config("nerv", config_to_dict(config)) == config


def test_positional_encoding_values():
    pe = PositionalEncoding(base=2.0, levels=3)
    out = pe(torch.tensor([0.25]))
    angles = torch.tensor([1.0, 2.0, 4.0]) * torch.pi * 0.25
    assert torch.allclose(out[0], torch.cat([angles.sin(), angles.cos()]), atol=1e-6)


def test_reduced_widths():
    assert reduced_widths(112, (5, 2, 2, 2, 2), 2.0, 96) == [112, 96, 96, 96, 96]
    assert reduced_widths(100, (4, 2, 1, 2), 1.2, 12) == [100, 83, 83, 69]
