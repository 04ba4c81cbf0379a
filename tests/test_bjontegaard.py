"""Tests for tnerv.bjontegaard: known values from the bjontegaard package and exact cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tnerv.bjontegaard import average_bd, bd_psnr, bd_rate
from tnerv.errors import TnervError

# The example of the `bjontegaard` package's README (FAU-LMS/bjontegaard): libx265 at
# different presets, rate in kbit/s and PSNR in dB.
RATE_ANCHOR = [9487.76, 4593.60, 2486.44, 1358.24]
PSNR_ANCHOR = [40.037, 38.615, 36.845, 34.851]
RATE_TEST = [9787.80, 4469.00, 2451.52, 1356.24]
PSNR_TEST = [40.121, 38.651, 36.970, 34.987]
EXAMPLE = (RATE_ANCHOR, PSNR_ANCHOR, RATE_TEST, PSNR_TEST)

METHODS = ["cubic", "pchip"]


def test_package_example_cubic() -> None:
    assert bd_rate(*EXAMPLE, method="cubic") == pytest.approx(-4.4205, abs=5e-5)
    assert bd_psnr(*EXAMPLE, method="cubic") == pytest.approx(0.1204, abs=5e-5)


def test_package_example_pchip() -> None:
    assert bd_rate(*EXAMPLE, method="pchip") == pytest.approx(-4.4175, abs=5e-5)
    # Not printed in the README; value of the same PCHIP construction, kept as a regression check.
    assert bd_psnr(*EXAMPLE, method="pchip") == pytest.approx(0.1197, abs=5e-5)


def test_default_method_is_cubic() -> None:
    assert bd_rate(*EXAMPLE) == bd_rate(*EXAMPLE, method="cubic")
    assert bd_psnr(*EXAMPLE) == bd_psnr(*EXAMPLE, method="cubic")


def test_point_order_does_not_matter() -> None:
    order = [2, 0, 3, 1]
    shuffled = [[curve[i] for i in order] for curve in EXAMPLE]
    for method in METHODS:
        assert bd_rate(*shuffled, method=method) == pytest.approx(bd_rate(*EXAMPLE, method=method), abs=1e-9)
        assert bd_psnr(*shuffled, method=method) == pytest.approx(bd_psnr(*EXAMPLE, method=method), abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_identical_curves_give_zero(method: str) -> None:
    assert bd_rate(RATE_ANCHOR, PSNR_ANCHOR, RATE_ANCHOR, PSNR_ANCHOR, method=method) == pytest.approx(0, abs=1e-9)
    assert bd_psnr(RATE_ANCHOR, PSNR_ANCHOR, RATE_ANCHOR, PSNR_ANCHOR, method=method) == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_half_rate_gives_minus_fifty_percent(method: str) -> None:
    half = np.asarray(RATE_ANCHOR) / 2
    assert bd_rate(RATE_ANCHOR, PSNR_ANCHOR, half, PSNR_ANCHOR, method=method) == pytest.approx(-50.0, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_one_db_up_gives_plus_one_db(method: str) -> None:
    up = np.asarray(PSNR_ANCHOR) + 1.0
    assert bd_psnr(RATE_ANCHOR, PSNR_ANCHOR, RATE_ANCHOR, up, method=method) == pytest.approx(1.0, abs=1e-9)


def test_swapping_anchor_and_test_flips_the_sign() -> None:
    swapped = (RATE_TEST, PSNR_TEST, RATE_ANCHOR, PSNR_ANCHOR)
    assert bd_psnr(*swapped) == pytest.approx(-bd_psnr(*EXAMPLE), abs=1e-12)
    # Rates are ratios: the reverse saving is 1 / (1 + r) - 1, not -r.
    forward = bd_rate(*EXAMPLE) / 100
    assert bd_rate(*swapped) / 100 == pytest.approx(1 / (1 + forward) - 1, abs=1e-12)


def test_curves_may_have_different_point_counts() -> None:
    five_rates = [12000.0, *RATE_TEST]
    five_psnr = [41.0, *PSNR_TEST]
    for method in METHODS:
        assert math.isfinite(bd_rate(RATE_ANCHOR, PSNR_ANCHOR, five_rates, five_psnr, method=method))


@pytest.mark.parametrize("method", METHODS)
def test_no_overlap_gives_nan(method: str) -> None:
    # Test curve entirely above the anchor in quality and entirely right of it in rate.
    high_rate = np.asarray(RATE_ANCHOR) * 100
    high_psnr = np.asarray(PSNR_ANCHOR) + 20
    assert math.isnan(bd_rate(RATE_ANCHOR, PSNR_ANCHOR, high_rate, high_psnr, method=method))
    assert math.isnan(bd_psnr(RATE_ANCHOR, PSNR_ANCHOR, high_rate, high_psnr, method=method))


@pytest.mark.parametrize(
    "anchor_rate, anchor_psnr, message",
    [
        ([1000.0, 2000.0, 4000.0], [30.0, 32.0, 34.0], "at least 4 points"),
        ([1000.0, 2000.0, 4000.0, 8000.0], [30.0, 32.0, 34.0], "4 rates but 3 qualities"),
        ([1000.0, -2000.0, 4000.0, 8000.0], [30.0, 32.0, 34.0, 36.0], "positive"),
        ([1000.0, 0.0, 4000.0, 8000.0], [30.0, 32.0, 34.0, 36.0], "positive"),
        ([1000.0, 2000.0, 4000.0, 8000.0], [30.0, float("nan"), 34.0, 36.0], "NaN or infinite"),
        ([1000.0, 2000.0, float("inf"), 8000.0], [30.0, 32.0, 34.0, 36.0], "NaN or infinite"),
        ([1000.0, 2000.0, 4000.0, 8000.0], [30.0, 32.0, 32.0, 32.0], "distinct"),
        ([[1000.0, 2000.0], [4000.0, 8000.0]], [30.0, 32.0, 34.0, 36.0], "flat"),
        (["a", "b", "c", "d"], [30.0, 32.0, 34.0, 36.0], "numbers"),
    ],
)
def test_bad_input_raises(anchor_rate, anchor_psnr, message: str) -> None:
    with pytest.raises(TnervError, match=message) as info:
        bd_rate(anchor_rate, anchor_psnr, RATE_TEST, PSNR_TEST)
    assert "\n" not in str(info.value)


def test_pchip_needs_only_two_points() -> None:
    two = ([1000.0, 4000.0], [30.0, 34.0])
    assert bd_rate(*two, *two, method="pchip") == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(TnervError, match="at least 2 points"):
        bd_rate([1000.0], [30.0], *two, method="pchip")
    with pytest.raises(TnervError, match="distinct"):
        bd_psnr([1000.0, 1000.0, 4000.0], [30.0, 31.0, 34.0], *two, method="pchip")


def test_unknown_method_raises() -> None:
    with pytest.raises(TnervError, match="unknown BD method 'akima'"):
        bd_rate(*EXAMPLE, method="akima")


def test_average_bd_ignores_nan() -> None:
    assert average_bd({"a": -10.0, "b": math.nan, "c": -20.0}) == pytest.approx(-15.0)
    assert math.isnan(average_bd({"a": math.nan}))
    assert math.isnan(average_bd({}))
