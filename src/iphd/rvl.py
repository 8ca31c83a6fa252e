"""RVL, the run-length and variable-length coding of compressedDepth's ``rvl`` codec (numba).

The stream: for each run, the count of zeros, the count of non-zeros, then each non-zero's
difference from the previous non-zero pixel (zigzag-coded); every value in 3-bit nibbles,
least significant first, a nibble's high bit set when more follow; 8 nibbles to a
little-endian 32-bit word, the first in its top 4 bits. Used by ``iphd.compressed_images``,
which imports this module only for RVL images, so other users of bags do not load numba.
"""

from __future__ import annotations

import numba
import numpy as np

_NIBBLE_SHIFTS = np.arange(28, -1, -4, dtype=np.uint32)


def decode(stream: bytes, pixels: int) -> np.ndarray | None:
    """``pixels`` uint16 values of an RVL ``stream``; None when it ends early or codes more."""
    words = np.frombuffer(stream[: len(stream) // 4 * 4], dtype="<u4")
    nibbles = ((words[:, None] >> _NIBBLE_SHIFTS) & 0xF).astype(np.uint8).reshape(-1)
    out = np.zeros(pixels, dtype=np.uint16)
    return out if _rvl_decode(nibbles, out) == pixels else None


def encode(pixels: np.ndarray) -> bytes:
    """The RVL stream of uint16 ``pixels``, in row order (the inverse of ``decode``)."""
    nibbles = _rvl_nibbles(np.ascontiguousarray(pixels, dtype=np.uint16).reshape(-1))
    padded = np.zeros(-(-len(nibbles) // 8) * 8, dtype=np.uint32)
    padded[: len(nibbles)] = nibbles
    words = (padded.reshape(-1, 8) << _NIBBLE_SHIFTS).sum(axis=1, dtype=np.uint64)
    return words.astype("<u4").tobytes()


@numba.njit(cache=True)
def _read_value(nibbles: np.ndarray, pos: int) -> tuple[int, int]:  # pragma: no cover - numba
    """One variable-length value from ``pos`` and the position after it (-1 if cut off).

    3 bits a nibble, least significant first, the nibble's high bit set when more follow.
    """
    value = 0
    shift = 0
    while pos < nibbles.shape[0] and shift <= 30:
        nibble = int(nibbles[pos])
        pos += 1
        value |= (nibble & 0x7) << shift
        shift += 3
        if not nibble & 0x8:
            return value, pos
    return -1, pos


@numba.njit(cache=True)
def _rvl_decode(nibbles: np.ndarray, out: np.ndarray) -> int:  # pragma: no cover - numba
    """Decode RVL ``nibbles`` into the zeroed ``out``; the pixels written, or -1.

    The stream is runs of (zeros, non-zeros, the non-zeros' zigzag deltas); -1 when it ends
    early or codes more pixels than ``out`` holds.
    """
    size = out.shape[0]
    pos = 0
    written = 0
    previous = 0
    while written < size:
        zeros, pos = _read_value(nibbles, pos)
        if zeros < 0 or written + zeros > size:
            return -1
        written += zeros
        nonzeros, pos = _read_value(nibbles, pos)
        if nonzeros < 0 or written + nonzeros > size:
            return -1
        for _ in range(nonzeros):
            coded, pos = _read_value(nibbles, pos)
            if coded < 0:
                return -1
            previous = (previous + ((coded >> 1) ^ -(coded & 1))) & 0xFFFF
            out[written] = previous
            written += 1
    return written


@numba.njit(cache=True)
def _rvl_nibbles(pixels: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """The RVL nibbles of uint16 ``pixels`` (the inverse of ``_rvl_decode``)."""
    size = pixels.shape[0]
    nibbles = np.zeros(6 * size + 32, dtype=np.uint8)
    count = 0
    pos = 0
    previous = 0
    while pos < size:
        start = pos
        while pos < size and pixels[pos] == 0:
            pos += 1
        end = pos
        while end < size and pixels[end] != 0:
            end += 1
        for k in range(end - pos + 2):
            if k == 0:
                value = pos - start
            elif k == 1:
                value = end - pos
            else:
                delta = int(pixels[pos]) - previous
                previous = int(pixels[pos])
                pos += 1
                value = (delta << 1) ^ (delta >> 63)
            while True:
                nibble = value & 0x7
                value >>= 3
                if value:
                    nibble |= 0x8
                nibbles[count] = nibble
                count += 1
                if not value:
                    break
    return nibbles[:count]
