"""A tiny IPHD-format dataset with warm, near 'people' on a cool far wall, built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iphd.data.iphd import finalize_split, frame_meta, frame_name, write_frame

DEPTH_W, DEPTH_H = 128, 72  # depth frame size (px); thermal is 1/6 of it, as IPHD
THERMAL_W, THERMAL_H = 21, 12
ANY_SIZE = {"depth_size": None, "thermal_size": None}


def tiny_frame(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One depth/thermal pair with 1–2 people; returns (depth_mm, thermal_ck, boxes_xyxy)."""
    depth = np.full((DEPTH_H, DEPTH_W), 6000, dtype=np.uint16)
    thermal = np.full((THERMAL_H, THERMAL_W), 29515, dtype=np.uint16)
    boxes = []
    for _ in range(int(rng.integers(1, 3))):
        w = int(rng.integers(14, 28))
        h = int(min(DEPTH_H - 2, 2.2 * w))
        x1 = int(rng.integers(0, DEPTH_W - w))
        y1 = int(rng.integers(0, DEPTH_H - h))
        depth[y1 : y1 + h, x1 : x1 + w] = 2500
        tx1, ty1 = x1 * THERMAL_W // DEPTH_W, y1 * THERMAL_H // DEPTH_H
        tx2 = max(tx1 + 1, (x1 + w) * THERMAL_W // DEPTH_W)
        ty2 = max(ty1 + 1, (y1 + h) * THERMAL_H // DEPTH_H)
        thermal[ty1:ty2, tx1:tx2] = 30715
        boxes.append([x1, y1, x1 + w, y1 + h])
    return depth, thermal, np.asarray(boxes, dtype=np.float64)


def make_tiny_iphd(root: Path, frames: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Write splits (default train 8, valid 4, test 4) of tiny frames under ``root``."""
    rng = np.random.default_rng(seed)
    for seq, (split, count) in enumerate((frames or {"train": 8, "valid": 4, "test": 4}).items()):
        names, metas = [], []
        for i in range(count):
            name = frame_name(seq, i)
            depth, thermal, boxes = tiny_frame(rng)
            write_frame(root, split, name, depth, thermal, boxes, boxes)
            names.append(name)
            metas.append(frame_meta(name, seq, i, i * 100_000_000, []))
        finalize_split(root, split, names, metas)
    return root
