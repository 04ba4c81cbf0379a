"""YUV <-> RGB conversion with an explicit colour matrix.

Matrices: "bt601" (Kr=0.299, Kb=0.114) and "bt709" (Kr=0.2126, Kb=0.0722). Samples are 8-bit
and limited ("tv") range by default: Y in 16..235 and Cb/Cr in 16..240; ``full_range=True``
selects JPEG ("pc") range (Y, Cb, Cr all 0..255, chroma centred on 128).

Default matrix rule (``default_matrix``): "bt709" when the frame height is >= 720, else "bt601".
That is the convention of video tooling for untagged sources: HD material (UVG and most
1080p test sets) is BT.709, SD material is BT.601. The two differ by up to about 17 levels on
saturated colours, so the matrix is always explicit here and never left to a library default.

Chroma resampling: chroma is treated as centre-sited (between the luma samples, JPEG/MPEG-1
style). Downsampling to 4:2:0 averages each 2x2 block; upsampling by 2 is bilinear (weights
3/4 and 1/4 from the two nearest chroma samples, edges replicated), which is exact on flat
areas. Other subsampling factors (e.g. 4:1:1) are upsampled by replication.
"""

from __future__ import annotations

import numpy as np

from tnerv.errors import TnervError

# (Kr, Kb) luma weights of each matrix; Kg = 1 - Kr - Kb.
MATRICES: dict[str, tuple[float, float]] = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
}


def default_matrix(height: int) -> str:
    """Return the matrix assumed for an untagged source: bt709 when height >= 720, else bt601."""
    return "bt709" if height >= 720 else "bt601"


def check_matrix(matrix: str) -> str:
    """Return the canonical matrix name ("bt601"/"bt709"), accepting e.g. "BT.709"; else raise."""
    key = str(matrix).lower().replace(".", "").replace("-", "").replace("_", "")
    if key not in MATRICES:
        names = ", ".join(MATRICES)
        raise TnervError(f"unknown colour matrix {matrix!r} (choose one of: {names})")
    return key


def _weights(matrix: str) -> tuple[float, float, float]:
    """Look up (Kr, Kg, Kb) for a matrix name."""
    kr, kb = MATRICES[check_matrix(matrix)]
    return kr, 1.0 - kr - kb, kb


def _range_scales(full_range: bool) -> tuple[float, float, float]:
    """Return (luma offset, luma span, chroma span) of 8-bit samples for the range."""
    if full_range:
        return 0.0, 255.0, 255.0
    return 16.0, 219.0, 224.0


def _upsample2(c: np.ndarray, axis: int) -> np.ndarray:
    """Double `c` along `axis` with centre-sited bilinear weights 3/4 and 1/4."""
    c = np.moveaxis(c, axis, 0)
    prev = np.concatenate([c[:1], c[:-1]])
    nxt = np.concatenate([c[1:], c[-1:]])
    even = 0.75 * c + 0.25 * prev
    odd = 0.75 * c + 0.25 * nxt
    out = np.stack([even, odd], axis=1).reshape((2 * c.shape[0],) + c.shape[1:])
    return np.moveaxis(out, 0, axis)


def _upsample_axis(c: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Bring chroma plane `c` to `size` samples along `axis` (bilinear for 2x, else repeat)."""
    n = c.shape[axis]
    if n == size:
        return c
    factor = -(-size // n)  # ceil: odd luma sizes have one extra, half-covered chroma sample
    if factor == 2:
        c = _upsample2(c, axis)
    else:
        c = np.repeat(c, factor, axis=axis)
    return np.take(c, np.arange(size), axis=axis)


def _upsample_chroma(c: np.ndarray, height: int, width: int) -> np.ndarray:
    """Upsample one chroma plane (as float32) to the luma size."""
    c = c.astype(np.float32)
    c = _upsample_axis(c, height, 0)
    return _upsample_axis(c, width, 1)


def yuv_to_rgb(
    y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: str, *, full_range: bool = False
) -> np.ndarray:
    """Convert 8-bit planar YUV with any chroma subsampling (4:2:0, 4:2:2, 4:4:4) to RGB uint8."""
    kr, kg, kb = _weights(matrix)
    y_off, y_span, c_span = _range_scales(full_range)
    height, width = y.shape
    # Normalise to E'Y in [0, 1] and E'Pb/E'Pr in [-0.5, 0.5].
    ey = (y.astype(np.float32) - y_off) / y_span
    pb = (_upsample_chroma(u, height, width) - 128.0) / c_span
    pr = (_upsample_chroma(v, height, width) - 128.0) / c_span
    r = ey + 2.0 * (1.0 - kr) * pr
    b = ey + 2.0 * (1.0 - kb) * pb
    g = (ey - kr * r - kb * b) / kg
    rgb = np.stack([r, g, b], axis=-1) * 255.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def yuv420_to_rgb(
    y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: str, *, full_range: bool = False
) -> np.ndarray:
    """Convert 8-bit I420 planes (Y: HxW, U/V: ceil(H/2) x ceil(W/2)) to RGB uint8 (H, W, 3).

    With limited range the conversion is, for bt601:
        R = 1.164(Y-16) + 1.596(Cr-128)
        G = 1.164(Y-16) - 0.392(Cb-128) - 0.813(Cr-128)
        B = 1.164(Y-16) + 2.017(Cb-128)
    and for bt709:
        R = 1.164(Y-16) + 1.793(Cr-128)
        G = 1.164(Y-16) - 0.213(Cb-128) - 0.533(Cr-128)
        B = 1.164(Y-16) + 2.112(Cb-128)
    (coefficients derived exactly from Kr/Kb; rounded here for reading). Chroma is upsampled
    bilinearly (centre-sited), see the module docstring.
    """
    height, width = y.shape
    chroma_shape = ((height + 1) // 2, (width + 1) // 2)
    if u.shape != chroma_shape or v.shape != chroma_shape:
        raise ValueError(f"4:2:0 chroma planes must be {chroma_shape}, got {u.shape} and {v.shape}")
    return yuv_to_rgb(y, u, v, matrix, full_range=full_range)


def _downsample2x2(c: np.ndarray) -> np.ndarray:
    """Average 2x2 blocks, replicating the last row/column of odd-sized planes."""
    if c.shape[0] % 2:
        c = np.concatenate([c, c[-1:]], axis=0)
    if c.shape[1] % 2:
        c = np.concatenate([c, c[:, -1:]], axis=1)
    return 0.25 * (c[0::2, 0::2] + c[1::2, 0::2] + c[0::2, 1::2] + c[1::2, 1::2])


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Round and clip float samples to uint8."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def rgb_to_yuv420(
    rgb: np.ndarray, matrix: str, *, full_range: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert RGB uint8 (H, W, 3) to I420 planes (y, u, v); chroma is the 2x2 block average."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {rgb.shape}")
    kr, kg, kb = _weights(matrix)
    y_off, y_span, c_span = _range_scales(full_range)
    x = rgb.astype(np.float32) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    ey = kr * r + kg * g + kb * b
    pb = (b - ey) / (2.0 * (1.0 - kb))
    pr = (r - ey) / (2.0 * (1.0 - kr))
    y = _to_uint8(y_off + y_span * ey)
    # Average chroma in the float domain before rounding so 4:2:0 adds only one rounding step.
    u = _to_uint8(128.0 + c_span * _downsample2x2(pb))
    v = _to_uint8(128.0 + c_span * _downsample2x2(pr))
    return y, u, v
