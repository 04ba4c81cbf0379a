"""T-NeRV: paper configurations and their sizes, budget scaling, ablations, fitting a real clip,
the transmitted state and range decoding."""

import gc
import json

import pytest
import torch

from tnerv.errors import TnervError
from tnerv.metrics import psnr
from tnerv.models import config_to_dict, create_model, list_models, list_presets, load_preset, make_config
from tnerv.models.scaling import solve_ablated_for_budget, solve_for_budget
from tnerv.models.tnerv import ABLATIONS, TNeRV, TNeRVConfig, apply_ablations, block_widths, kernel_sizes
from tnerv.train import TrainConfig, VideoFrames, fit, fusion_loss
from tnerv.video import resize_and_crop

# A T-NeRV small enough to train in a fraction of a second on the 8-frame 32x64 clip.
TINY = dict(
    height=32, width=64, num_frames=8, strides="auto", num_blocks=3, target_latent_height=4, pe_levels=16,
    embed_channels=4, encoder_channels=(8, 8), encoder_blocks=(1, 1, 1), augment_dims=(16,),
    grid_resolutions=(2, 4), grid_channels=4, temp_mlp_dims=(16, 16), pre_channels=16, flow_head_block=-2,
)
QUICK = dict(epochs=1, batch_size=2, lr=1e-3, eval_every=1, checkpoint_every=1)


def tiny(**overrides) -> TNeRV:
    return create_model("tnerv", TNeRVConfig(**{**TINY, **overrides}))


def meta_counts(preset: str, **overrides) -> tuple[TNeRV, dict[str, int]]:
    with torch.device("meta"):
        model = create_model("tnerv", load_preset(preset).config(**overrides))
    return model, model.parameter_counts()


def decode(model: TNeRV, idx: torch.Tensor, frames=None, batch_size: int = 1) -> torch.Tensor:
    return torch.cat([out for _, out in model.reconstruct(idx, frames, batch_size)])


# ------------------------------------------------------------------------------------------------
# Paper configurations (supplementary Tabs. 6-8) on the meta device.


@pytest.mark.parametrize(
    "preset, nominal, counts, geometry",
    [
        # decoder / grids / embeddings at 600 frames, as docs/models.md's arithmetic gives them
        ("tnerv-12.4m-720p", 12.4e6, (7_269_936, 1_935_360, 3_024_000), ((5, 2, 2, 2, 2), 9, 16)),
        ("tnerv-3.0m-960p", 3.0e6, (1_857_391, 630_784, 614_400), ((5, 3, 2, 2, 2), 8, 16)),
        ("tnerv-9.3m-1080p", 9.3e6, (4_453_945, 2_580_480, 2_246_400), ((5, 3, 2, 2, 2), 9, 16)),
    ],
)
def test_paper_presets_sizes(preset, nominal, counts, geometry):
    model, c = meta_counts(preset)
    assert (c["decoder"], c["grids"], c["embeddings"]) == counts
    assert c["transmitted"] == sum(counts)
    assert abs(c["transmitted"] / nominal - 1) < 0.05
    assert c["encoder"] > 0  # ConvNeXt, augmentation MLP, per-frame weights: not counted in the size
    assert (model.strides, model.latent_h, model.latent_w) == geometry


def test_paper_totals_and_tab8_split():
    totals = {p: meta_counts(p)[1]["transmitted"] for p in ("tnerv-12.4m-720p", "tnerv-3.0m-960p", "tnerv-9.3m-1080p")}
    assert totals == {"tnerv-12.4m-720p": 12_229_296, "tnerv-3.0m-960p": 3_102_575, "tnerv-9.3m-1080p": 9_280_825}
    c = meta_counts("tnerv-9.3m-1080p")[1]
    split = [round(100 * c[k] / c["transmitted"], 1) for k in ("decoder", "grids", "embeddings")]
    assert split == [48.0, 27.8, 24.2]  # Appendix A.7: about 48 / 27 / 24


def test_config_defaults_are_tab6():
    with torch.device("meta"):
        default = create_model("tnerv", TNeRVConfig())
    assert default.parameter_counts() == meta_counts("tnerv-12.4m-720p")[1]
    assert [b.up[0].kernel_size[0] for b in default.blocks] == [1, 3, 5, 5, 5]
    assert [b.up[0].out_channels // s**2 for b, s in zip(default.blocks, default.strides)] == [192, 160, 134, 111, 93]
    assert default.flow_head.in_channels == 134 and default.flow_head.out_channels == 12
    assert default.frame_head.in_channels == 93 and default.frame_head.out_channels == 5
    assert default.pre_block[0].in_channels == 125 and default.pre_block[0].out_channels == 231


def test_registry_and_presets():
    assert "tnerv" in list_models()
    assert {"tnerv-12.4m-720p", "tnerv-3.0m-960p", "tnerv-9.3m-1080p", "tnerv-s-cpu"} <= set(list_presets("tnerv"))
    _, c = meta_counts("tnerv-s-cpu")
    assert c["transmitted"] < 1e6


# ------------------------------------------------------------------------------------------------
# Budget scaling and ablations.


@pytest.mark.parametrize(
    "preset, budget", [("tnerv-12.4m-720p", 3_000_000), ("tnerv-12.4m-720p", 20_000_000), ("tnerv-s-cpu", 300_000)]
)
def test_scale_config_meets_the_budget_and_keeps_the_split(preset, budget):
    config = load_preset(preset).config()
    before = TNeRV.transmitted_size(config)
    scaled = TNeRV.scale_config(config, budget)
    after = TNeRV.transmitted_size(scaled)
    assert abs(after["transmitted"] / budget - 1) < 0.03
    for part in ("decoder", "grids", "embeddings"):
        assert abs(after[part] / after["transmitted"] - before[part] / before["transmitted"]) < 0.03
    with pytest.raises(TnervError, match="cannot be scaled"):
        TNeRV.scale_config(config, 1000)


def test_apply_ablations_sets_fields_and_records_names():
    base = TNeRVConfig()
    assert apply_ablations(base, ["E1"]).grids is False
    assert apply_ablations(base, ["E2"]).frame_embeddings is False
    assert apply_ablations(base, ["E3"]).temporal_augmentation is False
    e4 = apply_ablations(base, ["E4"])
    assert e4.encoder_channels == (64, 64, 64, 64) and e4.encoder_blocks == (1, 1, 1, 1, 1) and e4.temporal_augmentation
    e5 = apply_ablations(base, ["e5"])
    assert e5.encoder_blocks == (1,) * 5 and not e5.temporal_augmentation
    assert apply_ablations(base, ["D1"]).flow is False
    assert apply_ablations(base, ["D2"]).adain is False
    assert apply_ablations(base, ["D3"]).conv_type == "regular"
    combined = apply_ablations(apply_ablations(base, ["E1", "D2"]), ["D3", "E1"])
    assert combined.ablations == ("E1", "D2", "D3") and not combined.grids and not combined.adain
    assert set(ABLATIONS) == {"E1", "E2", "E3", "E4", "E5", "D1", "D2", "D3"}


def test_ablations_given_as_data_take_effect_and_configs_round_trip():
    config = make_config("tnerv", {**TINY, "ablations": ["D1", "E3"]})  # as run.json or --set give them
    model = create_model("tnerv", config)
    assert model.flow_head is None and model.augment is None
    assert model.config.ablations == ("D1", "E3") and not model.config.flow
    data = json.loads(json.dumps(config_to_dict(model.config)))
    assert make_config("tnerv", data) == model.config


# A tiny geometry whose embeddings and grids are a fair share of a 60k budget.
BALANCED = {**TINY, "num_frames": 32, "grid_resolutions": (8, 16), "embed_channels": 8, "grid_channels": 8}


def widths(config: TNeRVConfig) -> dict:
    return {
        "embed_channels": config.embed_channels, "grid_channels": config.grid_channels,
        "pre_channels": config.pre_channels, "block_channels": block_widths(config, 3),
    }


@pytest.mark.parametrize("names", [[n] for n in ABLATIONS] + [["E1", "D2"], ["E3", "D1"]])
def test_an_ablation_at_a_budget_keeps_the_full_models_other_widths(names):
    budget, tolerance = 60_000, 0.05
    full, _ = solve_for_budget("tnerv", TNeRVConfig(**BALANCED), budget, tolerance)
    ablated, reached, changed = solve_ablated_for_budget("tnerv", TNeRVConfig(**BALANCED), names, budget, tolerance)
    assert reached == TNeRV.transmitted_size(ablated)["transmitted"]
    assert abs(reached / budget - 1) <= tolerance
    assert ablated.ablations == tuple(names)
    # Which widths may move: the latent that is left takes a removed input's parameters (E1, E2),
    # the decoder is re-solved when it changed itself (D1-D3); the rest stay the full model's.
    movable = {"E1": {"embed_channels"}, "E2": {"grid_channels"}}
    decoder = {"pre_channels", "block_channels"} if set(names) & {"D1", "D2", "D3"} else set()
    allowed = set().union(decoder, *(movable.get(n, set()) for n in names))
    removed = {"grid_channels"} if "E1" in names else {"embed_channels"} if "E2" in names else set()
    before, after = widths(full), widths(ablated)
    for name in set(before) - allowed - removed:
        assert after[name] == before[name], name
    assert changed == {k: (before[k], after[k]) for k in before if before[k] != after[k] and k not in removed}
    if "D3" in names:
        assert kernel_sizes(ablated, 3) == (5, 5, 5)
        assert (ablated.embed_channels, ablated.grid_channels) == (full.embed_channels, full.grid_channels)
        assert set(changed) == {"pre_channels", "block_channels"}  # 5x5 kernels cost more: narrower blocks
    if set(names) <= {"E3", "E4", "E5"}:
        assert changed == {} and reached == TNeRV.transmitted_size(full)["transmitted"]  # nothing transmitted changed
    if "E1" in names:  # the latent keeps its size: the embeddings hold the grids' parameters
        counts = TNeRV.transmitted_size(full)
        assert abs(TNeRV.transmitted_size(ablated)["embeddings"] - counts["embeddings"] - counts["grids"]) <= 32 * 32


def test_only_tnerv_has_ablations_to_size():
    config = load_preset("nerv-s-cpu").config()
    with pytest.raises(TnervError, match="has no ablations"):
        solve_ablated_for_budget("nerv", config, ["D3"], 1_000_000, 0.05)


@pytest.mark.parametrize(
    "names, message",
    [
        (["E1", "E2"], "E1 .* and E2 .* conflict"),
        (["E2", "E4"], "E2 removes the frame embeddings, so E4"),
        (["X9"], "unknown"),
    ],
)
def test_conflicting_or_unknown_ablations_are_errors(names, message):
    with pytest.raises(TnervError, match=message):
        apply_ablations(TNeRVConfig(), names)


@pytest.mark.parametrize("names", [[n] for n in ABLATIONS] + [["E1", "E5", "D1", "D2", "D3"]])
def test_each_ablation_builds_and_trains(names, tiny_clip):
    config = apply_ablations(TNeRVConfig(**TINY), names)
    model = create_model("tnerv", config)
    c = model.parameter_counts()
    result = fit(model, tiny_clip, TrainConfig(**QUICK), progress=False)
    assert torch.isfinite(torch.tensor(result.history[-1]["loss"]))
    chosen = set(config.ablations)
    assert (model.grids is None) == ("E1" in chosen) and (c["grids"] == 0) == ("E1" in chosen)
    assert (c["embeddings"] == 0) == ("E2" in chosen) and (model.encoder is None) == ("E2" in chosen)
    assert (model.augment is None) == bool(chosen & {"E2", "E3", "E5"})
    assert (model.flow_head is None) == ("D1" in chosen)
    assert all((b.adain is None) == ("D2" in chosen) for b in model.blocks)
    kernels = [b.up[0].kernel_size[0] for b in model.blocks]
    assert kernels == ([5, 5, 5] if "D3" in chosen else [1, 3, 5])
    if chosen & {"E4", "E5"}:
        assert [len(s) for s in model.encoder.stages] == [1, 1, 1]
    frames = VideoFrames(tiny_clip, torch.device("cpu"))(torch.arange(3))
    out = model(torch.arange(3), None if "E2" in chosen else frames)
    assert out["output"].shape == (3, 3, 32, 64)
    assert ("aggregated" in out) == ("D1" not in chosen)


# ------------------------------------------------------------------------------------------------
# Geometry: any frame size, encoder strides = decoder strides.


@pytest.mark.parametrize(
    "hw, strides, latent",
    # tnerv-s-cpu has the paper's five blocks (kernels 1,3,5,5,5): stride-1 blocks where the frame is small.
    [((128, 256), (2, 2, 2, 2, 1), (8, 16)), ((144, 176), (2, 2, 2, 2, 1), (9, 11)),
     ((72, 128), (2, 2, 2, 1, 1), (9, 16)), ((96, 96), (3, 2, 2, 1, 1), (8, 8))],
)
def test_any_frame_size(hw, strides, latent):
    torch.manual_seed(0)
    config = load_preset("tnerv-s-cpu").config(height=hw[0], width=hw[1], num_frames=3)
    model = create_model("tnerv", config).eval()
    assert model.strides == strides and (model.latent_h, model.latent_w) == latent
    video = torch.rand(3, 3, *hw)
    assert model.encoder(video[:1]).shape[-2:] == latent
    out = decode(model, torch.arange(3), lambda i: video[i], batch_size=2)
    assert out.shape == (3, 3, *hw)


def test_paper_strides_reject_frames_they_cannot_reach():
    with pytest.raises(TnervError, match="multiples of 80"):
        create_model("tnerv", load_preset("tnerv-12.4m-720p").config(height=700, num_frames=4))


# ------------------------------------------------------------------------------------------------
# Fitting a real clip.


def test_small_tnerv_fits_bikes_well_above_the_mean_frame(bikes_32x128x256):
    frames = bikes_32x128x256[:16].permute(0, 2, 3, 1).numpy()
    clip = torch.from_numpy(resize_and_crop(frames, 64, 128)).permute(0, 3, 1, 2).contiguous()
    preset = load_preset("tnerv-s-cpu")
    torch.manual_seed(0)
    model = create_model("tnerv", preset.config(height=64, width=128, num_frames=16))
    result = fit(model, clip, TrainConfig.from_dict({**preset.train, "epochs": 20, "eval_every": 20}), progress=False)
    target = clip.float() / 255
    baseline = psnr(target.mean(dim=0, keepdim=True).expand_as(target), target).mean().item()
    # About 33.7 dB against 23.6 dB for the mean frame (20 epochs, a few seconds on 2 cores).
    assert result.report.psnr > baseline + 6, (result.report.psnr, baseline)


def test_training_loss_weights_the_aggregated_and_independent_frames():
    model = tiny()
    outputs = {"output": torch.full((1, 3, 2, 2), 1.0), "aggregated": torch.full((1, 3, 2, 2), 2.0),
               "independent": torch.full((1, 3, 2, 2), 3.0)}
    loss_fn = lambda pred, target: pred.mean()  # noqa: E731
    assert model.training_loss(outputs, torch.zeros(1), loss_fn).item() == pytest.approx(1 + 0.1 * 2 + 0.1 * 3)
    d1 = tiny(flow=False)
    assert d1.training_loss({"output": outputs["output"], "independent": outputs["output"]}, None, loss_fn).item() == 1


# ------------------------------------------------------------------------------------------------
# The transmitted state and decoding.


@pytest.fixture(scope="module")
def fitted(tiny_clip):
    """A tiny T-NeRV fitted briefly, its flow head made strong so that neighbours matter."""
    torch.manual_seed(0)
    model = tiny()
    fit(model, tiny_clip, TrainConfig(**{**QUICK, "epochs": 2}), progress=False)
    with torch.no_grad():
        model.flow_head.weight.mul_(30)  # flows of several pixels
        model.frame_head.bias[4] += 1.0  # lean on the aggregated frame
    model.eval()
    return model, VideoFrames(tiny_clip, torch.device("cpu"))


def test_transmitted_state_holds_decoder_grids_and_embeddings(fitted):
    model, _ = fitted
    state = model.transmitted_state()
    counts = model.parameter_counts()
    assert sum(v.numel() for v in state.values()) == counts["transmitted"]
    assert state["embeddings"].shape == (8, 4, 4, 8)
    encoder_side = ("encoder.", "augment.", "frame_weights", "frame_buffer", "embeddings_fresh")
    assert not any(k.startswith(encoder_side) for k in state)
    decoder = TNeRV.from_transmitted(model.config, state)
    assert decoder.encoder is None and decoder.augment is None
    assert decoder.parameter_counts() == {**counts, "encoder": 0, "total": counts["transmitted"]}


def test_decoding_ranges_equals_decoding_the_whole_video(fitted):
    model, frames = fitted
    n = model.config.num_frames
    everything = torch.arange(n)
    own = decode(model, everything, frames, batch_size=3)  # the fitted model's evaluation pass
    forward = model(everything, frames(everything))["output"].clamp(0, 1)
    decoder = TNeRV.from_transmitted(model.config, model.transmitted_state())
    whole = decode(decoder, everything, None, batch_size=n)
    independent = decoder.decode_independent(everything)[0].clamp(0, 1)
    assert (whole - independent).abs().max() > 1e-2  # aggregation changes the output
    assert (own - whole).abs().max() < 1e-5
    assert (forward - whole).abs().max() < 1e-5
    for a, b, batch in [(0, 1, 1), (0, 2, 1), (1, 3, 2), (3, 6, 2), (n - 2, n, 1), (n - 1, n, 1), (2, n, 4)]:
        part = decode(decoder, torch.arange(a, b), None, batch_size=batch)
        assert (part - whole[a:b]).abs().max() < 1e-5, (a, b, batch)
    shuffled = torch.tensor([7, 0, 5, 1])
    assert (decode(decoder, shuffled, None, batch_size=3) - whole[shuffled]).abs().max() < 1e-5


def test_a_range_decodes_every_independent_frame_in_the_same_chunk_as_the_whole_video(fitted, monkeypatch):
    model, _ = fitted
    decoder = TNeRV.from_transmitted(model.config, model.transmitted_state())
    chunks: list[tuple[int, ...]] = []
    original = decoder.decode_independent

    def recording(idx: torch.Tensor, *args, **kwargs):
        chunks.append(tuple(idx.tolist()))
        return original(idx, *args, **kwargs)

    monkeypatch.setattr(decoder, "decode_independent", recording)

    def chunk_of_each_frame(a: int, b: int) -> dict[int, tuple[int, ...]]:
        chunks.clear()
        decode(decoder, torch.arange(a, b), None, batch_size=3)
        return {j: chunk for chunk in chunks for j in chunk}

    n = model.config.num_frames
    whole = chunk_of_each_frame(0, n)
    for a, b in [(0, 3), (3, 6), (6, n), (3, 4), (1, 2)]:
        # Another chunk would be another batch composition: kernels may round differently for it.
        assert all(whole[j] == chunk for j, chunk in chunk_of_each_frame(a, b).items()), (a, b)


def test_stale_embeddings_need_the_frames(tiny_clip):
    model = tiny()
    clip = tiny_clip.float() / 255
    source = lambda idx: clip[idx]  # noqa: E731
    model.on_fit_start(torch.arange(8), source)
    idx = torch.tensor([2, 3])
    outputs = model(idx, clip[idx])  # a training step: the embeddings go out of date
    model.training_loss(outputs, clip[idx], fusion_loss).backward()
    model.after_step(idx, outputs)
    assert torch.equal(model.frame_buffer[idx], outputs["independent"].detach().half())
    del source
    gc.collect()
    with pytest.raises(TnervError, match="out of date"):
        model.transmitted_state()
    model.encode_frames(VideoFrames(tiny_clip, torch.device("cpu")))
    state = model.transmitted_state()
    with torch.no_grad():
        torch.testing.assert_close(state["embeddings"][idx], model.encode(clip[idx], idx))


def test_resume_is_exact_with_the_frame_buffer(tiny_clip, tmp_path):
    config = TrainConfig(**{**QUICK, "epochs": 3})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    torch.manual_seed(0)
    straight = tiny()
    fit(straight, tiny_clip, config, tmp_path / "a", progress=False)

    class Crash(Exception):
        pass

    def crash(epoch: int) -> None:
        if epoch == 2:
            raise Crash

    torch.manual_seed(0)
    with pytest.raises(Crash):
        fit(tiny(), tiny_clip, config, tmp_path / "b", progress=False, on_epoch_end=crash)
    torch.manual_seed(1)  # a new process: other initial weights, an empty buffer
    resumed = tiny()
    assert resumed.frame_buffer.numel() == 0
    fit(resumed, tiny_clip, config, tmp_path / "b", resume=True, progress=False)
    expected, got = straight.state_dict(), resumed.state_dict()
    assert expected.keys() == got.keys() and expected["frame_buffer"].shape == (8, 3, 32, 64)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)
