"""Quality metrics on RGB frames (N, 3, H, W) in [0, 1]: PSNR, SSIM, MS-SSIM, bits per pixel.

Every metric is per frame; a video's score is the mean of its per-frame scores, as the NeRV
family's reference code reports it. Predictions are clamped to [0, 1] for PSNR and MS-SSIM,
since that is what a decoded, stored frame would hold.

MS-SSIM (pytorch-msssim, Gaussian window sigma 1.5, data range 1): the standard 5 scales with an
11-px window need a short side over (11 - 1) * 2**4 = 160 px, which pytorch-msssim asserts. Smaller
frames keep the 11-px window and use the largest number of scales k whose coarsest level still
holds a full window (short side > 10 * 2**(k-1)), weighting the scales by the first k standard
weights renormalised to sum to 1; only frames of 10 px or less fall back to a 7-, 5- or 3-px
window. The variant string of every result says which was computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytorch_msssim
import torch
import torch.nn.functional as F
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

# Scale weights of Wang et al. (2003), as pytorch-msssim uses them.
MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WINDOWS = (11, 7, 5, 3)
_SIGMA = 1.5


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    """Require two tensors of the same shape (N, 3, H, W)."""
    if pred.shape != target.shape or pred.ndim != 4:
        shapes = f"{tuple(pred.shape)} and {tuple(target.shape)}"
        raise ValueError(f"expected two tensors (N, 3, H, W) of one shape, got {shapes}")


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame PSNR in dB (data range 1, MSE over C, H, W); identical frames give inf.

    pred is clamped to [0, 1]; nothing is capped, so a perfect frame yields inf and a mean over
    frames containing one is inf too. Computed in float64 so high PSNRs keep their precision.
    """
    _check_pair(pred, target)
    diff = pred.double().clamp(0.0, 1.0) - target.double()
    mse = diff.square().flatten(1).mean(dim=1)
    return -10.0 * torch.log10(mse)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame SSIM (11-px window, data range 1), differentiable and unclamped for training."""
    _check_pair(pred, target)
    # Outside autocast: SSIM's variances are E[x^2] - E[x]^2 of Gaussian convolutions, and autocast runs
    # convolutions in bf16 whatever the inputs' dtype; they cancel to noise, and a tiny NeRV fitted with
    # bf16 autocast and the L1 + SSIM loss stayed at the mean frame (8 frames of bikes at 32x64, 60 epochs:
    # 12.87 dB against fp32's 29.30; 29.29 with this SSIM alone outside autocast).
    with torch.autocast(pred.device.type, enabled=False):
        return pytorch_msssim.ssim(pred, target, data_range=1.0, size_average=False, win_size=11)


@dataclass
class MSSSIMResult:
    """Per-frame MS-SSIM and a label of the variant computed, e.g. "ms-ssim(win=11,scales=5)"."""

    values: torch.Tensor
    variant: str


def msssim_plan(height: int, width: int, windows: tuple[int, ...] = _WINDOWS) -> tuple[int, int]:
    """Return (window, scales) for MS-SSIM on frames of this size, the first of `windows` that fits (see
    the module docstring)."""
    side = min(height, width)
    for win in windows:
        for scales in range(len(MSSSIM_WEIGHTS), 0, -1):
            # Same test pytorch-msssim asserts for 5 scales, generalised to `scales` levels.
            if side > (win - 1) * 2 ** (scales - 1):
                return win, scales
    raise ValueError(f"frames of {width}x{height} are too small for MS-SSIM")


def _ms_ssim_levels(
    pred: torch.Tensor, target: torch.Tensor, win_size: int, scales: int
) -> torch.Tensor:
    """MS-SSIM over `scales` levels with renormalised standard weights; per frame."""
    weights = pred.new_tensor(MSSSIM_WEIGHTS[:scales])
    weights = weights / weights.sum()
    win = _fspecial_gauss_1d(win_size, _SIGMA).repeat(pred.shape[1], 1, 1, 1)
    factors = []
    for level in range(scales):
        ssim_c, cs_c = _ssim(pred, target, data_range=1.0, win=win, size_average=False)
        if level < scales - 1:
            # Contrast-structure terms at the finer scales, luminance too only at the coarsest.
            factors.append(torch.relu(cs_c))
            pad = [s % 2 for s in pred.shape[2:]]
            pred = F.avg_pool2d(pred, kernel_size=2, padding=pad)
            target = F.avg_pool2d(target, kernel_size=2, padding=pad)
    factors.append(torch.relu(ssim_c))
    stacked = torch.stack(factors, dim=0)  # (scales, N, C)
    return torch.prod(stacked ** weights.view(-1, 1, 1), dim=0).mean(dim=1)


def ms_ssim(pred: torch.Tensor, target: torch.Tensor) -> MSSSIMResult:
    """Per-frame MS-SSIM (data range 1, pred clamped), with fewer scales on small frames, labelled."""
    _check_pair(pred, target)
    values, win, scales = _planned_ms_ssim(pred.float().clamp(0.0, 1.0), target.float(), _WINDOWS)
    return MSSSIMResult(values, f"ms-ssim(win={win},scales={scales})")


def ms_ssim_for_loss(pred: torch.Tensor, target: torch.Tensor, win_size: int) -> torch.Tensor:
    """Per-frame MS-SSIM for a training loss, differentiable and unclamped, with a `win_size` window:
    five scales where the short side exceeds (win_size - 1) * 16 px, as pytorch-msssim computes them,
    and fewer (or a smaller window) on smaller frames, as `ms_ssim` plans them."""
    _check_pair(pred, target)
    # Outside autocast for the reason `ssim` gives: the same Gaussian convolutions compute its variances.
    with torch.autocast(pred.device.type, enabled=False):
        return _planned_ms_ssim(pred, target, tuple(w for w in _WINDOWS if w <= win_size))[0]


def _planned_ms_ssim(
    pred: torch.Tensor, target: torch.Tensor, windows: tuple[int, ...]
) -> tuple[torch.Tensor, int, int]:
    """Per-frame MS-SSIM with the plan `msssim_plan` gives this frame size, and that plan."""
    win, scales = msssim_plan(pred.shape[2], pred.shape[3], windows)
    if scales == len(MSSSIM_WEIGHTS):
        values = pytorch_msssim.ms_ssim(pred, target, data_range=1.0, size_average=False, win_size=win)
    else:
        values = _ms_ssim_levels(pred, target, win, scales)
    return values, win, scales


def bits_per_pixel(num_bytes: int, num_frames: int, height: int, width: int) -> float:
    """Bits per pixel: num_bytes * 8 / (num_frames * height * width)."""
    pixels = num_frames * height * width
    if pixels <= 0:
        raise ValueError(f"need a positive pixel count, got {num_frames} frames of {width}x{height}")
    return num_bytes * 8 / pixels


@dataclass
class QualityReport:
    """Mean PSNR and MS-SSIM over a video's frames, with the per-frame values."""

    psnr: float
    ms_ssim: float
    ms_ssim_variant: str
    per_frame_psnr: list[float]
    per_frame_ms_ssim: list[float] = field(default_factory=list)


def _as_batch(frames: torch.Tensor | np.ndarray, i: int, batch_size: int) -> torch.Tensor:
    """Slice a batch as float (N, 3, H, W) in [0, 1]; uint8 arrays (N, H, W, 3) are converted."""
    part = frames[i : i + batch_size]
    if isinstance(part, np.ndarray):
        # Converting per batch keeps a whole video from being held as float32 at once.
        return torch.from_numpy(np.ascontiguousarray(part)).permute(0, 3, 1, 2).float() / 255.0
    return part.float()


def evaluate_frames(
    pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, batch_size: int = 16
) -> QualityReport:
    """Compute PSNR and MS-SSIM batch by batch; inputs are float (N, 3, H, W) or uint8 (N, H, W, 3)."""
    if len(pred) != len(target) or len(pred) == 0:
        raise ValueError(f"need the same, non-zero number of frames, got {len(pred)} and {len(target)}")
    psnrs: list[float] = []
    msssims: list[float] = []
    variant = ""
    with torch.no_grad():
        for i in range(0, len(pred), batch_size):
            p, t = _as_batch(pred, i, batch_size), _as_batch(target, i, batch_size)
            psnrs += psnr(p, t).tolist()
            result = ms_ssim(p, t)
            msssims += result.values.tolist()
            variant = result.variant
    return QualityReport(
        psnr=float(np.mean(psnrs)),
        ms_ssim=float(np.mean(msssims)),
        ms_ssim_variant=variant,
        per_frame_psnr=psnrs,
        per_frame_ms_ssim=msssims,
    )
