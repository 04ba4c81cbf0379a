"""Frame transforms between uint8 RGB arrays (N, H, W, 3) and float tensors (N, 3, H, W)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tnerv.errors import TnervError

# Frames per interpolation call: bounds the float32 working copy (a 1080p frame is ~25 MB).
_RESIZE_BATCH = 8


def _check_frames(frames: np.ndarray) -> None:
    """Reject arrays that are not uint8 (N, H, W, 3)."""
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames (N, H, W, 3), got {frames.dtype} {frames.shape}")


def _cover_size(h: int, w: int, height: int, width: int) -> tuple[int, int]:
    """Return the smallest aspect-preserving size that covers (height, width)."""
    scale = max(height / h, width / w)
    # max() guards against rounding a covering side just below the target.
    return max(height, round(h * scale)), max(width, round(w * scale))


def resize_and_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale frames to cover (height, width) keeping aspect, then centre-crop; uint8 in and out.

    Interpolation is bilinear on float values, with antialiasing when downscaling, and the
    result is rounded back to uint8. Frames already at the target size are returned unchanged.
    """
    _check_frames(frames)
    if height <= 0 or width <= 0:
        raise TnervError(f"target size must be positive, got {width}x{height}")
    n, h, w, _ = frames.shape
    if (h, w) == (height, width):
        return frames
    sh, sw = _cover_size(h, w, height, width)
    top, left = (sh - height) // 2, (sw - width) // 2
    downscale = sh < h or sw < w
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(0, n, _RESIZE_BATCH):
        x = torch.from_numpy(frames[i : i + _RESIZE_BATCH]).permute(0, 3, 1, 2).float()
        if (sh, sw) != (h, w):
            x = F.interpolate(x, size=(sh, sw), mode="bilinear", align_corners=False, antialias=downscale)
        x = x[:, :, top : top + height, left : left + width]
        out[i : i + _RESIZE_BATCH] = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """Convert uint8 frames (N, H, W, 3) to a float32 tensor (N, 3, H, W) in [0, 1]."""
    _check_frames(frames)
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return x.float().div_(255.0).contiguous()


def _eight_bit_levels(tensor: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] as 8-bit levels 0..255 (float): clamped and rounded, as frames are written."""
    return tensor.detach().float().clamp(0.0, 1.0).mul(255.0).round()


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """Convert a tensor (N, 3, H, W) in [0, 1] to uint8 frames (N, H, W, 3), clamped and rounded."""
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(f"expected a tensor (N, 3, H, W), got {tuple(tensor.shape)}")
    x = _eight_bit_levels(tensor).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def round_to_8bit(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor in [0, 1] as the 8-bit frames written from it hold it, still in [0, 1] (float32)."""
    return _eight_bit_levels(tensor) / 255


@dataclass(frozen=True)
class Padding:
    """A video's frame size and the larger size its model codes, where no stride product reaches the
    video's: frames are padded at the bottom and right by repeating the last row and column, and the
    model's output is cropped back, so that quality is measured on the video's own pixels."""

    height: int
    width: int
    coded_height: int
    coded_width: int

    def __post_init__(self) -> None:
        if self.coded_height < self.height or self.coded_width < self.width:
            raise TnervError(
                f"cannot pad frames of {self.height}x{self.width} to the smaller size "
                f"{self.coded_height}x{self.coded_width}"
            )

    @property
    def padded(self) -> bool:
        """True where the coded frame is larger than the video's."""
        return (self.coded_height, self.coded_width) != (self.height, self.width)

    def pad(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (N, C, height, width) padded to the coded size."""
        if tuple(frames.shape[-2:]) != (self.height, self.width):
            raise TnervError(f"frames of {frames.shape[-2]}x{frames.shape[-1]} are not the video's {self.height}x{self.width}")
        if not self.padded:
            return frames
        sides = (0, self.coded_width - self.width, 0, self.coded_height - self.height)
        return F.pad(frames.float(), sides, mode="replicate").to(frames.dtype)

    def crop(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (..., coded or larger) cut back to the video's size."""
        return frames[..., : self.height, : self.width]

    def to_dict(self) -> dict[str, int]:
        """Plain data for run.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, int]) -> Padding:
        """Reads the form `to_dict` writes."""
        return cls(**values)
