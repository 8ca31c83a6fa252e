"""Tests of zero-patch fixing with directional kernels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from iphd.noise import DIRECTIONS, fix_zero_patches

SQRT2 = np.float32(math.sqrt(2.0))


def reference_fix(
    image: np.ndarray, max_search_px: int, max_pair_difference_ck: int | None
) -> np.ndarray:
    """Slow per-pixel implementation of the documented rule."""
    h, w = image.shape
    out = image.copy()
    for i in range(h):
        for j in range(w):
            if image[i, j]:
                continue
            sides: list[tuple[np.float32, int] | None] = []
            for dy, dx in DIRECTIONS:
                hit = None
                for step in range(1, max_search_px + 1):
                    y, x = i + step * dy, j + step * dx
                    if not (0 <= y < h and 0 <= x < w):
                        break
                    if image[y, x]:
                        length = SQRT2 if dy and dx else np.float32(1.0)
                        hit = (np.float32(step) * length, int(image[y, x]))
                        break
                sides.append(hit)
            best: tuple[np.float32, int] | None = None
            for p in range(4):
                a, b = sides[2 * p], sides[2 * p + 1]
                if a is None or b is None:
                    continue
                if max_pair_difference_ck is not None and abs(a[1] - b[1]) > max_pair_difference_ck:
                    continue
                span = np.float32(a[0] + b[0])
                if best is None or span < best[0]:
                    best = (span, (a[1] + b[1] + 1) // 2)
            if best is None:
                for side in sides:
                    if side is not None and (best is None or side[0] < best[0]):
                        best = side
            out[i, j] = 0 if best is None else best[1]
    return out


def u16(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=np.uint16)


def test_horizontal_gap_takes_the_mean_of_left_and_right() -> None:
    image = u16([[100, 0, 0, 200]])
    assert fix_zero_patches(image, 4).tolist() == [[100, 150, 150, 200]]


def test_vertical_gap_takes_the_mean_of_up_and_down() -> None:
    image = u16([[100], [0], [0], [0], [201]])
    assert fix_zero_patches(image, 4).ravel().tolist() == [100, 151, 151, 151, 201]


def test_shortest_span_pair_wins() -> None:
    # (1, 1): horizontal span 1 + 3 = 4, vertical span 1 + 1 = 2 -> vertical (100, 140).
    image = u16([
        [9, 100, 9, 9, 9],
        [60, 0, 0, 0, 80],
        [9, 140, 9, 9, 9],
    ])
    out = fix_zero_patches(image, 5)
    assert out[1, 1] == 120
    # (1, 2): horizontal 2 + 2 = 4, vertical 1 + 1 = 2 -> mean(9, 9)
    assert out[1, 2] == 9


def test_diagonal_pair() -> None:
    # Only the corners are valid. Centre: main diagonal (10 and 30), span 2*sqrt(2); the
    # anti-diagonal (20, 40) has the same span but comes later in the tie order.
    image = u16([
        [10, 0, 20],
        [0, 0, 0],
        [40, 0, 30],
    ])
    out = fix_zero_patches(image, 3)
    assert out[1, 1] == 20
    # Edge midpoints: the horizontal pair of the top row spans 2 (mean of 10 and 20 = 15).
    assert out[0, 1] == 15 and out[2, 1] == 35
    assert out[1, 0] == 25 and out[1, 2] == 25


def test_boundary_pixel_falls_back_to_the_nearest_single_side() -> None:
    # Column 0 has no left side; row 0 no up side. (0, 0): right 7 at 2, down 5 at 1 -> 5.
    image = u16([
        [0, 0, 7],
        [5, 3, 3],
    ])
    out = fix_zero_patches(image, 3)
    assert out[0, 0] == 5
    # (0, 1): horizontal needs left (off image); vertical needs up (off); down-left finds 5 at
    # sqrt(2), down 3 at 1, right 7 at 1 -> the nearest sides tie at 1: right comes first.
    assert out[0, 1] == 7


def test_pixel_without_neighbours_in_range_stays_zero() -> None:
    image = np.zeros((9, 9), dtype=np.uint16)
    image[0, 0] = 500
    out = fix_zero_patches(image, 3)
    assert out[0, 3] == 500  # exactly at the range
    assert out[0, 4] == 0 and out[8, 8] == 0 and out[3, 3] == 500 and out[4, 4] == 0


def test_pair_across_an_edge_is_not_averaged() -> None:
    # A shadow between a person (30600) and a wall (29500): the horizontal span is the
    # shortest, but its sides disagree by 11 K; the vertical pair runs along the shadow.
    p, w = 30600, 29500
    image = u16([
        [p, p, w, w],
        [p, 0, w, w],
        [p, 0, w, w],
        [p, p, w, w],
    ])
    out = fix_zero_patches(image, 4)
    assert out[1, 1] == p and out[2, 1] == p
    plain = fix_zero_patches(image, 4, max_pair_difference_ck=None)
    assert plain[1, 1] == (p + w) // 2


def test_edge_with_no_agreeing_pair_stays_sharp() -> None:
    p, w = 30600, 29500
    image = u16([[p, p, 0, 0, 0, w]])
    out = fix_zero_patches(image, 5)
    assert out.tolist() == [[p, p, p, p, w, w]]  # (0, 3): the nearest side is p at 1


def test_nonzero_pixels_are_never_changed() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(1, 40000, (40, 50)).astype(np.uint16)
    image[rng.random(image.shape) < 0.4] = 0
    before = image.copy()
    out = fix_zero_patches(image)
    np.testing.assert_array_equal(image, before)  # the input is not modified
    valid = image > 0
    np.testing.assert_array_equal(out[valid], image[valid])
    assert out.dtype == np.uint16 and out.shape == image.shape
    assert image is not out


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_slow_reference_on_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shapes = [(13, 17), (1, 23), (19, 1), (30, 8), (8, 30), (25, 25)]
    h, w = shapes[seed]
    image = rng.integers(29000, 29400, (h, w)).astype(np.uint16)
    density = [0.2, 0.5, 0.8, 0.95, 0.6, 0.9][seed]
    image[rng.random((h, w)) < density] = 0
    if seed == 5:
        image[5:20, 3:12] = 0  # one big patch
        image[:, 20:] = rng.integers(30400, 30700, (h, 5))  # a warm region: edges to respect
    before = image.copy()
    for max_search, max_diff in ((1, 150), (3, None), (6, 150), (40, 100)):
        expected = reference_fix(image, max_search, max_diff)
        actual = fix_zero_patches(image, max_search, max_diff)
        np.testing.assert_array_equal(image, before)
        np.testing.assert_array_equal(actual, expected, err_msg=f"{max_search=}, {max_diff=}")


def test_all_zero_and_no_zero_images() -> None:
    zeros = np.zeros((5, 6), dtype=np.uint16)
    np.testing.assert_array_equal(fix_zero_patches(zeros), zeros)
    full = np.full((5, 6), 7, dtype=np.uint16)
    np.testing.assert_array_equal(fix_zero_patches(full), full)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="uint16"):
        fix_zero_patches(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        fix_zero_patches(np.zeros((4, 4, 2), dtype=np.uint16))
    with pytest.raises(ValueError, match="max_search_px"):
        fix_zero_patches(np.zeros((4, 4), dtype=np.uint16), 0)
    with pytest.raises(ValueError, match="max_pair_difference_ck"):
        fix_zero_patches(np.zeros((4, 4), dtype=np.uint16), 3, -1)
