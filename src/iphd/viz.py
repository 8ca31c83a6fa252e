"""Pictures for people: false-colour depth and thermal panels with captions (pure OpenCV)."""

from __future__ import annotations

import cv2
import numpy as np


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
