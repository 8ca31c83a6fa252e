"""Decode and encode raw image buffers (sensor_msgs/Image layout) as numpy arrays, without ROS."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iphd.errors import FrameError

# encoding -> (numpy dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "16UC1": (np.dtype(np.uint16), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
}


@dataclass(frozen=True)
class RawImage:
    """The fields of a sensor_msgs/Image that carry pixels."""

    height: int
    width: int
    encoding: str
    is_bigendian: bool
    step: int
    data: bytes


def decode_image(raw: RawImage, accepted: tuple[str, ...] | None = None) -> np.ndarray:
    """Return the pixels of ``raw`` as an (H, W) or (H, W, C) array (a copy, native byte order).

    Args:
        raw: the image fields.
        accepted: encodings the caller can use; None accepts every known encoding.

    Raises:
        FrameError: unknown or unaccepted encoding, empty image, or a buffer whose size does not
            match height, width and step.
    """
    allowed = accepted if accepted is not None else tuple(ENCODINGS)
    if raw.encoding not in ENCODINGS or raw.encoding not in allowed:
        raise FrameError(
            f"image encoding '{raw.encoding}' is not supported here; expected one of "
            f"{', '.join(allowed)} (check the publisher's encoding or add a conversion node)"
        )
    if raw.height <= 0 or raw.width <= 0:
        raise FrameError(f"empty image ({raw.width}x{raw.height}); the publisher sent no pixels")
    dtype, channels = ENCODINGS[raw.encoding]
    row_bytes = raw.width * channels * dtype.itemsize
    if raw.step < row_bytes:
        raise FrameError(
            f"image step {raw.step} is smaller than one row ({raw.width} px x {channels} ch x "
            f"{dtype.itemsize} B = {row_bytes} B) for encoding '{raw.encoding}'"
        )
    if len(raw.data) < raw.step * raw.height:
        raise FrameError(
            f"image buffer holds {len(raw.data)} bytes but {raw.height} rows x step {raw.step} "
            f"= {raw.step * raw.height} are needed; the message is truncated"
        )
    buf = np.frombuffer(raw.data, dtype=np.uint8, count=raw.step * raw.height)
    rows = buf.reshape(raw.height, raw.step)[:, :row_bytes]
    wire = dtype.newbyteorder(">" if raw.is_bigendian else "<")
    pixels = rows.copy().view(wire).astype(dtype, copy=False)
    shape = (raw.height, raw.width) if channels == 1 else (raw.height, raw.width, channels)
    return pixels.reshape(shape)


def encode_image(array: np.ndarray, encoding: str) -> RawImage:
    """Pack ``array`` into little-endian, tightly packed image fields with ``encoding``.

    Raises:
        FrameError: when the array's dtype or number of channels does not fit the encoding.
    """
    if encoding not in ENCODINGS:
        raise FrameError(f"cannot encode as '{encoding}'; known encodings: {', '.join(ENCODINGS)}")
    dtype, channels = ENCODINGS[encoding]
    expected_ndim = 2 if channels == 1 else 3
    if array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        raise FrameError(
            f"array of shape {array.shape} cannot be encoded as '{encoding}' "
            f"({channels} channel(s) expected)"
        )
    if array.dtype != dtype:
        raise FrameError(f"array dtype {array.dtype} does not match '{encoding}' ({dtype})")
    data = np.ascontiguousarray(array, dtype=dtype.newbyteorder("<"))
    height, width = array.shape[:2]
    return RawImage(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=False,
        step=width * channels * dtype.itemsize,
        data=data.tobytes(),
    )
