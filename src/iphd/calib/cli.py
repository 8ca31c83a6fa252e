"""``iphd-calibrate``: solve the rig calibration from a recorded bag (or a simulated capture).

    ros2 bag record -o calib_bag depth/image_raw depth/camera_info thermal/image_raw
    iphd-calibrate --bag calib_bag --out calibration/rig.yaml --overlay calib_check.png
    iphd-calibrate --sim --poses 20 --true-clock-offset 0.04 --out /tmp/rig.yaml

The file is written only when every check passes; on bad input the tool exits with status 2
and says what to record differently.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from iphd.calib.report import overlay_png, summary
from iphd.calib.solve import (
    CalibConfig,
    CalibrationInputError,
    Recording,
    board_spec,
    calibrate,
)
from iphd.calibration import (
    DEFAULT_CALIBRATION,
    RigCalibration,
    calibration_from_dict,
    load_calibration,
    save_calibration,
)
from iphd.data.output import replace_file
from iphd.errors import IphdError
from iphd.graph import (
    OFFLINE_TOPIC_ARGUMENTS,
    add_topic_arguments,
    topics_from_args,
    with_camera_infos,
)
from iphd.sensors.frames import CameraIntrinsics
from iphd.sim.target import TargetSpec
from iphd.transports import transport_of, transport_topics

BAG_TOPICS = ("depth/image_raw", "depth/camera_info", "thermal/image_raw")


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of ``iphd-calibrate``."""
    parser = argparse.ArgumentParser(
        prog="iphd-calibrate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--bag", type=Path, help="rosbag2 with depth/image_raw, depth/camera_info "
                     "and thermal/image_raw of the board being moved and held")
    src.add_argument("--sim", action="store_true", help="render a capture with the simulator "
                     "for a rig with a known calibration and report the errors")
    parser.add_argument("--out", type=Path, required=True, help="rig.yaml to write")
    parser.add_argument("--overlay", type=Path, help="PNG to write: edge overlay + coverage")
    parser.add_argument("--initial", type=Path, default=DEFAULT_CALIBRATION,
                        help="starting calibration (thermal size, nominal K, frame names)")
    parser.add_argument("--min-views", type=int, default=CalibConfig.min_views,
                        help="fewest still views accepted (default %(default)s)")
    board = parser.add_argument_group("board (defaults: calibration/README.md)")
    board.add_argument("--columns", type=int, default=TargetSpec.columns, help="holes per row")
    board.add_argument("--rows", type=int, default=TargetSpec.rows, help="rows of holes")
    board.add_argument("--spacing-mm", type=float, default=TargetSpec.spacing_m * 1000,
                       help="row spacing d (holes in a row are 2 d apart)")
    board.add_argument("--hole-diameter-mm", type=float,
                       default=TargetSpec.hole_radius_m * 2000, help="hole diameter")
    sim = parser.add_argument_group("simulation (--sim)")
    sim.add_argument("--seed", type=int, default=0, help="scene and motion seed")
    sim.add_argument("--poses", type=int, default=20, help="board poses to render")
    sim.add_argument("--profile", default="aligned_1280x720", help="D435 depth profile")
    sim.add_argument("--true-calibration", type=Path,
                     help="rig.yaml of the simulated rig (default: the initial one perturbed: "
                     "t = (20, 40, -10) mm, ~2 deg rotation, fx +5 %%)")
    sim.add_argument("--true-clock-offset", type=float,
                     help="true thermal clock offset in s (default 0.04, or the true file's)")
    sim.add_argument("--save-bag", type=Path, metavar="BAG",
                     help="also write the rendered capture as a rosbag2, as calib_capture "
                     "records one (for --bag, the capture node's replay, or your own tools)")
    add_topic_arguments(parser, OFFLINE_TOPIC_ARGUMENTS, "the bag's")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def _save_bag(path: Path, rec: Recording, calibration: RigCalibration) -> None:
    """Write a rendered capture as the capture node records one (the initial calibration in it).

    ``main`` has refused an existing ``path`` before rendering.
    """
    from iphd.data.rosbag import RigBagWriter

    with RigBagWriter(path, calibration, rec.depth_intrinsics) as bag:
        for stamp, frame in zip(rec.depth_stamps_ns, rec.depth_mm, strict=True):
            bag.write_depth(int(stamp), frame)
        for stamp, frame in zip(rec.thermal_stamps_ns, rec.thermal_ck, strict=True):
            bag.write_thermal(int(stamp), frame)


def _find_topic(
    names: Sequence[str], suffix: str, path: Path, renamed: Mapping[str, str] | None = None
) -> str:
    """The bag topic that is ``suffix`` or ends with ``/suffix`` (namespaced recordings).

    A topic ``renamed`` gives for ``suffix`` (``--depth-topic``) is the only one looked for;
    an image found on neither takes its ``compressedDepth`` / ``compressed`` transport.
    """
    wanted = with_camera_infos(renamed).get(suffix, "")
    hits: list[str] = []
    candidates = [wanted or suffix]
    if transport_of(candidates[0]) is None and "image" in suffix:
        # An image recorded only through image_transport's compressed transports.
        candidates += transport_topics(candidates[0], depth=suffix.startswith("depth/"))
    for candidate in candidates:
        if wanted:
            hits = [n for n in names if n.lstrip("/") == candidate.lstrip("/")]
        else:
            hits = [n for n in names if n.lstrip("/") == candidate or n.endswith("/" + candidate)]
        if hits:
            break
    if len(hits) != 1:
        found = "none" if not hits else ", ".join(hits)
        name = f"{wanted} (given for {suffix})" if wanted else suffix
        raise CalibrationInputError(
            f"{path}: need exactly one topic named {name} (found {found}; the bag has "
            f"{', '.join(sorted(names)) or 'no topics'}); record it with "
            f"ros2 bag record {' '.join(BAG_TOPICS)}, or name a driver's own topics with "
            "--depth-topic, --depth-info-topic and --thermal-topic"
        )
    return hits[0]


def read_bag(
    path: Path, quiet: bool = False, topics: Mapping[str, str] | None = None
) -> Recording:
    """Read the depth and thermal streams of a calibration bag into memory.

    ``topics`` names the bag's depth and thermal topics when a driver recorded them under its
    own names (``depth/image_raw`` -> ``/camera/camera/depth/image_rect_raw``, ...).

    Raises:
        DatasetError: unreadable bag.
        CalibrationInputError: topics missing or no depth camera info.
    """
    from iphd.data.rosbag import (
        BagReader,
        camera_info_to_intrinsics,
        header_stamp_ns,
        image_to_array,
        read_static_transforms,
    )

    with BagReader(path) as reader:
        names = list(reader.topics)
        depth_topic, info_topic, thermal_topic = (
            _find_topic(names, s, path, topics) for s in BAG_TOPICS
        )
        intr: CameraIntrinsics | None = None
        depth: dict[int, np.ndarray] = {}
        thermal: dict[int, np.ndarray] = {}
        frames = {depth_topic: "", thermal_topic: ""}
        total = sum(reader.topics[t].count for t in (depth_topic, info_topic, thermal_topic))
        with tqdm(total=total, unit="msg", desc="reading bag", disable=quiet,
                  file=sys.stderr) as bar:
            for topic, _, _, msg in reader.messages([depth_topic, info_topic, thermal_topic]):
                bar.update(1)
                if topic == info_topic:
                    intr = intr or camera_info_to_intrinsics(msg)
                elif topic == depth_topic:
                    depth[header_stamp_ns(msg)] = image_to_array(msg, ("16UC1", "mono16"))
                else:
                    thermal[header_stamp_ns(msg)] = image_to_array(msg, ("16UC1", "mono16"))
                if topic in frames and not frames[topic]:
                    frames[topic] = str(msg.header.frame_id)
        # Where the depth driver placed its frame, if the recording kept its /tf_static.
        depth_frame = frames[depth_topic].strip("/")
        parents = tuple(tf.parent for tf in read_static_transforms(reader)
                        if tf.child.strip("/") == depth_frame)
    if intr is None:
        raise CalibrationInputError(f"{path}: no message on {info_topic}; record it as well")
    d_ns = sorted(depth)
    t_ns = sorted(thermal)
    return Recording(intr, np.array(d_ns), [depth[s] for s in d_ns], np.array(t_ns),
                     [thermal[s] for s in t_ns], depth_frame=frames[depth_topic],
                     thermal_frame=frames[thermal_topic],
                     depth_parents=parents)


def _sim_truth(args: argparse.Namespace, initial: RigCalibration) -> RigCalibration:
    from iphd.calib.simulate import perturbed_calibration
    from iphd.calibration import calibration_from_dict

    if args.true_calibration is None:
        offset = 0.04 if args.true_clock_offset is None else args.true_clock_offset
        return perturbed_calibration(initial, clock_offset_s=offset)
    truth = load_calibration(args.true_calibration)
    if args.true_clock_offset is None:
        return truth
    data = truth.to_dict()
    data["clock"] = {"thermal_offset_s": float(args.true_clock_offset)}
    return calibration_from_dict(data, args.true_calibration)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``iphd-calibrate``; returns the exit status (0 ok, 2 bad input or failed solve)."""
    args = get_args_parser().parse_args(argv)
    say = (lambda _line: None) if args.quiet else (lambda line: print(line, file=sys.stderr))
    try:
        if args.save_bag is not None and (not args.sim or args.save_bag.exists()):
            raise CalibrationInputError(
                f"--save-bag {args.save_bag} exists already; choose another folder"
                if args.sim else "--save-bag writes a rendered capture: it goes with --sim"
            )
        for option, target in (("--out", args.out), ("--overlay", args.overlay)):
            if target is None:
                continue
            if not target.parent.resolve().is_dir():
                raise CalibrationInputError(
                    f"the folder of {target} does not exist; create it or choose another path"
                )
            if target.is_dir():
                raise CalibrationInputError(
                    f"{option} {target} is a folder; give the path of the file to write"
                )
        if args.overlay is not None and args.overlay.suffix.lower() != ".png":
            raise CalibrationInputError(f"--overlay {args.overlay} must be a .png file")
        if not args.sim:
            given = [option for option, value in (
                ("--poses", args.poses != 20), ("--seed", args.seed != 0),
                ("--profile", args.profile != "aligned_1280x720"),
                ("--true-calibration", args.true_calibration is not None),
                ("--true-clock-offset", args.true_clock_offset is not None),
            ) if value]
            if given:
                raise CalibrationInputError(
                    f"{', '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} to --sim; "
                    "leave them out with --bag"
                )
        spec = board_spec(args.columns, args.rows, args.spacing_mm, args.hole_diameter_mm,
                          ("--columns", "--rows", "--spacing-mm", "--hole-diameter-mm"))
        if args.min_views < 3:
            raise CalibrationInputError(
                f"--min-views must be >= 3 (OpenCV needs 3 views), got {args.min_views}"
            )
        cfg = CalibConfig(spec=spec, min_views=args.min_views)
        initial = load_calibration(args.initial)
        truth = None
        if args.sim:
            from iphd.calib.simulate import simulate_capture

            truth = _sim_truth(args, initial)
            with tqdm(unit="frame", desc="rendering", disable=args.quiet,
                      file=sys.stderr) as bar:
                def step(done: int, total: int) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                capture = simulate_capture(truth, poses=args.poses, seed=args.seed,
                                           depth_profile=args.profile, spec=cfg.spec,
                                           progress=step)
            rec = capture.recording
            source = (f"simulated capture (seed {args.seed}, {args.poses} poses, "
                      f"{args.profile})")
            if args.save_bag is not None:
                _save_bag(args.save_bag, rec, initial)
                say(f"wrote the capture to {args.save_bag}")
        else:
            rec = read_bag(args.bag, args.quiet, topics_from_args(args, OFFLINE_TOPIC_ARGUMENTS))
            source = f"bag {args.bag}"
        say(f"{len(rec.depth_mm)} depth and {len(rec.thermal_ck)} thermal frames")
        result = calibrate(rec, initial, cfg, source=source, progress=say)
        # What the nodes will load is checked before it is written (two streams in one frame,
        # an extrinsic out of range): the loader's refusal, with nothing written.
        calibration_from_dict(result.calibration.to_dict(), args.out)
        # Drawn before anything is written: a picture that fails leaves no rig.yaml behind.
        picture = None if args.overlay is None else (args.overlay, overlay_png(result, rec))
    except (IphdError, ValueError) as exc:
        print(f"iphd-calibrate: error: {exc}", file=sys.stderr)
        print(f"iphd-calibrate: nothing written to {args.out}", file=sys.stderr)
        return 2
    written: list[Path] = []
    try:
        if picture is not None:
            replace_file(*picture)
            written.append(picture[0])
        save_calibration(result.calibration, args.out)
    except OSError as exc:
        failed = args.out if written else (picture[0] if picture else args.out)
        print(f"iphd-calibrate: error: cannot write {failed}: {exc.strerror or exc}; choose "
              "another path or free disk space, and run again", file=sys.stderr)
        print(f"iphd-calibrate: nothing written to {args.out}"
              + (f" (the check picture {written[0]} was)" if written else ""), file=sys.stderr)
        return 2
    print(summary(result, cfg))
    if truth is not None:
        from iphd.calib.simulate import recovery_errors

        err = recovery_errors(result.calibration, truth, rec.depth_intrinsics)
        print(
            f"errors against the simulated truth: translation {err.translation_mm:.2f} mm, "
            f"rotation {err.rotation_deg:.3f} deg, fx {err.fx_percent:.2f} %, fy "
            f"{err.fy_percent:.2f} %, principal point {err.principal_px:.2f} px, clock "
            f"{err.clock_offset_ms:.2f} ms, misregistration {err.misregistration_px:.2f} px"
        )
    print(f"wrote {args.out}" + (f" and {args.overlay}" if args.overlay else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
