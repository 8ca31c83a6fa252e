"""Images of image_transport's compressed and compressedDepth transports, decoded without ROS."""

import struct

import cv2
import numpy as np
import pytest

from iphd.compressed_images import decode_compressed, encode_compressed
from iphd.errors import FrameError
from iphd.transports import base_topic, transport_of, transport_topics

HEADER = struct.pack("<iff", 0, 0.0, 0.0)  # compressedDepth's header of a 16UC1 image


def _depth(seed=0, shape=(48, 64)):
    rng = np.random.default_rng(seed)
    depth = rng.integers(300, 9000, shape).astype(np.uint16)
    depth[rng.random(shape) < 0.3] = 0
    depth[:3] = 0  # a run of zeros across rows
    depth[-1, -5:] = 0  # and one at the end
    return depth


@pytest.mark.parametrize(("transport", "codec"), [
    ("compressedDepth", "png"), ("compressedDepth", "rvl"), ("compressed", "png"),
])
def test_16_bit_images_come_back_exactly(transport, codec):
    depth = _depth()
    fmt, data = encode_compressed(depth, "16UC1", transport, codec)
    pixels, encoding = decode_compressed(fmt, data)
    assert encoding == "16UC1" and pixels.dtype == np.uint16
    np.testing.assert_array_equal(pixels, depth)
    # Thermal in centi-kelvin through compressed with png, as mono16.
    thermal = (29_000 + _depth(1, (120, 160)) // 10).astype(np.uint16)
    fmt, data = encode_compressed(thermal, "mono16", "compressed", "png")
    pixels, encoding = decode_compressed(fmt, data, ("16UC1", "mono16"))
    assert encoding == "mono16"
    np.testing.assert_array_equal(pixels, thermal)


def test_rvl_streams_as_the_transport_writes_them_decode():
    # Worked by hand from the RVL coding: zigzag deltas in 3-bit nibbles, least significant
    # first, high bit = more to come, 8 nibbles a little-endian word, the first at the top.
    # [0, 0, 5, 7, 0]: 2 zeros, 2 non-zeros, +5 (zigzag 10: nibbles A 1), +2 (4), 1 zero,
    # 0 non-zeros -> 2 2 A 1 4 1 0, padded.
    words = struct.pack("<I", 0x22A14100)
    pixels, _ = decode_compressed("16UC1; compressedDepth rvl",
                                  HEADER + struct.pack("<II", 5, 1) + words)
    np.testing.assert_array_equal(pixels, [[0, 0, 5, 7, 0]])
    # [300, 100]: 0 zeros, 2 non-zeros, +300 (600: 8 B 9 1), -200 (399: F 9 6).
    words = struct.pack("<II", 0x028B91F9, 0x60000000)
    pixels, _ = decode_compressed("16UC1; compressedDepth rvl",
                                  HEADER + struct.pack("<II", 1, 2) + words)
    np.testing.assert_array_equal(pixels, [[300], [100]])
    # The encoder writes the same words.
    fmt, data = encode_compressed(np.array([[0, 0, 5, 7, 0]], np.uint16), "16UC1",
                                  "compressedDepth", "rvl")
    assert data[12:] == struct.pack("<II", 5, 1) + struct.pack("<I", 0x22A14100)


def test_32fc1_depth_comes_back_in_metres_from_its_inverse_depth():
    # The transport's quantisation with its defaults (depth_quantization 100, depth_max 10 m).
    quant_a = np.float32(100 * 101)
    quant_b = np.float32(1 - quant_a / 10)
    metres = np.array([[0.5, 1.0, 2.5], [4.0, 9.5, np.nan]], np.float32)
    inverse = np.where(np.isfinite(metres), quant_a / metres + quant_b, 0).astype(np.uint16)
    _, png = cv2.imencode(".png", inverse)
    header = struct.pack("<iff", 0, quant_a, quant_b)
    pixels, encoding = decode_compressed("32FC1; compressedDepth png", header + png.tobytes())
    assert encoding == "32FC1" and pixels.dtype == np.float32
    assert np.isnan(pixels[1, 2])
    finite = np.isfinite(metres)
    # The quantisation's own error grows with z squared.
    np.testing.assert_allclose(pixels[finite], metres[finite], rtol=2e-3 * 9.5)


def test_colour_comes_back_in_its_encodings_channel_order():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red
    for codec in ("png", "jpeg"):
        fmt, data = encode_compressed(rgb, "rgb8", "compressed", codec)
        assert fmt == f"rgb8; {codec} compressed bgr8"
        pixels, encoding = decode_compressed(fmt, data)
        assert encoding == "rgb8"
        np.testing.assert_allclose(pixels[..., 0], 200, atol=3)
        np.testing.assert_allclose(pixels[..., 2], 0, atol=3)
    # Stored as it was ("compressed rgb8"): the channels are not swapped back.
    _, png = cv2.imencode(".png", rgb)
    pixels, _ = decode_compressed("rgb8; png compressed rgb8", png.tobytes())
    np.testing.assert_array_equal(pixels, rgb)


def test_older_publishers_formats_are_read():
    depth = _depth()
    _, png = cv2.imencode(".png", depth)
    # compressedDepth before its codec was named: png.
    pixels, encoding = decode_compressed("16UC1; compressedDepth", HEADER + png.tobytes())
    assert encoding == "16UC1"
    np.testing.assert_array_equal(pixels, depth)
    # compressed with only the codec: the pixels say the encoding.
    assert decode_compressed("png", png.tobytes())[1] == "mono16"
    _, jpg = cv2.imencode(".jpg", np.zeros((4, 4, 3), np.uint8))
    assert decode_compressed("jpeg", jpg.tobytes())[1] == "bgr8"


def test_what_cannot_be_decoded_is_named_with_what_to_do():
    depth = _depth()
    # A 16-bit image through compressed with jpeg (the transport's default format): 8 bits.
    _, jpg = cv2.imencode(".jpg", (depth >> 8).astype(np.uint8))
    with pytest.raises(FrameError, match=r"JPEG did not keep its 16-bit values; record the raw "
                       r"topic, or compressedDepth / compressed with png"):
        decode_compressed("16UC1; jpeg compressed ", jpg.tobytes())
    fmt, data = encode_compressed(depth, "16UC1", "compressedDepth", "rvl")
    with pytest.raises(FrameError, match="ends before its 64x48 pixels"):
        decode_compressed(fmt, data[: len(data) // 2])
    with pytest.raises(FrameError, match="says it is 0x48 pixels"):
        decode_compressed(fmt, data[:12] + struct.pack("<II", 0, 48) + data[20:])
    with pytest.raises(FrameError, match="no image after its 12-byte header"):
        decode_compressed(fmt, data[:12])
    fmt, data = encode_compressed(depth, "16UC1", "compressedDepth", "png")
    with pytest.raises(FrameError, match="does not decode as an image file"):
        decode_compressed(fmt, data[:200])
    with pytest.raises(FrameError, match="codec 'zstd'"):
        decode_compressed("16UC1; compressedDepth zstd", data)
    with pytest.raises(FrameError, match="encoding 'rgb8'"):
        decode_compressed("rgb8; compressedDepth png", data)
    with pytest.raises(FrameError, match=r"encoding '16UC1' .* expected one of rgb8, bgr8"):
        decode_compressed(fmt, data, ("rgb8", "bgr8"))
    with pytest.raises(FrameError, match="holds no data"):
        decode_compressed(fmt, b"")
    with pytest.raises(FrameError, match="JPEG keeps 8 bits"):
        encode_compressed(depth, "16UC1", "compressed", "jpeg")


def test_a_header_claiming_a_huge_image_is_a_frame_error_not_an_opencv_one():
    # JPEG has no header checksum: two flipped bytes make a 60000x60000 claim, which OpenCV's
    # decoder refuses by raising cv2.error (not by returning None).
    _, jpg = cv2.imencode(".jpg", np.zeros((48, 64, 3), np.uint8))
    data = bytearray(jpg.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", 60000, 60000)
    with pytest.raises(FrameError, match="refused by the decoder .*the message is corrupt"):
        decode_compressed("bgr8; jpeg compressed bgr8", bytes(data))


def test_transport_topics_are_named_as_image_transport_names_them():
    assert transport_of("/camera/camera/depth/image_rect_raw/compressedDepth") == "compressedDepth"
    assert transport_of("/lepton/image_raw/compressed") == "compressed"
    assert transport_of("/lepton/image_raw") is None
    assert base_topic("/lepton/image_raw/compressed") == "/lepton/image_raw"
    assert base_topic("/lepton/image_raw") == "/lepton/image_raw"
    assert transport_topics("depth/image_raw", depth=True) == (
        "depth/image_raw/compressedDepth", "depth/image_raw/compressed")
    assert transport_topics("/lepton/image_raw", depth=False)[0] == "/lepton/image_raw/compressed"
