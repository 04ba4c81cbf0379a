"""Bjontegaard delta statistics: average rate and quality differences between two RD curves.

Both methods follow the conventions of the `bjontegaard` PyPI package (FAU-LMS), so its README
example gives the same numbers:

- BD-rate integrates log10(rate) as a function of quality over the quality range both curves
  cover; the mean log-rate difference d becomes a percentage as (10**d - 1) * 100.
- BD-PSNR integrates quality as a function of log10(rate) over the shared log-rate range and
  reports the mean quality difference. The log base cancels out here, so natural-log versions
  (VCEG-M33's own code) agree.
- "cubic" is the classic VCEG-M33 fit: one least-squares cubic polynomial per curve.
  "pchip" is the piecewise cubic Hermite interpolation of the JCT-VC/JVET CTC spreadsheets,
  which cannot overshoot between points the way a single cubic can.

Quality may be any "higher is better" metric (PSNR in dB, MS-SSIM, ...). Compute BD per video,
then average with `average_bd`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

from tnerv.errors import TnervError

METHODS = ("cubic", "pchip")
# A cubic needs four points to be determined; PCHIP needs two to interpolate at all.
_MIN_POINTS = {"cubic": 4, "pchip": 2}

ArrayLike = Sequence[float] | np.ndarray


def _curve(rate: ArrayLike, quality: ArrayLike, which: str, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one RD curve and return (log10 rate, quality) as float arrays."""
    try:
        r = np.asarray(rate, dtype=np.float64)
        q = np.asarray(quality, dtype=np.float64)
    except (TypeError, ValueError):
        raise TnervError(f"{which} rates and qualities must be numbers") from None
    if r.ndim != 1 or q.ndim != 1:
        raise TnervError(f"{which} rates and qualities must be flat lists of numbers")
    if len(r) != len(q):
        raise TnervError(f"{which} curve has {len(r)} rates but {len(q)} qualities")
    if len(r) < _MIN_POINTS[method]:
        raise TnervError(f"{method} BD needs at least {_MIN_POINTS[method]} points per curve, {which} has {len(r)}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))):
        raise TnervError(f"{which} curve holds a NaN or infinite value")
    if np.any(r <= 0):
        raise TnervError(f"{which} rates must be positive")
    return np.log10(r), q


def _fit(x: np.ndarray, y: np.ndarray, method: str, which: str) -> Callable[[float, float], float]:
    """Fit y(x) by `method` and return a function integrating the fit from lo to hi."""
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if method == "cubic":
        # Fewer than four distinct abscissae leave the cubic undetermined (numpy only warns).
        if len(np.unique(x)) < 4:
            raise TnervError(f"cubic BD needs at least 4 distinct points along the fitted axis, {which} has fewer")
        antiderivative = np.polyint(np.polyfit(x, y, 3))
        return lambda lo, hi: float(np.polyval(antiderivative, hi) - np.polyval(antiderivative, lo))
    if np.any(np.diff(x) == 0):
        raise TnervError(f"pchip BD needs distinct points along the interpolated axis, {which} repeats a value")
    interpolator = PchipInterpolator(x, y)
    return lambda lo, hi: float(interpolator.integrate(lo, hi))


def _delta(
    anchor_x: np.ndarray, anchor_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, method: str
) -> float:
    """Mean of test_y(x) - anchor_y(x) over the x range both curves cover; NaN without overlap."""
    # Fit first, so a degenerate curve raises whether or not the curves overlap.
    integrate_anchor = _fit(anchor_x, anchor_y, method, "anchor")
    integrate_test = _fit(test_x, test_y, method, "test")
    lo = max(anchor_x.min(), test_x.min())
    hi = min(anchor_x.max(), test_x.max())
    # No extrapolation: a fit outside its points says nothing reliable (as in the package).
    if not hi > lo:
        return math.nan
    return (integrate_test(lo, hi) - integrate_anchor(lo, hi)) / (hi - lo)


def _check_method(method: str) -> str:
    """Return the method name or raise on an unknown one."""
    if method not in METHODS:
        raise TnervError(f"unknown BD method {method!r} (use one of: {', '.join(METHODS)})")
    return method


def bd_rate(
    anchor_rate: ArrayLike,
    anchor_psnr: ArrayLike,
    test_rate: ArrayLike,
    test_psnr: ArrayLike,
    method: str = "cubic",
) -> float:
    """Average bitrate difference in percent of the test curve against the anchor at equal quality (negative = test saves bits).

    The curves may have different numbers of points. Returns NaN when their quality ranges do
    not overlap.
    """
    method = _check_method(method)
    anchor_log, anchor_q = _curve(anchor_rate, anchor_psnr, "anchor", method)
    test_log, test_q = _curve(test_rate, test_psnr, "test", method)
    mean_log_diff = _delta(anchor_q, anchor_log, test_q, test_log, method)
    if math.isnan(mean_log_diff):
        return math.nan
    return (10.0**mean_log_diff - 1.0) * 100.0


def bd_psnr(
    anchor_rate: ArrayLike,
    anchor_psnr: ArrayLike,
    test_rate: ArrayLike,
    test_psnr: ArrayLike,
    method: str = "cubic",
) -> float:
    """Average quality difference in dB (positive = test better).

    For another metric (MS-SSIM) the result is in that metric's unit. The curves may have
    different numbers of points. Returns NaN when their log-rate ranges do not overlap.
    """
    method = _check_method(method)
    anchor_log, anchor_q = _curve(anchor_rate, anchor_psnr, "anchor", method)
    test_log, test_q = _curve(test_rate, test_psnr, "test", method)
    return _delta(anchor_log, anchor_q, test_log, test_q, method)


def average_bd(per_video: dict[str, float]) -> float:
    """Mean of per-video BD values, ignoring NaN (curves without overlap); NaN if none is left."""
    values = [v for v in per_video.values() if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan
