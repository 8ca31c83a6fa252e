"""Images recorded through image_transport's ``compressed`` and ``compressedDepth`` transports.

Robots seldom record raw depth: 848x480 16-bit frames at 30 Hz are 24 MB/s, so bags hold
``sensor_msgs/CompressedImage`` topics such as ``/camera/camera/depth/image_rect_raw/
compressedDepth`` instead. This module decodes them without ROS (OpenCV and numpy), so that
every offline tool and the bag player read them as the raw images they stand for.

The two formats, as image_transport_plugins writes them:

- ``compressed``: the ``format`` field is ``"<encoding>; <codec> compressed <target>"`` (older
  publishers: just ``"jpeg"`` or ``"png"``) and ``data`` an image file. A 16-bit depth or
  thermal image survives only as PNG (or TIFF): JPEG keeps 8 bits.
- ``compressedDepth``: ``format`` is ``"<encoding>; compressedDepth png"`` (or ``rvl``; older
  publishers wrote no codec, meaning png) and ``data`` a 12-byte header (int32 format, two
  float32 quantisation parameters) before the PNG file, or before the RVL stream (uint32
  columns, uint32 rows, then run-length and variable-length coded pixels). ``16UC1`` depth is
  stored as it is; ``32FC1`` depth in metres as 16-bit inverse depth ``q = a / z + b``.
  The publisher sets pixels beyond its ``depth_max`` (10 m by default) to 0, so a
  centi-kelvin thermal image (about 30 000) comes out black: thermal must go through
  ``compressed`` with png.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

from iphd.errors import FrameError
from iphd.image_codec import ENCODINGS

#: ``sensor_msgs/msg/CompressedImage``
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
#: Bytes of compressedDepth's header (int32 format, float32 depthParam[2]).
DEPTH_HEADER_BYTES = 12
_DEPTH_HEADER = struct.Struct("<iff")
_RVL_SIZE = struct.Struct("<II")
#: Largest RVL image decoded (a corrupt size must not allocate gigabytes): 64 Mpx.
MAX_RVL_PIXELS = 1 << 26


def decode_compressed(
    format: str, data: bytes, accepted: tuple[str, ...] | None = None
) -> tuple[np.ndarray, str]:
    """The pixels and encoding of a ``sensor_msgs/CompressedImage`` (either transport).

    Args:
        format: the message's ``format`` field.
        data: the message's ``data``.
        accepted: encodings the caller can use; None accepts every known encoding
            (``iphd.image_codec.ENCODINGS``).

    Returns:
        ``(pixels, encoding)``: (H, W) or (H, W, 3) pixels as ``iphd.image_codec.decode_image``
        returns them for ``encoding`` (``32FC1`` depth in metres, NaN where the publisher had
        none; ``rgb8`` / ``bgr8`` in that channel order).

    Raises:
        FrameError: a format this cannot decode, data that does not decode, or an image that
            cannot hold what its encoding says (a 16-bit image stored as an 8-bit JPEG).
    """
    text = str(format).strip()
    buffer = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if not buffer:
        raise FrameError(f"compressed image ({text!r}) holds no data; the publisher sent nothing")
    if "compresseddepth" in text.lower():
        pixels, encoding = _decode_depth(text, buffer)
    else:
        pixels, encoding = _decode_file(text, buffer)
    allowed = accepted if accepted is not None else tuple(ENCODINGS)
    if encoding not in allowed:
        raise FrameError(
            f"image encoding '{encoding}' (compressed as {text!r}) is not supported here; "
            f"expected one of {', '.join(allowed)} (check the publisher's encoding)"
        )
    return pixels, encoding


def encode_compressed(
    pixels: np.ndarray, encoding: str, transport: str = "compressedDepth", codec: str = "png"
) -> tuple[str, bytes]:
    """``(format, data)`` of a CompressedImage as image_transport_plugins writes it.

    The inverse of ``decode_compressed`` for ``16UC1`` / ``mono16`` images (``compressedDepth``
    with ``png`` or ``rvl``, ``compressed`` with ``png``) and for ``rgb8`` / ``bgr8`` / ``mono8``
    (``compressed`` with ``png`` or ``jpeg``). Used to write test bags and to check a robot's.

    Raises:
        FrameError: an encoding, transport or codec this does not write.
    """
    if encoding not in ENCODINGS:
        raise FrameError(f"cannot compress '{encoding}'; known encodings: {', '.join(ENCODINGS)}")
    dtype, channels = ENCODINGS[encoding]
    if pixels.dtype != dtype or pixels.ndim != (2 if channels == 1 else 3):
        raise FrameError(
            f"array of shape {pixels.shape} and dtype {pixels.dtype} does not fit '{encoding}'"
        )
    if transport == "compressedDepth":
        if encoding not in ("16UC1", "mono16") or codec not in ("png", "rvl"):
            raise FrameError(
                "compressedDepth is written here for 16UC1 / mono16 images with png or rvl, "
                f"not {encoding} with {codec}"
            )
        header = _DEPTH_HEADER.pack(0, 0.0, 0.0)
        if codec == "png":
            body = _imencode(".png", pixels)
        else:
            from iphd import rvl

            rows, cols = pixels.shape
            body = _RVL_SIZE.pack(cols, rows) + rvl.encode(pixels)
        return f"{encoding}; compressedDepth {codec}", header + body
    if transport != "compressed" or codec not in ("png", "jpeg"):
        raise FrameError(
            f"transport {transport!r} with codec {codec!r} is not written here; use "
            "compressedDepth (png, rvl) or compressed (png, jpeg)"
        )
    if codec == "jpeg" and dtype != np.uint8:
        raise FrameError(f"JPEG keeps 8 bits; a {encoding} image needs png")
    image = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if encoding == "rgb8" else pixels
    target = "bgr8" if channels == 3 else ""
    body = _imencode(".png" if codec == "png" else ".jpg", image)
    return f"{encoding}; {codec} compressed {target}", body


# -- compressedDepth ------------------------------------------------------------------------------


def _decode_depth(text: str, buffer: bytes) -> tuple[np.ndarray, str]:
    encoding, semicolon, rest = text.partition(";")
    encoding = encoding.strip() if semicolon else ""
    words = rest.split()
    codec = words[words.index("compressedDepth") + 1] if "compressedDepth" in words[:-1] else "png"
    if encoding not in ("16UC1", "mono16", "32FC1"):
        raise FrameError(
            f"compressedDepth image of encoding {encoding or 'none'!r} ({text!r}): only 16UC1 "
            "(mm) and 32FC1 (m) depth is written by that transport; check the publisher"
        )
    if codec not in ("png", "rvl"):
        raise FrameError(
            f"compressedDepth codec {codec!r} ({text!r}) is not one of png, rvl; record the raw "
            "topic, or the transport with png"
        )
    if len(buffer) <= DEPTH_HEADER_BYTES:
        raise FrameError(
            f"compressedDepth image ({text!r}) is {len(buffer)} bytes: no image after its "
            f"{DEPTH_HEADER_BYTES}-byte header; the message is truncated"
        )
    _, quant_a, quant_b = _DEPTH_HEADER.unpack_from(buffer)
    body = buffer[DEPTH_HEADER_BYTES:]
    coded = _imdecode(body, text) if codec == "png" else _rvl_image(body, text)
    if coded.ndim != 2 or coded.dtype != np.uint16:
        raise FrameError(
            f"compressedDepth image ({text!r}) decodes to {coded.dtype} of shape {coded.shape}, "
            "not one 16-bit channel; the message is not what its format says"
        )
    if encoding != "32FC1":
        return coded, encoding
    # 32FC1 was quantised as inverse depth q = a / z + b (0 = no depth).
    with np.errstate(divide="ignore", invalid="ignore"):
        metres = np.float32(quant_a) / (coded.astype(np.float32) - np.float32(quant_b))
    metres[coded == 0] = np.nan
    return metres.astype(np.float32, copy=False), encoding


def _rvl_image(body: bytes, text: str) -> np.ndarray:
    if len(body) < _RVL_SIZE.size:
        raise FrameError(f"RVL image ({text!r}) is too short to hold its size; it is truncated")
    cols, rows = _RVL_SIZE.unpack_from(body)
    pixels = int(rows) * int(cols)
    if pixels == 0 or pixels > MAX_RVL_PIXELS:
        raise FrameError(
            f"RVL image ({text!r}) says it is {cols}x{rows} pixels; the message is corrupt"
        )
    stream = body[_RVL_SIZE.size:]
    from iphd import rvl  # numba: loaded only for RVL images

    out = rvl.decode(stream, pixels)
    if out is None:
        raise FrameError(
            f"RVL image ({text!r}) ends before its {cols}x{rows} pixels, or codes more; the "
            "message is truncated or corrupt"
        )
    return out.reshape(int(rows), int(cols))


# -- compressed -----------------------------------------------------------------------------------


def _decode_file(text: str, buffer: bytes) -> tuple[np.ndarray, str]:
    encoding, semicolon, rest = text.partition(";")
    encoding = encoding.strip() if semicolon else ""
    pixels = _imdecode(buffer, text)
    if not encoding:
        # Older publishers wrote only the codec: mono8 / bgr8, or mono16 for a 16-bit PNG.
        if pixels.ndim == 2:
            encoding = "mono16" if pixels.dtype == np.uint16 else "mono8"
        else:
            encoding = "bgr8"
    if encoding not in ENCODINGS:
        raise FrameError(
            f"compressed image of encoding '{encoding}' ({text!r}) is not supported here; "
            f"known encodings: {', '.join(ENCODINGS)}"
        )
    dtype, channels = ENCODINGS[encoding]
    if pixels.dtype != dtype:
        codec = "JPEG" if buffer[:2] == b"\xff\xd8" else "its file"
        raise FrameError(
            f"a {encoding} image compressed as {text!r} decodes to {pixels.dtype}: {codec} did "
            f"not keep its {dtype.itemsize * 8}-bit values; record the raw topic, or "
            "compressedDepth / compressed with png (format parameter png)"
        )
    if channels == 3 and pixels.ndim == 2:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    elif channels == 1 and pixels.ndim == 3:
        raise FrameError(
            f"a {encoding} image compressed as {text!r} decodes to {pixels.shape[2]} channels, "
            "not one; the message is not what its format says"
        )
    if channels == 3:
        if pixels.shape[2] == 4:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR)
        # OpenCV decodes to BGR; the publisher wrote "compressed bgr8" (or, older, nothing)
        # when it stored BGR, "compressed rgb8" when it stored the channels as they were.
        stored_bgr = "compressed rgb" not in rest
        if encoding == "rgb8" and stored_bgr:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
        elif encoding == "bgr8" and not stored_bgr:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(pixels), encoding


def _imdecode(buffer: bytes, text: str) -> np.ndarray:
    try:
        pixels = cv2.imdecode(np.frombuffer(buffer, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # e.g. a header that claims more pixels than OpenCV will decode
        raise FrameError(
            f"compressed image ({text!r}, {len(buffer)} bytes) is refused by the decoder "
            f"({str(exc).strip().splitlines()[-1]}); the message is corrupt"
        ) from exc
    if pixels is None or pixels.size == 0:
        raise FrameError(
            f"compressed image ({text!r}, {len(buffer)} bytes) does not decode as an image "
            "file; the message is truncated or corrupt"
        )
    return pixels


def _imencode(suffix: str, pixels: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(suffix, pixels)
    if not ok:
        raise FrameError(f"OpenCV could not write a {suffix} of shape {pixels.shape}")
    return encoded.tobytes()
