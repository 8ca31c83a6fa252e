"""Pictures for people: false-colour depth and thermal panels with captions (pure OpenCV)."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from iphd.tracking.tracker import TrackState


def colorize_depth(depth_mm: np.ndarray, max_m: float = 8.0) -> np.ndarray:
    """(H, W, 3) uint8 BGR false colour of a depth image; invalid (0) pixels are black."""
    scaled = np.clip(depth_mm.astype(np.float32) / (max_m * 1000.0), 0.0, 1.0)
    image = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    image[depth_mm == 0] = 0
    return image


def colorize_thermal(
    thermal_ck: np.ndarray, low_k: float = 290.0, high_k: float = 310.0
) -> np.ndarray:
    """(H, W, 3) uint8 BGR false colour of a centi-kelvin image; no-data (0) pixels are black."""
    kelvin = thermal_ck.astype(np.float32) / 100.0
    scaled = np.clip((kelvin - low_k) / (high_k - low_k), 0.0, 1.0)
    image = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    image[thermal_ck == 0] = 0
    return image


def fusion_panel(
    depth_mm: np.ndarray, thermal_ck: np.ndarray, registered_ck: np.ndarray, height: int = 240
) -> np.ndarray:
    """Side-by-side BGR panel: depth | raw thermal | registered thermal | registered over depth."""
    depth = colorize_depth(depth_mm)
    registered = colorize_thermal(registered_ck)
    registered = cv2.resize(
        registered, (depth.shape[1], depth.shape[0]), interpolation=cv2.INTER_NEAREST
    )
    blend = cv2.addWeighted(depth, 0.5, registered, 0.5, 0.0)
    tiles = []
    for title, tile in (
        ("depth (mm)", depth),
        ("thermal (raw)", colorize_thermal(thermal_ck)),
        ("thermal registered to depth", registered),
        ("overlay", blend),
    ):
        width = int(round(tile.shape[1] * height / tile.shape[0]))
        tile = cv2.resize(tile, (width, height), interpolation=cv2.INTER_NEAREST)
        cv2.putText(
            tile, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA
        )
        tiles.append(tile)
    return np.hstack(tiles)


def track_rgb(track_id: int) -> tuple[float, float, float]:
    """A colour of its own for each track id, RGB in 0..1 (golden-ratio hues).

    Neighbouring ids differ. RViz's markers and the pictures share it, so an id looks the same
    in both.
    """
    return colorsys.hsv_to_rgb((track_id * 0.618033988749895) % 1.0, 0.75, 0.95)


def track_colour(track_id: int) -> tuple[int, int, int]:
    """``track_rgb`` as an OpenCV BGR colour (0..255)."""
    r, g, b = track_rgb(track_id)
    return round(b * 255), round(g * 255), round(r * 255)


def render_tracks_image(
    depth_mm: np.ndarray | None,
    tracks: Sequence[TrackState],
    size: tuple[int, int],
    max_depth_m: float = 8.0,
) -> np.ndarray:
    """Picture of a frame's tracks: each box in its id's colour, labelled, over grey depth.

    Args:
        depth_mm: (H, W) uint16 depth in millimetres of the tracks' stamp (0 = invalid), or
            None (a black picture: the tracker had no depth frame at that stamp).
        tracks: the tracker's tracks; their ``box_xyxy`` is in depth pixels (None while lost:
            not drawn). Confirmed tracks are drawn bold with ``id N``, tentative
            ones thin with ``id N?``.
        size: (width, height) of the picture, the detections' image size.
        max_depth_m: depth shown white; nearer is darker.

    Returns:
        (height, width, 3) uint8 BGR image.
    """
    width, height = size
    if depth_mm is not None and depth_mm.shape == (height, width):
        grey = np.clip(depth_mm.astype(np.float32) / (max_depth_m * 1000.0), 0.0, 1.0)
        image = cv2.cvtColor((grey * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    else:
        image = np.zeros((height, width, 3), np.uint8)
    scale = max(0.35, min(width, height) / 600.0)
    for track in tracks:
        if track.box_xyxy is None:
            continue
        confirmed = track.state == "confirmed"
        colour = track_colour(track.track_id)
        x1, y1, x2, y2 = (int(round(float(v))) for v in track.box_xyxy)
        cv2.rectangle(image, (x1, y1), (max(x2 - 1, x1), max(y2 - 1, y1)), colour,
                      2 if confirmed else 1)
        put_label(image, f"id {track.track_id}" + ("" if confirmed else "?"),
                  (x1 + 2, max(y1 - 4, 10)), colour, scale, 2 if confirmed else 1)
    return image


def put_label(
    image: np.ndarray, text: str, origin: tuple[int, int], colour: tuple[int, int, int],
    scale: float, thickness: int = 1,
) -> None:
    """Write ``text`` in ``colour`` with a black outline, readable on light and dark pixels."""
    for ink, width in (((0, 0, 0), thickness + 2), (colour, thickness)):
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, ink, width,
                    cv2.LINE_AA)
