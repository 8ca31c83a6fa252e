"""Contact sheet: depth | thermal | registered thermal | RGB of simulated scenes, with boxes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from iphd.calibration import RigCalibration
from iphd.data.output import check_count, check_file_output, replace_file
from iphd.errors import DatasetError
from iphd.registration import Registrar
from iphd.sim.body import make_identity
from iphd.sim.generate import IPHD_OUT_SIZE, people_count, sequence_seeds
from iphd.sim.labels import WeakLabelConfig, clean_boxes, weak_boxes
from iphd.sim.rig import RigSimulator, SensorConfig, warm_object_boxes
from iphd.sim.scene import SceneConfig
from iphd.viz import colorize_depth, colorize_thermal

CLEAN_BGR = (80, 255, 80)
WEAK_BGR = (0, 160, 255)


def _boxes(image: np.ndarray, boxes: np.ndarray, scale: float, colour: tuple[int, int, int],
           thickness: int = 2) -> None:
    for x1, y1, x2, y2 in boxes * scale:
        cv2.rectangle(image, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1), colour, thickness)


def _caption(tile: np.ndarray, text: str) -> np.ndarray:
    cv2.putText(tile, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                cv2.LINE_AA)
    return tile


def contact_sheet(
    calibration: RigCalibration, seed: int, rows: int = 4, tile_height: int = 180,
    sensors: SensorConfig | None = None, scene: SceneConfig | None = None,
) -> np.ndarray:
    """(H, W, 3) uint8 BGR sheet of ``rows`` scenes drawn from ``seed``.

    Columns: depth (mm, false colour), raw Lepton thermal, thermal registered into the depth
    frame at IPHD scale (black = zero patches), and the aligned RGB view. Green boxes are the
    clean labels, orange the weak ones.
    """
    sensors = sensors or SensorConfig()
    scene = scene or SceneConfig()
    lines = []
    for sub in sequence_seeds(seed, rows, 9):
        rng = np.random.default_rng([sub, 0x9E0])
        n = max(1, people_count(rng, scene.people_weights))
        people = [make_identity(int(p), seed) for p in rng.choice(500, n, replace=False)]
        sim = RigSimulator(calibration, people, 12.0, sub, sensors, scene)
        # Of a few instants, show the one with the most people in view.
        best = None
        for k in rng.integers(12, max(sim.n_thermal - 1, 13), 4):
            thermal = sim.render_thermal(int(k))
            depth = sim.render_depth(sim.nearest_depth_index(thermal.t_s), rgb=True)
            if best is None or len(depth.people) > len(best[1].people):
                best = (thermal, depth)
        assert best is not None
        thermal, depth = best
        registered = Registrar(sim.depth_intrinsics, calibration, IPHD_OUT_SIZE).register(
            depth.depth_mm, thermal.thermal_ck
        )
        di = sim.depth_intrinsics
        clean = clean_boxes(depth.people, di.height)
        weak = weak_boxes(rng, clean, rng.normal(0, 0.05, 2), warm_object_boxes(sim),
                          (di.width, di.height), WeakLabelConfig())
        s = tile_height / di.height
        width = int(round(di.width * s))
        d = cv2.resize(colorize_depth(depth.depth_mm), (width, tile_height),
                       interpolation=cv2.INTER_AREA)
        r = cv2.resize(colorize_thermal(registered), (width, tile_height),
                       interpolation=cv2.INTER_NEAREST)
        assert depth.rgb is not None
        c = cv2.resize(depth.rgb[..., ::-1], (width, tile_height), interpolation=cv2.INTER_AREA)
        for tile in (d, r, c):
            _boxes(tile, weak, s, WEAK_BGR, 1)
            _boxes(tile, clean, s, CLEAN_BGR, 1)
        t = cv2.resize(colorize_thermal(thermal.thermal_ck),
                       (tile_height * 4 // 3, tile_height), interpolation=cv2.INTER_NEAREST)
        dist = ", ".join(f"{np.hypot(p.position_m[0], p.position_m[2]):.1f}" for p in
                         depth.people)
        lines.append(np.hstack([
            _caption(d, f"depth  people at {dist} m" if dist else "depth  (nobody in view)"),
            _caption(t, "Lepton 160x120"),
            _caption(r, f"registered 213x120, {100 * (registered == 0).mean():.0f}% zero"),
            _caption(c, "RGB (re-ID only)"),
        ]))
    sheet = np.vstack(lines)
    legend = np.zeros((22, sheet.shape[1], 3), np.uint8)
    cv2.putText(legend, f"iphd rig simulator, seed {seed}:  green = clean labels, "
                "orange = weak labels (IPHD-style registration error)", (6, 15),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([legend, sheet])


def write_contact_sheet(
    out: Path, *, seed: int, calibration: RigCalibration, rows: int = 4, overwrite: bool = False
) -> Path:
    """Render ``contact_sheet`` and write it as a PNG at ``out``."""
    out = Path(out)
    check_count("--rows", rows, 1)
    check_count("--seed", seed)
    if out.suffix.lower() != ".png":
        raise ValueError(f"the contact sheet is a PNG; --out must end in .png, got {out}")
    check_file_output(out, overwrite)
    image = contact_sheet(calibration, seed, rows)
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise DatasetError(f"cannot encode the contact sheet for {out}")
    replace_file(out, buf.tobytes())
    return out
