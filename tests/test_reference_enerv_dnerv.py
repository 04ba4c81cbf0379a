"""The reference-exact E-NeRV and DNeRV presets and the switches that reproduce their official code.

The counts were taken from the official models built on the CPU with the flags named in each test."""

import pytest
import torch

from tnerv.errors import TnervError
from tnerv.models import create_model, load_preset
from tnerv.models.layers import AdaIN, ConvNeXtBlock, ConvNeXtEncoder, ModulatedDecoder, reduced_widths


def build(name: str, **overrides):
    preset = load_preset(name)
    with torch.device("meta"):
        return create_model(preset.model, preset.config(**overrides))


def test_enerv_ref_cpu_has_the_official_count():
    # kyleleey/E-NeRV, E_NeRV_Generator with cfgs/E-NeRV-bunny.yaml and pos_l = xypos_l = pos_l_tm = 40,
    # stem_dim_num "128", fc_hw_dim "9_16_18", block_dim 64, mlp_dim 32, expansion 3, reduction 2,
    # lower_width 24, stride_list [2, 2, 2, 2]: 342,341 parameters printed, of which 288 are the fixed
    # 2x9x16 token coordinates (an nn.Parameter without gradient, derived, not transmitted): 342,053.
    model = build("enerv-ref-cpu")
    counts = model.parameter_counts()
    assert counts["transmitted"] == counts["decoder"] == 342_053
    assert counts["embeddings"] == counts["grids"] == counts["encoder"] == 0
    first, *rest = model.decoder.blocks
    widths = [first.up[2].out_channels] + [b.up[0].out_channels // 4 for b in rest]
    assert widths == [54, 27, 24, 24]  # 18 * 3, then // 2 with the lower width 24
    preset = load_preset("enerv-ref-cpu")
    assert preset.train == {
        "epochs": 60, "batch_size": 1, "lr": 5e-4, "betas": [0.5, 0.999], "warmup": 0.2, "warmup_start": 0.1,
        "loss": "fusion", "eval_every": 10,
    }


def test_dnerv_ref_cpu_has_the_official_count():
    # QiZhao-NJU/Neural-Representation-for-Video-via-Differential-Input-and-Pyramidal-Architecture,
    # D_NeRV_Generator with cfgs/DNeRV.yaml and height 128, width 256, stride_list = encoder_list
    # [4, 2, 2, 2, 2], kernel_list [1, 3, 5, 5, 5], c1 64, d 16, c2 42, diff_enc_list [4, 2, 2],
    # diff_dec_stride [4], diff_dec_kernel [3]: decoder 333,252 (enc_c2_layer, decoder, head, difference
    # decoder, content unit); 64 frames of embeddings 16x2x4 + 2x8x16 = 24,576; encoders 402,066, of which
    # 1,536 are LayerNorms and layer scales the official blocks build but never apply (not built here).
    model = build("dnerv-ref-cpu")
    counts = model.parameter_counts()
    assert counts["decoder"] == 333_252
    assert counts["embeddings"] == 64 * (16 * 2 * 4 + 2 * 8 * 16) == 24_576
    assert counts["transmitted"] == 357_828
    assert counts["encoder"] == 402_066 - 1_536
    assert (model.latent_h, model.latent_w, model.diff_h, model.diff_w) == (2, 4, 8, 16)
    assert model.diff_strides == (4, 2, 2)
    assert [b[0].out_channels // s**2 for b, s in zip(model.blocks, model.strides)] == [35, 29, 24, 20, 16]
    assert model.fusion.p_content.in_channels == 24 and model.diff_decoder[0].out_channels == 29
    assert load_preset("dnerv-ref-cpu").train["grad_clip"] == 0.1


@pytest.mark.parametrize("name", ["enerv-ref-cpu", "dnerv-ref-cpu"])
def test_reference_presets_decode_a_frame(name):
    preset = load_preset(name)
    torch.manual_seed(0)
    model = create_model(preset.model, preset.config(num_frames=4)).eval()
    h, w = preset.model_config["height"], preset.model_config["width"]
    idx = torch.tensor([0, 3])
    with torch.no_grad():
        if model.needs_frames:
            video = torch.rand(4, 3, h, w)
            model.encode_frames(lambda i: video[i])
        out = model(idx)["output"]
    assert out.shape == (2, 3, h, w) and 0 <= out.min() and out.max() <= 1


def test_adain_reference_form_differs_and_keeps_the_size():
    torch.manual_seed(0)
    x, z = torch.randn(2, 3, 5, 7), torch.randn(2, 4)
    ours, ref = AdaIN(3, 4), AdaIN(3, 4, activation="gelu", scale_offset=0.0)
    ref.load_state_dict(ours.state_dict())
    gamma, beta = torch.nn.functional.gelu(ref.affine(z)).chunk(2, dim=1)
    x_norm = torch.nn.functional.instance_norm(x)
    torch.testing.assert_close(ref(x, z), x_norm * gamma[:, :, None, None] + beta[:, :, None, None])
    assert not torch.allclose(ref(x, z), ours(x, z))
    assert sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in ours.parameters())


def test_enerv_defaults_are_the_reference_and_cnerv_is_unchanged():
    enerv = build("enerv-ref-cpu").decoder.blocks[0].adain
    assert isinstance(enerv.act, torch.nn.GELU) and enerv.scale_offset == 0.0
    cnerv = build("cnerv-s-cpu").decoder.blocks[0].adain
    assert isinstance(cnerv.act, torch.nn.Identity) and cnerv.scale_offset == 1.0
    # ModulatedDecoder's own defaults are the (1 + gamma) form without activation (C-NeRV's, T-NeRV's).
    plain = ModulatedDecoder(8, [8, 8], (2, 2), 3, 6, (4,)).blocks[1].adain
    assert isinstance(plain.act, torch.nn.Identity) and plain.scale_offset == 1.0


def test_enerv_switches_change_the_output_not_the_size():
    preset = load_preset("enerv-ref-cpu")
    torch.manual_seed(0)
    ref = create_model("enerv", preset.config()).eval()
    other = create_model("enerv", preset.config(adain_activation="none", adain_scale_offset=1.0)).eval()
    other.load_state_dict(ref.state_dict())
    idx = torch.tensor([1])
    with torch.no_grad():
        assert not torch.allclose(ref(idx)["output"], other(idx)["output"])
    assert ref.parameter_counts() == other.parameter_counts()


def test_floor_rounding_is_python_floor_division():
    assert reduced_widths(147, (2, 2), 2, 24, "floor") == [147, 73]
    assert reduced_widths(147, (2, 2), 2, 24) == [147, 74]
    # DNeRV's official c2 92: 76, 63, 52, 43, 35 (HNeRV's rounding would give 77, 64, 53, 44, 37).
    assert reduced_widths(92, (1, 5, 4, 4, 3, 2), 1.2, 1, "floor")[1:] == [76, 63, 52, 43, 35]
    with pytest.raises(TnervError, match="width rounding"):
        reduced_widths(8, (1, 2), 2, 1, "ceil")


def test_dnerv_encoder_style():
    block = ConvNeXtBlock(8, layer_scale=0.0, norm=False)
    assert block.gamma is None and isinstance(block.norm, torch.nn.Identity)
    enc = ConvNeXtEncoder((4, 2), (8, 8), (1, 1), layer_scale=0.0, block_norm=False, norm_after_conv=True,
                          out_channels=3, convnext_init=False)
    assert [type(m).__name__ for m in enc.downsample[1]] == ["Conv2d", "ChannelsFirstLayerNorm"]
    assert enc(torch.rand(1, 3, 16, 24)).shape == (1, 3, 2, 3)
    ref = build("dnerv-ref-cpu")
    hnerv = build("dnerv-ref-cpu", encoder_style="hnerv")
    assert ref.parameter_counts()["transmitted"] == hnerv.parameter_counts()["transmitted"]
    assert ref.encoder.proj.out_channels == 16 and hnerv.encoder.proj is None
    with pytest.raises(TnervError, match="encoder_style"):
        build("dnerv-ref-cpu", encoder_style="resnet")


def test_dnerv_difference_channels_are_interleaved_as_the_reference():
    preset = load_preset("dnerv-ref-cpu")
    model = create_model("dnerv", preset.config(num_frames=3, height=64, width=128))
    video = torch.rand(3, 3, 64, 128)
    seen = {}
    model.diff_encoder.register_forward_pre_hook(lambda _, args: seen.setdefault("diff", args[0]))
    with torch.no_grad():
        model.compute_embeddings(torch.tensor([1]), None, lambda i: video[i])
    prev, nxt = video[1] - video[0], video[2] - video[1]
    torch.testing.assert_close(seen["diff"][0, 0::2], prev)
    torch.testing.assert_close(seen["diff"][0, 1::2], nxt)


def test_dnerv_defaults_are_the_official_960p_model():
    # cfgs/DNeRV.yaml as released (1920x960, c2 92, diff_enc_list [4, 3, 2]): decoder 3,405,368; embeddings
    # 16x2x4 + 2x40x80 per frame (600 frames); encoders 543,058 less the 1,536 unused LayerNorm/layer-scale values.
    with torch.device("meta"):
        model = create_model("dnerv", {"num_frames": 600})
    counts = model.parameter_counts()
    assert counts["decoder"] == 3_405_368
    assert counts["embeddings"] == 600 * (16 * 2 * 4 + 2 * 40 * 80)
    assert counts["encoder"] == 543_058 - 1_536
    assert [b[0].out_channels // s**2 for b, s in zip(model.blocks, model.strides)] == [76, 63, 52, 43, 35]
