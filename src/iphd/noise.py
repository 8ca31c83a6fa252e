"""Zero-patch fixing of registered thermal images with directional kernels (paper A)."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from numpy.lib.stride_tricks import as_strided

#: The 8 search directions as (dy, dx), in opposing pairs: horizontal (left, right), vertical
#: (up, down), diagonal (up-left, down-right), anti-diagonal (up-right, down-left).
DIRECTIONS = ((0, -1), (0, 1), (-1, 0), (1, 0), (-1, -1), (1, 1), (-1, 1), (1, -1))

# Marks are int32 and must stay positive for every pixel of the largest image: flat index +
# offset < 2**31 for images up to 2**30 pixels.
_OFFSET = 1 << 30
_FAR = np.float32(1e30)


@lru_cache(maxsize=8)
def _mark_bases(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the (H, W) int32 marks of a valid pixel for the up/left and down/right searches."""
    size = height * width
    index = np.arange(size, dtype=np.int32).reshape(height, width)
    up = index + np.int32(_OFFSET)
    down = np.int32(_OFFSET + size) - index
    up.flags.writeable = False
    down.flags.writeable = False
    return up, down


def _running_max(marks: np.ndarray, axis: int, reverse: bool) -> np.ndarray:
    """Running maximum of ``marks`` along ``axis`` (backwards if ``reverse``), C-contiguous."""
    out = np.empty(marks.shape, dtype=marks.dtype)
    if not reverse:
        return np.maximum.accumulate(marks, axis=axis, out=out)
    backwards = slice(None, None, -1)
    flip = (backwards, slice(None)) if axis == 0 else (slice(None), backwards)
    np.maximum.accumulate(marks[flip], axis=axis, out=out[flip])
    return out


def nearest_marks(valid: np.ndarray, flat: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Propagate the nearest valid pixel along the 8 ``DIRECTIONS`` by index propagation.

    Every valid pixel writes a mark that grows towards the direction's origin (``flat +
    offset`` for the up/left directions, ``offset + N - flat`` for down/right, 0 when invalid);
    a running maximum along rows, columns or diagonals (``np.maximum.accumulate``) carries the
    nearest mark on, and the marks are read back at the query pixels. Diagonals become columns
    in a sheared (H, W + H) array where pixel (i, j) is stored at column ``j - i + H``;
    anti-diagonals the same after a left-right flip.

    Args:
        valid: (H, W) bool, True where the pixel has a value.
        flat: (n,) int32 flat indices of the pixels to query.

    Returns:
        8 (n,) int32 mark arrays in ``DIRECTIONS`` order (0 = nothing before the border) and
        the offset used. The nearest pixel is ``mark - offset`` for even (up/left) directions
        and ``offset + N - mark`` for odd (down/right) ones.
    """
    h, w = valid.shape
    up_base, down_base = _mark_bases(h, w)
    up = valid * up_base
    down = valid * down_base
    marks = [
        _running_max(up, 1, False).ravel().take(flat),
        _running_max(down, 1, True).ravel().take(flat),
        _running_max(up, 0, False).ravel().take(flat),
        _running_max(down, 0, True).ravel().take(flat),
    ]
    qi = flat // np.int32(w)
    qj = flat - qi * np.int32(w)
    sheared = np.zeros((h, w + h), dtype=np.int32)
    item = sheared.itemsize
    # A strided view of the sheared buffer in image coordinates: view[i, j] = sheared[i, j-i+H].
    image_view = as_strided(
        sheared.ravel()[h:], shape=(h, w), strides=((w + h - 1) * item, item), writeable=True
    )
    for anti in (False, True):
        qcol = (np.int32(w - 1) - qj) if anti else qj
        sheared_flat = qi * np.int32(w + h - 1) + qcol + np.int32(h)
        flip = (slice(None), slice(None, None, -1)) if anti else (slice(None), slice(None))
        for base, reverse in ((up_base, False), (down_base, True)):
            np.multiply(valid[flip], base[flip], out=image_view)
            marks.append(_running_max(sheared, 0, reverse).ravel().take(sheared_flat))
    return marks, _OFFSET


def fix_zero_patches(
    thermal_ck: np.ndarray, max_search_px: int = 16, max_pair_difference_ck: int | None = 150
) -> np.ndarray:
    """Fill the zero pixels of a registered thermal image from their directional neighbours.

    For every zero pixel the nearest non-zero pixel is searched along 8 directions (4 opposing
    pairs: horizontal, vertical, the two diagonals), at most ``max_search_px`` steps away (a
    diagonal step counts as one step but as sqrt(2) pixels of distance).

    Pair-selection rule: a pair is usable when both of its sides found a value and the two
    values differ by at most ``max_pair_difference_ck``. Among the usable pairs the one with the
    shortest span (sum of the two Euclidean distances) wins and the pixel gets the mean of its
    two values, rounded half up; ties go to the first pair in the order horizontal, vertical,
    diagonal, anti-diagonal. The shortest span is the most local interpolation: it crosses the
    patch where it is thinnest. The agreement test keeps the mean from bridging an edge: an
    occlusion shadow lies between a person and the background, so its shortest span usually
    joins a 306 K person to a 295 K wall, and the mean would paint a half-warm fringe that no
    object has; requiring agreeing sides picks the pair running along the shadow instead.

    Fallback (the boundary variants): when no pair is usable (one side runs off the image or
    finds nothing within range, e.g. at the out-of-view band along the image border, or every
    pair crosses an edge), the pixel takes the value of the single nearest side (shortest
    Euclidean distance, ties in ``DIRECTIONS`` order), so an edge crossing a patch stays sharp
    and sits where the nearest evidence puts it. Pixels with nothing within ``max_search_px`` in
    any direction stay 0, so a patch larger than the search range is never invented from far
    away. Non-zero pixels are never changed.

    Args:
        thermal_ck: (H, W) uint16 centi-kelvin, 0 = no value.
        max_search_px: search range in steps along each direction; >= 1.
        max_pair_difference_ck: largest difference between the two sides of a usable pair in
            centi-kelvin (150 = 1.5 K, well above the Lepton's noise and well below the contrast
            of a person against a room); None = every pair with two sides is usable (plain
            shortest-span rule).

    Returns:
        A new (H, W) uint16 array.

    Raises:
        ValueError: for a non-2-D or non-uint16 image, or a bad search range or difference.
    """
    if thermal_ck.ndim != 2 or thermal_ck.dtype != np.uint16:
        raise ValueError(
            "fix_zero_patches expects an (H, W) uint16 image, got shape "
            f"{thermal_ck.shape} dtype {thermal_ck.dtype}"
        )
    if isinstance(max_search_px, bool) or max_search_px < 1:
        raise ValueError(f"max_search_px must be >= 1, got {max_search_px}")
    if max_pair_difference_ck is not None and max_pair_difference_ck < 0:
        raise ValueError(
            f"max_pair_difference_ck must be >= 0 or None, got {max_pair_difference_ck}"
        )
    if thermal_ck.size >= _OFFSET:
        raise ValueError(f"image of {thermal_ck.size} pixels is too large to fix")
    out = thermal_ck.copy()
    valid = thermal_ck != 0
    rows = np.flatnonzero(valid.any(axis=1))
    if rows.size == 0:
        return out
    cols = np.flatnonzero(valid.any(axis=0))
    # Pixels farther than max_search_px (Chebyshev) from every valid pixel cannot be filled:
    # crop to the valid bounding box grown by the range, then skip the unreachable ones.
    r = max_search_px
    window = (
        slice(max(int(rows[0]) - r, 0), int(rows[-1]) + r + 1),
        slice(max(int(cols[0]) - r, 0), int(cols[-1]) + r + 1),
    )
    patch = np.ascontiguousarray(out[window])  # a view of out when already contiguous
    valid = np.ascontiguousarray(valid[window])
    side = min(2 * r + 1, 2 * max(valid.shape) + 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
    reachable = cv2.dilate(valid.view(np.uint8), kernel)
    flat = np.flatnonzero(reachable > valid.view(np.uint8)).astype(np.int32)
    if flat.size:
        patch.ravel()[flat] = _fill(patch, valid, flat, r, max_pair_difference_ck)
        out[window] = patch
    return out


def _fill(
    image_2d: np.ndarray,
    valid: np.ndarray,
    flat: np.ndarray,
    max_search_px: int,
    max_pair_difference_ck: int | None,
) -> np.ndarray:
    """Return the fill values of the zero pixels ``flat`` (see ``fix_zero_patches``)."""
    w = image_2d.shape[1]
    image = image_2d.ravel()
    marks, offset = nearest_marks(valid, flat)
    up_base = flat + np.int32(offset)
    down_base = np.int32(offset + valid.size) - flat
    n = flat.size
    dist = np.empty((8, n), dtype=np.float32)
    values = np.empty((8, n), dtype=np.int32)
    step_length = np.empty((8, 1), dtype=np.float32)
    for d, ((dy, dx), mark) in enumerate(zip(DIRECTIONS, marks, strict=True)):
        # Flat-index difference to the nearest pixel = steps * |dy * W + dx|; huge (>= offset)
        # when nothing was found, so the range test below rejects it.
        stride = np.int32(max(abs(dy * w + dx), 1))
        if d % 2 == 0:
            dist[d] = (up_base - mark) // stride
            values[d] = image.take(mark - np.int32(offset), mode="clip")
        else:
            dist[d] = (down_base - mark) // stride
            values[d] = image.take(down_base + flat - mark, mode="clip")
        step_length[d] = np.sqrt(2.0) if dy and dx else 1.0
    dist *= step_length
    # Out of range or not found -> _FAR (finite, so sums and comparisons stay cheap and exact).
    dist += (dist > step_length * np.float32(max_search_px)) * _FAR

    span = dist[0::2] + dist[1::2]
    if max_pair_difference_ck is not None:
        span += (np.abs(values[0::2] - values[1::2]) > max_pair_difference_ck) * _FAR
    best_span = span.min(axis=0)
    pair_value = (values[0::2] + values[1::2] + 1) >> 1
    filled = pair_value[3]
    for p in (2, 1, 0):
        filled = np.where(span[p] == best_span, pair_value[p], filled)

    lonely = np.flatnonzero(best_span >= _FAR)
    if lonely.size:
        side_dist = np.take(dist, lonely, axis=1)
        side_values = np.take(values, lonely, axis=1)
        best_side = side_dist.min(axis=0)
        nearest = side_values[7].copy()
        for d in range(6, -1, -1):
            nearest = np.where(side_dist[d] == best_side, side_values[d], nearest)
        nearest[best_side >= _FAR] = 0
        filled[lonely] = nearest
    return filled
