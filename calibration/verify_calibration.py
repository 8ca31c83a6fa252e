"""Full-size check of the calibration tool against the simulator's ground truth (Markdown table).

    scripts/env.sh python calibration/verify_calibration.py --poses 25 --seed 0

Renders the board at ``--poses`` random poses in front of a simulated rig whose calibration is
off the nominal ``calibration/rig.yaml`` (translation, rotation, focal length, principal point,
clock offset), solves it starting from the nominal file, and prints recovered vs true values.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import cv2
import numpy as np

from iphd.calib.simulate import perturbed_calibration, recovery_errors, simulate_capture
from iphd.calib.solve import calibrate
from iphd.calibration import DEFAULT_CALIBRATION, load_calibration


def get_args_parser() -> argparse.ArgumentParser:
    """Command line of the check."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--poses", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default="aligned_1280x720")
    parser.add_argument("--true-clock-offset", type=float, default=0.04)
    return parser


def _angles_deg(rotation: np.ndarray) -> str:
    rvec = cv2.Rodrigues(np.asarray(rotation, dtype=np.float64))[0].ravel()
    return ", ".join(f"{v:+.3f}" for v in np.degrees(rvec))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check and print the table."""
    args = get_args_parser().parse_args(argv)
    nominal = load_calibration(DEFAULT_CALIBRATION)
    truth = perturbed_calibration(nominal, clock_offset_s=args.true_clock_offset)
    start = time.perf_counter()
    cap = simulate_capture(truth, poses=args.poses, seed=args.seed, depth_profile=args.profile)
    rendered = time.perf_counter() - start
    result = calibrate(cap.recording, nominal, source="verify_calibration.py",
                       progress=lambda line: print(line, file=sys.stderr))
    solved_s = time.perf_counter() - start - rendered
    got, want = result.calibration, truth
    err = recovery_errors(got, want, cap.recording.depth_intrinsics)
    rows = [
        ("translation (mm)", ", ".join(f"{v * 1000:+.2f}" for v in got.translation_m),
         ", ".join(f"{v * 1000:+.2f}" for v in want.translation_m),
         f"{err.translation_mm:.2f} mm", "< 5 mm"),
        ("rotation (rotation vector, deg)", _angles_deg(got.rotation), _angles_deg(want.rotation),
         f"{err.rotation_deg:.3f} deg", "< 0.3 deg"),
        ("fx (px)", f"{got.thermal.fx:.2f}", f"{want.thermal.fx:.2f}",
         f"{err.fx_percent:.2f} %", "< 1 %"),
        ("fy (px)", f"{got.thermal.fy:.2f}", f"{want.thermal.fy:.2f}",
         f"{err.fy_percent:.2f} %", ""),
        ("cx, cy (px)", f"{got.thermal.cx:.2f}, {got.thermal.cy:.2f}",
         f"{want.thermal.cx:.2f}, {want.thermal.cy:.2f}", f"{err.principal_px:.2f} px", ""),
        ("k1, k2", f"{got.thermal.distortion[0]:+.4f}, {got.thermal.distortion[1]:+.4f}",
         f"{want.thermal.distortion[0]:+.4f}, {want.thermal.distortion[1]:+.4f}", "", ""),
        ("clock offset (ms)", f"{got.thermal_clock_offset_s * 1000:+.2f}",
         f"{want.thermal_clock_offset_s * 1000:+.2f}", f"{err.clock_offset_ms:.2f} ms", "< 5 ms"),
        ("thermal reprojection RMS (px)", f"{result.intrinsics.rms_px:.3f}", "", "", "<= 0.3 px"),
        ("extrinsic reprojection RMS (px)", f"{result.extrinsic_rms_px:.3f}", "", "", ""),
        ("mean misregistration, 1-5 m (thermal px)", f"{err.misregistration_px:.3f}", "", "",
         "<= 1 px"),
    ]
    kept = int(result.intrinsics.kept.sum())
    print(f"Simulated rig, {args.profile}, {args.poses} poses, seed {args.seed}: {kept} views "
          f"used, {len(result.views) - kept} rejected; render {rendered:.0f} s, solve "
          f"{solved_s:.0f} s.\n")
    print("| quantity | recovered | true | error | required |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nclock offset method: {result.offset_method}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
