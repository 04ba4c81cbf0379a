"""HiNeRV: the official configs' sizes, its padding rule, patch training and its recipe's schedule."""

import math

import pytest
import torch

from tnerv.models import create_model, load_preset
from tnerv.models.counting import transmitted_size
from tnerv.models.layers import SlicedTemporalGrid, patch_paddings
from tnerv.train import TrainConfig, VideoFrames, fit, lr_factor

# Counted by building the official models (hmkx/HiNeRV @ fdb92ec, no training): get_num_parameters()['All']
# and the sum of its FeatureGrid weights, for each cfgs/models/*.txt at its video size (UVG: 600 frames of
# 1920x1080; Bunny: 132 frames of 1280x720). (total, grids)
OFFICIAL_COUNTS = {
    "hinerv-3.2m-1080p": (3_188_933, 572_400),  # uvg-hinerv-s
    "hinerv-6.5m-1080p": (6_489_553, 1_137_600),  # uvg-hinerv-m
    "hinerv-12.8m-1080p": (12_818_953, 2_275_200),  # uvg-hinerv-l
    "hinerv-25.6m-1080p": (25_649_557, 4_550_400),  # uvg-hinerv-xl
    "hinerv-50.7m-1080p": (50_726_919, 9_100_800),  # uvg-hinerv-xxl
    "hinerv-0.77m-720p": (766_691, 138_096),  # bunny-hinerv-xxs
    "hinerv-1.6m-720p": (1_585_666, 274_608),  # bunny-hinerv-xs
    "hinerv-3.2m-720p": (3_249_819, 549_216),  # bunny-hinerv-s
    # bunny-hinerv-s with --channels 86 --scales-hw 2 2 2 2 --base-grid-size 19 -1 -1 8, 64 frames of 256x144
    "hinerv-ref-cpu": (347_383, 65_664),
}


@pytest.mark.parametrize("preset", sorted(OFFICIAL_COUNTS))
def test_presets_have_the_official_parameter_counts(preset):
    counts = transmitted_size("hinerv", load_preset(preset).config())
    assert (counts["transmitted"], counts["grids"]) == OFFICIAL_COUNTS[preset]


@pytest.mark.parametrize(
    "strides, kernels, depths, stem, expected",
    [  # the official compute_paddings (+ the stem kernel's reach) for these configs
        ((5, 3, 2, 2), (3, 3, 3, 3), (3, 3, 3, 1), 3, (3, [6, 6, 4, 1])),  # UVG
        ((2, 2, 2, 2), (3, 3, 3, 3), (3, 3, 3, 1), 3, (6, [7, 6, 4, 1])),  # hinerv-ref-cpu
        ((5, 5, 2, 2), (5, 3, 3, 1), (5, 3, 3, 1), 3, (4, [12, 6, 4, 0])),  # round half to even: 12 / 5
    ],
)
def test_patch_paddings_follow_the_official_rule(strides, kernels, depths, stem, expected):
    assert patch_paddings(strides, kernels, depths, stem) == expected


def _randomised(model):
    """Non-zero biases and grids of a trained model's size, so that padding and masking matter."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.05 if "grid" in name else 0.2))
    return model


def test_a_patch_is_that_part_of_the_whole_frame():
    # Padded windows with zeros outside the frame: each patch, corners included, equals the same pixels of
    # the whole frame decoded at once (wrong paddings, masks or upsampling offsets break this).
    model = _randomised(create_model("hinerv", load_preset("hinerv-ref-cpu").config(patch_size=(48, 64))))
    per_frame = model.training_items()
    assert per_frame == 12
    frames = torch.tensor([0, 7, 63])
    whole = model.eval()(frames)["output"]
    patches = torch.tensor([0, 5, 11])
    got = model.train()(frames * per_frame + patches)["output"]
    for b, (f, p) in enumerate(zip(frames.tolist(), patches.tolist())):
        r, c = divmod(p, 4)
        part = whole[b, :, r * 48 : (r + 1) * 48, c * 64 : (c + 1) * 64]
        assert torch.allclose(got[b], part, atol=1e-5), (f, p)


def test_training_targets_are_the_items_patches():
    model = create_model("hinerv", load_preset("hinerv-s-cpu").config(num_frames=64, patch_size=(72, 128)))
    video = torch.randint(0, 256, (64, 3, 144, 256), dtype=torch.uint8)
    frames = VideoFrames(video, torch.device("cpu"))
    target = model.training_target(torch.tensor([4 * 9 + 3, 2]), frames)
    assert torch.equal(target[0], video[9, :, 72:, 128:].float() / 255)
    assert torch.equal(target[1], video[0, :, 72:, :128].float() / 255)


def test_a_patch_that_does_not_tile_the_frame_is_refused():
    with pytest.raises(Exception, match="must tile"):
        create_model("hinerv", load_preset("hinerv-ref-cpu").config(patch_size=(50, 64)))
    with pytest.raises(Exception, match="without slices"):
        SlicedTemporalGrid([(4, 9, 2), (0, 9, 4)])
    # where the official code would build an empty level (2 frames, 3 levels), tnerv keeps one slice
    model = create_model("hinerv", load_preset("hinerv-ref-cpu").config(num_frames=2))
    assert [t for t, _, _ in model.local_grids[0].levels] == [2, 1, 1]


def test_cosine_full_is_timms_schedule():
    # timm's CosineLRScheduler (warmup_prefix False), HiNeRV's: the warm-up from 2e-5 to 2e-3, then a cosine
    # over ALL iterations (not restarted after the warm-up) ending at min_lr 2e-5.
    total, warm = 1000, 100
    lr, warmup_lr, min_lr = 2e-3, 2e-5, 2e-5

    def timm(t: int) -> float:
        if t < warm:
            return warmup_lr + t * (lr - warmup_lr) / warm
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t / total))

    for t in (0, 50, 99, 100, 500, 999):
        ours = lr * lr_factor(t, total, 0.1, warmup_lr / lr, "cosine-full", min_lr / lr)
        assert ours == pytest.approx(timm(t), rel=1e-9)
    assert lr_factor(100, total, 0.1, 0.01, "cosine") == 1.0  # the other cosine starts after the warm-up


def test_fit_trains_on_patches():
    # Four frames in 72x128 patches (4 per frame): one epoch is 16 items; the recipe's loss and schedule run.
    config = load_preset("hinerv-s-cpu").config(num_frames=4, patch_size=(72, 128))
    model = create_model("hinerv", config)
    torch.manual_seed(0)
    video = torch.rand(4, 3, 144, 256)
    train = TrainConfig.from_dict({**load_preset("hinerv-s-cpu").train, "epochs": 2, "eval_every": 1,
                                   "batch_size": 4})
    result = fit(model, video, train, progress=False)
    assert [e["epoch"] for e in result.history] == [1, 2]
    assert all(math.isfinite(e["loss"]) for e in result.history)
    assert math.isfinite(result.report.psnr)
