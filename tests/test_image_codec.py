import numpy as np
import pytest

from iphd.errors import FrameError
from iphd.image_codec import RawImage, decode_image, encode_image


def test_uint16_round_trip_keeps_values_and_packs_rows():
    array = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    raw = encode_image(array, "16UC1")
    assert raw.step == 8 and len(raw.data) == 24
    np.testing.assert_array_equal(decode_image(raw), array)


def test_padded_rows_and_big_endian_are_decoded():
    array = np.array([[1, 2], [300, 40000]], dtype=np.uint16)
    rows = [array[r].astype(">u2").tobytes() + b"\xff\xff" for r in range(2)]
    raw = RawImage(
        height=2, width=2, encoding="mono16", is_bigendian=True, step=6, data=b"".join(rows)
    )
    out = decode_image(raw)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, array)


def test_float_depth_and_colour_round_trip():
    depth = np.array([[1.5, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(decode_image(encode_image(depth, "32FC1")), depth)
    rgb = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(encode_image(rgb, "bgr8")), rgb)


def test_unaccepted_encoding_names_the_accepted_ones():
    raw = encode_image(np.zeros((2, 2, 3), np.uint8), "rgb8")
    with pytest.raises(
        FrameError, match="'rgb8' is not supported here; expected one of 16UC1, 32FC1"
    ):
        decode_image(raw, ("16UC1", "32FC1"))


def test_truncated_buffer_and_empty_image_are_refused():
    raw = encode_image(np.zeros((4, 4), np.uint16), "16UC1")
    short = RawImage(4, 4, "16UC1", False, raw.step, raw.data[:-1])
    with pytest.raises(FrameError, match="truncated"):
        decode_image(short)
    with pytest.raises(FrameError, match="empty image"):
        decode_image(RawImage(0, 4, "16UC1", False, 8, b""))
    with pytest.raises(FrameError, match="smaller than one row"):
        decode_image(RawImage(1, 4, "16UC1", False, 4, b"\0" * 8))


def test_encode_refuses_mismatched_dtype_or_channels():
    with pytest.raises(FrameError, match="dtype"):
        encode_image(np.zeros((2, 2), np.float32), "16UC1")
    with pytest.raises(FrameError, match="3 channel"):
        encode_image(np.zeros((2, 2), np.uint8), "rgb8")
