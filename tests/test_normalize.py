"""Tests of paper A's input normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from iphd.errors import FrameError
from iphd.normalize import (
    DEFAULT_DEPTH_MEAN,
    NormalizeConfig,
    estimate_ambient_k,
    normalize_depth,
    normalize_pair,
    normalize_thermal,
)


def test_thermal_scaling_with_fixed_ambient() -> None:
    # 283.15 K -> 0, 313.15 K -> 255; ambient 298.15 K -> 127.5 is subtracted.
    thermal = np.array([[28315, 29815, 31315], [30000, 32000, 0]], dtype=np.uint16)
    config = NormalizeConfig(ambient_k=298.15, out_size=(3, 2))
    out = normalize_thermal(thermal, config)
    expected = np.array([[-127.5, 0.0, 127.5], [(30000 - 28315) * 0.085 - 127.5, 127.5, 0.0]])
    np.testing.assert_allclose(out, expected, atol=1e-3)
    assert out.dtype == np.float32


def test_thermal_without_ambient_subtraction_fills_invalid_with_ambient() -> None:
    thermal = np.array([[28315, 31315, 0, 27000]], dtype=np.uint16)
    config = NormalizeConfig(ambient_k=293.15, subtract_ambient=False, out_size=(4, 1))
    out = normalize_thermal(thermal, config)
    np.testing.assert_allclose(out, [[0.0, 255.0, 85.0, 0.0]], atol=1e-3)


def test_depth_scaling_clipping_mean_and_invalid() -> None:
    # 0.1 m -> 0, 10 m -> 255, 5.05 m -> 127.5, 20 m clips to 255, 0.05 m to 0; 0 = invalid.
    depth = np.array([[100, 10000, 5050], [20000, 50, 0]], dtype=np.uint16)
    config = NormalizeConfig(depth_mean=80.0, out_size=(3, 2))
    out = normalize_depth(depth, config)
    np.testing.assert_allclose(out, [[-80.0, 175.0, 47.5], [175.0, -80.0, 0.0]], atol=1e-3)


def test_ambient_is_the_background_mode_even_when_a_person_fills_most_of_the_view() -> None:
    rng = np.random.default_rng(0)
    thermal = rng.integers(30400, 30800, (120, 213)).astype(np.uint16)  # person, 60 %
    thermal[:, :85] = 29500 + rng.integers(-8, 8, (120, 85))  # wall at 295 K, 40 %
    thermal[:5] = 0  # no data
    thermal[5:8, :20] = 34000  # a lamp, outside the clip range
    ambient = estimate_ambient_k(thermal)
    assert abs(ambient - 295.0) < 0.1
    assert np.median(thermal[thermal > 0]) > 30400  # the median would have been the person


def test_ambient_of_hand_built_histogram() -> None:
    # Bins of 0.5 K from 283.15 K: 29315..29364 holds four pixels (mean 293.20 K), the
    # 29365..29414 bin three, the out-of-range pixel and the zeros are ignored.
    thermal = np.array([[29315, 29320, 29325, 29320, 29400, 29401, 29402, 35000, 0, 0]],
                       dtype=np.uint16)
    assert estimate_ambient_k(thermal) == pytest.approx(293.20)


def test_ambient_falls_back_to_the_median_outside_the_range() -> None:
    thermal = np.array([[26000, 26100, 26200, 0]], dtype=np.uint16)
    assert estimate_ambient_k(thermal) == pytest.approx(261.0)


def test_ambient_of_an_empty_image_raises() -> None:
    with pytest.raises(FrameError, match="no valid"):
        estimate_ambient_k(np.zeros((4, 4), dtype=np.uint16))


def test_pair_has_channels_t_t_d_at_the_output_size() -> None:
    depth = np.full((720, 1280), 5050, dtype=np.uint16)
    thermal = np.full((120, 213), 29815, dtype=np.uint16)
    thermal[60:, :] = 30115  # 3 K warmer lower half
    config = NormalizeConfig(ambient_k=298.15, depth_mean=DEFAULT_DEPTH_MEAN)
    out = normalize_pair(depth, thermal, config)
    assert out.shape == (3, 256, 448) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_allclose(out[2], 127.5 - DEFAULT_DEPTH_MEAN, atol=1e-3)
    np.testing.assert_allclose(out[0, :100], 0.0, atol=1e-3)
    np.testing.assert_allclose(out[0, -100:], 300 * 0.085, atol=1e-3)


def test_pair_estimates_ambient_per_frame_by_default() -> None:
    depth = np.full((480, 848), 3000, dtype=np.uint16)
    thermal = np.full((120, 160), 29500, dtype=np.uint16)
    thermal[40:80, 60:90] = 30600
    out = normalize_pair(depth, thermal)
    assert out.shape == (3, 256, 448)
    assert abs(float(out[0, 5, 5])) < 1e-3  # background sits at 0
    assert out[0].max() == pytest.approx(1100 * 0.085, abs=1e-3)


def test_default_config_matches_paper_a() -> None:
    config = NormalizeConfig()
    assert (config.thermal_min_k, config.thermal_max_k) == (283.15, 313.15)
    assert (config.depth_min_m, config.depth_max_m) == (0.1, 10.0)
    assert config.out_size == (448, 256) and config.subtract_ambient


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"thermal_min_k": 320.0}, "thermal clip"),
        ({"depth_min_m": 0.0}, "depth clip"),
        ({"depth_max_m": 100.0}, "depth clip"),
        ({"ambient_k": -3.0}, "ambient_k"),
        ({"depth_mean": float("nan")}, "depth_mean"),
        ({"out_size": (448, 0)}, "out_size"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        NormalizeConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_images_raise_frame_error() -> None:
    with pytest.raises(FrameError, match="uint16"):
        normalize_pair(np.zeros((10, 10), np.float32), np.ones((10, 10), np.uint16))
    with pytest.raises(FrameError, match="thermal"):
        normalize_pair(np.zeros((10, 10), np.uint16), np.ones((10, 10, 3), np.uint16))
