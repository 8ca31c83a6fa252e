"""image_transport's topic names: an image topic and the compressed transports beside it.

image_transport publishes ``<image>`` raw and, with its plugins, ``<image>/compressed``
(``sensor_msgs/CompressedImage``, an image file) and ``<image>/compressedDepth`` (depth's own
PNG or RVL coding); the camera's ``camera_info`` sits beside ``<image>``. Decoding lives in
``iphd.compressed_images``; this module only names topics, so the graph description and the
launch file can use it without OpenCV.
"""

from __future__ import annotations

#: image_transport's compressed transports, by the name they append to the image topic.
TRANSPORTS = ("compressed", "compressedDepth")


def transport_of(topic: str) -> str | None:
    """The compressed transport ``topic`` is published on (its last name), else None."""
    last = topic.rstrip("/").rpartition("/")[2]
    return last if last in TRANSPORTS else None


def base_topic(topic: str) -> str:
    """The raw image topic a transport topic stands for, other topics as they are.

    ``.../image_raw/compressed`` -> ``.../image_raw``.
    """
    if transport_of(topic) is None:
        return topic
    return topic.rstrip("/").rpartition("/")[0]


def transport_topics(topic: str, depth: bool) -> tuple[str, ...]:
    """The transport topics of the image ``topic``, in the order a reader should prefer them.

    A depth image prefers ``compressedDepth`` (its own codec; ``compressed`` of a 16-bit image
    is often an 8-bit JPEG), any other image ``compressed`` (``compressedDepth`` zeroes a
    thermal image's values above its ``depth_max``).
    """
    order = ("compressedDepth", "compressed") if depth else ("compressed", "compressedDepth")
    return tuple(f"{topic.rstrip('/')}/{name}" for name in order)
