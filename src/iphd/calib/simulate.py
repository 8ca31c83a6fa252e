"""Simulated calibration recordings with a known answer, and errors of a solve against it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from iphd.calib.solve import Recording, project_points
from iphd.calibration import RigCalibration, calibration_from_dict
from iphd.sensors.frames import CameraIntrinsics
from iphd.sim.rig import RigSimulator, SensorConfig
from iphd.sim.scene import SceneConfig
from iphd.sim.target import CalibrationTarget, TargetSpec, random_motion


def perturbed_calibration(
    base: RigCalibration, *, translation_m: tuple[float, float, float] = (0.02, 0.04, -0.01),
    rotation_deg: tuple[float, float, float] = (1.0, -1.5, 0.5), fx_scale: float = 1.05,
    fy_scale: float = 1.05, principal_shift_px: tuple[float, float] = (1.5, -1.0),
    distortion: tuple[float, float, float, float, float] | None = None,
    clock_offset_s: float = 0.04,
) -> RigCalibration:
    """A "true" rig that differs from ``base`` (the nominal file) the way a real mount does.

    Args:
        base: the calibration to start from.
        translation_m: the true depth->thermal translation.
        rotation_deg: the true extrinsic rotation as XYZ Euler angles in degrees.
        fx_scale: true fx over the base's.
        fy_scale: true fy over the base's.
        principal_shift_px: added to (cx, cy).
        distortion: true plumb_bob coefficients; None keeps the base's.
        clock_offset_s: the true thermal clock offset.
    """
    data = base.to_dict()
    th = data["thermal"]
    th["fx"] *= fx_scale
    th["fy"] *= fy_scale
    th["cx"] += principal_shift_px[0]
    th["cy"] += principal_shift_px[1]
    if distortion is not None:
        th["distortion"] = [float(v) for v in distortion]
    quat = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_quat()
    data["extrinsic_depth_to_thermal"] = {
        "rotation_xyzw": [float(v) for v in quat],
        "translation_m": [float(v) for v in translation_m],
    }
    data["clock"] = {"thermal_offset_s": float(clock_offset_s)}
    data["meta"] = {"source": "simulated true rig"}
    return calibration_from_dict(data, "<true rig>")


@dataclass(frozen=True)
class SimulatedCapture:
    """A rendered calibration recording and the simulator that made it."""

    recording: Recording
    simulator: RigSimulator
    truth: RigCalibration


def simulate_capture(
    truth: RigCalibration, *, poses: int = 12, seed: int = 0,
    depth_profile: str = "aligned_640x360", spec: TargetSpec | None = None,
    max_tilt_deg: float = 35.0, progress: Callable[[int, int], None] | None = None,
) -> SimulatedCapture:
    """Render the board held at ``poses`` random poses in front of the rig ``truth``.

    The first four poses go toward the view's four corners, as the capture instructions ask.

    The thermal stamps carry ``truth.thermal_clock_offset_s``; frames frozen by a flat-field
    correction are dropped, as the Lepton driver does.

    Args:
        truth: the rig to simulate (geometry and clock offset).
        poses: number of board poses.
        seed: scene, motion and noise seed.
        depth_profile: D435 profile (``iphd.sim.rig.PROFILES`` or a smaller one).
        spec: the board; default ``TargetSpec()``.
        max_tilt_deg: largest board tilt (a few degrees gives a degenerate, fronto-parallel set).
        progress: called with (frames done, frames total).
    """
    spec = spec or TargetSpec()
    motion = random_motion(np.random.default_rng([seed, 0xCA1]), poses, spec,
                           max_tilt_deg=max_tilt_deg, corners=True)
    sim = RigSimulator(
        truth, [], motion.duration_s + 0.5, seed,
        SensorConfig(depth_profile=depth_profile,
                     thermal_clock_offset_s=truth.thermal_clock_offset_s),
        SceneConfig(distractor_scale=0.0, people_weights=(1.0,)),
        target=CalibrationTarget(spec, motion),
    )
    total = sim.n_depth + sim.n_thermal
    depth, depth_ns = [], []
    for j in range(sim.n_depth):
        sample = sim.render_depth(j)
        depth.append(sample.depth_mm)
        depth_ns.append(sample.stamp_ns)
        if progress is not None:
            progress(j + 1, total)
    thermal, thermal_ns = [], []
    for k in range(sim.n_thermal):
        if not sim.ffc_active(sim.thermal_time(k)):
            frame = sim.render_thermal(k)
            thermal.append(frame.thermal_ck)
            thermal_ns.append(frame.stamp_ns)
        if progress is not None:
            progress(sim.n_depth + k + 1, total)
    rec = Recording(sim.depth_intrinsics, np.array(depth_ns), depth, np.array(thermal_ns),
                    thermal)
    return SimulatedCapture(rec, sim, truth)


def misregistration_px(
    depth_intrinsics: CameraIntrinsics, solved: RigCalibration, truth: RigCalibration,
    depths_m: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0), step_px: int = 16,
) -> float:
    """Mean thermal-pixel distance between where two calibrations put the same 3D points.

    Points: every ``step_px``-th depth pixel back-projected to each of ``depths_m`` (where
    people are), kept where the true calibration lands them inside the thermal image.
    """
    di = depth_intrinsics
    vv, uu = np.mgrid[0:di.height:step_px, 0:di.width:step_px].reshape(2, -1).astype(np.float64)
    rays = np.stack([(uu - di.cx) / di.fx, (vv - di.cy) / di.fy, np.ones_like(uu)], axis=1)
    pts = np.concatenate([rays * z for z in depths_m])
    true_px = project_points(pts, truth.rotation, truth.translation_m, truth.thermal)
    solved_px = project_points(pts, solved.rotation, solved.translation_m, solved.thermal)
    th = truth.thermal
    inside = ((true_px[:, 0] >= 0) & (true_px[:, 0] <= th.width - 1) & (true_px[:, 1] >= 0)
              & (true_px[:, 1] <= th.height - 1))
    return float(np.linalg.norm(true_px[inside] - solved_px[inside], axis=1).mean())


@dataclass(frozen=True)
class RecoveryErrors:
    """Errors of a solved calibration against the truth.

    Attributes:
        translation_mm: norm of the translation difference.
        rotation_deg: angle of the relative rotation.
        fx_percent: |fx - fx_true| / fx_true in percent.
        fy_percent: same for fy.
        principal_px: distance between principal points.
        clock_offset_ms: |offset - offset_true|.
        misregistration_px: ``misregistration_px`` (mean, thermal pixels).
    """

    translation_mm: float
    rotation_deg: float
    fx_percent: float
    fy_percent: float
    principal_px: float
    clock_offset_ms: float
    misregistration_px: float


def recovery_errors(solved: RigCalibration, truth: RigCalibration,
                    depth_intrinsics: CameraIntrinsics) -> RecoveryErrors:
    """Compare a solved calibration with the true one."""
    rel = np.asarray(solved.rotation) @ np.asarray(truth.rotation).T
    angle = float(np.degrees(np.arccos(np.clip((np.trace(rel) - 1.0) / 2.0, -1.0, 1.0))))
    s, t = solved.thermal, truth.thermal
    return RecoveryErrors(
        translation_mm=float(np.linalg.norm(solved.translation_m - truth.translation_m)) * 1000,
        rotation_deg=angle,
        fx_percent=abs(s.fx - t.fx) / t.fx * 100.0,
        fy_percent=abs(s.fy - t.fy) / t.fy * 100.0,
        principal_px=float(np.hypot(s.cx - t.cx, s.cy - t.cy)),
        clock_offset_ms=abs(solved.thermal_clock_offset_s - truth.thermal_clock_offset_s) * 1000,
        misregistration_px=misregistration_px(depth_intrinsics, solved, truth),
    )
