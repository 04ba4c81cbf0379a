"""Tests for tnerv.metrics against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_msssim
import torch

from tnerv.metrics import (
    ms_ssim_for_loss,
    MSSSIM_WEIGHTS,
    _ms_ssim_levels,
    bits_per_pixel,
    evaluate_frames,
    ms_ssim,
    msssim_plan,
    psnr,
    ssim,
)


def noisy_pair(n: int, h: int, w: int, sigma: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth target and a noisy prediction of it, both (n, 3, h, w) in [0, 1]."""
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([xx, yy, (xx + yy) / 2])
    target = (0.2 + 0.6 * base).expand(n, 3, h, w).contiguous()
    noise = sigma * torch.randn(n, 3, h, w, generator=gen) * torch.arange(1, n + 1).view(n, 1, 1, 1)
    return (target + noise).clamp(0, 1), target


def test_psnr_of_known_mse():
    target = torch.full((2, 3, 8, 8), 0.5)
    pred = torch.full((2, 3, 8, 8), 0.6)  # MSE 0.01 -> exactly 20 dB
    assert psnr(pred, target).tolist() == pytest.approx([20.0, 20.0], abs=1e-5)


def test_psnr_is_per_frame():
    target = torch.full((3, 3, 4, 4), 0.5)
    pred = target + torch.tensor([0.1, 0.01, 0.001]).view(3, 1, 1, 1)
    assert psnr(pred, target).shape == (3,)
    assert psnr(pred, target).tolist() == pytest.approx([20.0, 40.0, 60.0], abs=1e-3)


def test_psnr_clamps_prediction():
    target = torch.ones(1, 3, 4, 4)
    assert math.isinf(psnr(target + 0.5, target).item())  # 1.5 clamps to 1: identical
    low = torch.full((1, 3, 4, 4), 0.1)
    assert psnr(low - 0.3, low).item() == pytest.approx(20.0, abs=1e-4)  # -0.2 clamps to 0


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


def test_ms_ssim_full_variant_on_256():
    pred, target = noisy_pair(2, 256, 256)
    same = ms_ssim(target, target)
    assert same.variant == "ms-ssim(win=11,scales=5)"
    assert same.values.tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    noisy = ms_ssim(pred, target).values
    assert noisy.shape == (2,) and 0 < noisy[1] < noisy[0] < 1  # frame 1 has twice the noise
    expected = pytorch_msssim.ms_ssim(pred, target, data_range=1.0, size_average=False)
    assert torch.allclose(noisy, expected)


def test_ms_ssim_reduced_variant_on_64():
    pred, target = noisy_pair(2, 64, 64)
    same = ms_ssim(target, target)
    assert same.variant == "ms-ssim(win=11,scales=3)"
    assert same.values.tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    noisy = ms_ssim(pred, target).values
    assert 0 < noisy[1] < noisy[0] < 1


@pytest.mark.parametrize("scales", [5, 4, 3])
def test_reduced_loop_matches_library_at_each_scale_count(scales: int):
    # The loop used for small frames is the library's computation given the first `scales` standard
    # weights renormalised (the library takes any weights, but only frames over 160 pixels a side).
    pred, target = noisy_pair(2, 192, 200)
    ours = _ms_ssim_levels(pred, target, win_size=11, scales=scales)
    weights = torch.tensor(MSSSIM_WEIGHTS[:scales])
    library = pytorch_msssim.ms_ssim(
        pred, target, data_range=1.0, size_average=False, weights=(weights / weights.sum()).tolist()
    )
    assert torch.allclose(ours, library, atol=1e-6)


@pytest.mark.parametrize(
    "h,w,plan",
    [
        (1080, 1920, (11, 5)),
        (161, 300, (11, 5)),
        (160, 300, (11, 4)),  # pytorch-msssim asserts side > 160 for 5 scales
        (144, 176, (11, 4)),  # carphone
        (64, 64, (11, 3)),
        (11, 40, (11, 1)),
        (10, 40, (7, 1)),
        (3, 3, (3, 1)),
    ],
)
def test_msssim_plan(h: int, w: int, plan: tuple[int, int]):
    assert msssim_plan(h, w) == plan


def test_ms_ssim_tiny_frames_use_a_smaller_window():
    pred, target = noisy_pair(1, 9, 9)
    result = ms_ssim(pred, target)
    assert result.variant == "ms-ssim(win=7,scales=1)"
    assert 0 < result.values.item() < 1



def test_the_loss_ms_ssim_is_the_librarys_where_five_scales_fit_and_fewer_where_not():
    # HiNeRV's 5x5 window: five scales need a short side over 64 px, which pytorch-msssim asserts.
    pred, target = noisy_pair(2, 65, 80)
    expected = pytorch_msssim.ms_ssim(pred, target, data_range=1.0, size_average=False, win_size=5)
    assert torch.equal(ms_ssim_for_loss(pred, target, 5), expected)
    pred, target = noisy_pair(2, 64, 80)
    with pytest.raises(AssertionError):
        pytorch_msssim.ms_ssim(pred, target, data_range=1.0, size_average=False, win_size=5)
    pred.requires_grad_(True)
    values = ms_ssim_for_loss(pred, target, 5)  # four scales of the 5-px window
    assert torch.allclose(values, _ms_ssim_levels(pred, target, 5, 4)) and bool(((values > 0) & (values < 1)).all())
    (1 - values).sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0

def test_ssim_per_frame():
    pred, target = noisy_pair(3, 32, 32)
    assert ssim(target, target).tolist() == pytest.approx([1.0] * 3, abs=1e-5)
    values = ssim(pred, target)
    assert values.shape == (3,) and values[0] > values[1] > values[2]


def test_ssim_is_differentiable():
    pred, target = noisy_pair(1, 32, 32)
    pred.requires_grad_(True)
    (1 - ssim(pred, target)).sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_bits_per_pixel():
    assert bits_per_pixel(1000, 10, 100, 80) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        bits_per_pixel(1000, 0, 100, 80)


def test_evaluate_frames_in_batches():
    pred, target = noisy_pair(7, 48, 64)
    report = evaluate_frames(pred, target, batch_size=3)
    direct = psnr(pred, target)
    assert report.per_frame_psnr == pytest.approx(direct.tolist())
    assert report.psnr == pytest.approx(direct.mean().item())
    assert report.ms_ssim_variant == "ms-ssim(win=11,scales=3)"
    assert report.ms_ssim == pytest.approx(ms_ssim(pred, target).values.mean().item(), abs=1e-6)
    assert len(report.per_frame_ms_ssim) == 7


def test_evaluate_frames_accepts_uint8_arrays():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (4, 24, 32, 3), dtype=np.uint8)
    pred = np.clip(target.astype(int) + 3, 0, 255).astype(np.uint8)
    from_arrays = evaluate_frames(pred, target, batch_size=2)
    as_tensor = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    from_tensors = evaluate_frames(as_tensor(pred), as_tensor(target))
    assert from_arrays.per_frame_psnr == pytest.approx(from_tensors.per_frame_psnr)
    assert from_arrays.ms_ssim == pytest.approx(from_tensors.ms_ssim)
