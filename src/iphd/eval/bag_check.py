"""``iphd-eval check``: will a bag run through the pipeline, and if not, what to change.

A bag recorded on a robot (``ros2 bag record`` of its drivers) fails in the offline tools for a
handful of reasons: topics under other names, another encoding or unit, a camera_info of another
size, thermal that is not centi-kelvin, clocks that do not pair, frames that do not match the
calibration, no ground truth. This reads the start of the bag, looks at each of the pipeline's
inputs as the pipeline would read it, and says what it found and what to do about each problem,
without running a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iphd.calibration import (
    DEFAULT_CALIBRATION,
    RigCalibration,
    calibration_differences,
    load_calibration,
    rig_static_transforms,
    transform_conflicts,
)
from iphd.compressed_images import COMPRESSED_IMAGE
from iphd.data.rosbag import (
    CAMERA_INFO,
    DEPTH_IMAGE,
    DEPTH_INFO,
    GROUND_TRUTH,
    IMAGE,
    PERSON_DETECTIONS,
    PERSON_TRACKS,
    THERMAL_IMAGE,
    THERMAL_INFO,
    BagReader,
    camera_info_to_intrinsics,
    header_stamp_ns,
    image_to_array,
    read_static_transforms,
    read_transform_buffer,
    unreadable_file_text,
    wal_text,
)
from iphd.errors import IphdError
from iphd.eval.pipeline import THERMAL_ENCODINGS, OfflineConfig, bag_topic_label, find_topic
from iphd.fusion import DEPTH_ENCODINGS, centi_kelvin_problem, depth_to_mm, depth_units_problem
from iphd.graph import TOPIC_ARGUMENTS
from iphd.sync import SyncConfig, Synchronizer, unpaired_reason
from iphd.transports import base_topic, transport_of

#: The pipeline's inputs in the order they are reported: (role, topic, type, required).
ROLES: tuple[tuple[str, str, str, bool], ...] = (
    ("depth image", DEPTH_IMAGE, IMAGE, True),
    ("depth info", DEPTH_INFO, CAMERA_INFO, True),
    ("thermal image", THERMAL_IMAGE, IMAGE, True),
    ("thermal info", THERMAL_INFO, CAMERA_INFO, False),
    ("ground truth", GROUND_TRUTH, PERSON_TRACKS, False),
)
#: Images decoded per topic to describe it (encoding, size, values).
SAMPLE_IMAGES = 5
#: Thermal frames whose depth partner is looked for.
SAMPLE_PAIRS = 50
#: Least share of sampled thermal frames with a depth frame within ``max_skew_ms``.
MIN_PAIRED = 0.5


@dataclass
class TopicCheck:
    """What was found for one of the pipeline's inputs.

    Attributes:
        role: what the pipeline uses it for (``depth image``, ...).
        wanted: the topic looked for, as errors name it (a renamed one with its role's name).
        topic: the bag's topic; None when there is none.
        count: messages in the whole bag.
        rate_hz: messages per second over the part read; None with fewer than two.
        details: what the first messages hold (encoding, size, frame, values).
    """

    role: str
    wanted: str
    topic: str | None = None
    count: int = 0
    rate_hz: float | None = None
    details: str = ""


@dataclass
class BagCheck:
    """The result of ``check_bag``.

    Attributes:
        bag: the bag's path.
        duration_s: the bag's length.
        calibration: where the rig calibration comes from (the file, stored in the bag,
            recorded on its ``rig_calibration`` topic, or the package's nominal one).
        topics: one entry per role of ``ROLES``.
        paired: share of the sampled thermal frames the fusion's rule pairs with a depth frame
            within its ``max_skew_ms``, their stamps fed in the bag's order (``_pairs``); None
            when a stream is missing.
        median_skew_ms: median of |depth - thermal| stamps of those pairs (thermal stamps
            moved by the calibration's clock offset); None when there is none.
        problems: what stops the pipeline or makes its output wrong, each with what to do.
        notes: what does not stop it but should be known (no ground truth, ...).
    """

    bag: str
    duration_s: float = 0.0
    calibration: str = ""
    topics: list[TopicCheck] = field(default_factory=list)
    paired: float | None = None
    median_skew_ms: float | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_bag(
    bag: Path | str,
    topics: Mapping[str, str] | None = None,
    calibration: str = "",
    seconds: float = 10.0,
    max_skew_ms: float = 20.0,
    max_wait_ms: float = OfflineConfig.max_wait_ms,
) -> BagCheck:
    """Check the first ``seconds`` of ``bag`` as the offline pipeline would read it.

    Args:
        bag: the bag folder (or .db3/.mcap file).
        topics: the bag's topics under other names (``OfflineConfig.topics``).
        calibration: rig.yaml to check against; empty = the bag's own, else the package's.
        seconds: how much of the bag to read.
        max_skew_ms: the fusion node's ``max_skew_ms``.
        max_wait_ms: the fusion node's ``max_wait_ms``.

    Raises:
        DatasetError: the bag does not open.
        CalibrationError: ``calibration`` does not load.
    """
    result = BagCheck(str(bag))
    with BagReader(bag) as reader:
        result.duration_s = reader.duration_ns / 1e9
        if len(reader.unindexed_files) > 1:
            result.notes.append(
                f"{bag} has no metadata.yaml: its {len(reader.unindexed_files)} storage files "
                "are read as one bag, in the order of their first message (`ros2 bag reindex` "
                "writes the metadata.yaml a recorder that was not closed did not)"
            )
        for name, cut in reader.cut_off:
            result.notes.append(f"{name} was {cut.describe()}")
        for name, why in reader.unreadable_files:
            result.problems.append(unreadable_file_text(name, why))
        for log in reader.wal_logs:
            result.notes.append(wal_text(log))
        for rebuilt in reader.rebuilt:
            result.notes.append(rebuilt.describe())
        rig = _calibration(reader, calibration, result)
        stop_ns = reader.start_ns + int(seconds * 1e9)
        samples: dict[str, list[tuple[int, Any]]] = {}
        for role, name, msgtype, required in ROLES:
            check = TopicCheck(role, bag_topic_label(name, topics))
            result.topics.append(check)
            check.topic = find_topic(reader.topics, name, topics)
            if check.topic is None:
                _missing(result, check, name, required, reader.topics)
                continue
            info = reader.topics[check.topic]
            check.count = info.count
            compressed = msgtype == IMAGE and info.msgtype == COMPRESSED_IMAGE
            if info.msgtype != msgtype and not compressed:
                result.problems.append(
                    f"{check.topic} ({role}) is {info.msgtype}, not {msgtype}: give the "
                    f"{role}'s topic with --{_option(name)}"
                )
                continue
            if compressed:
                _compressed_note(result, check, role, name)
            if name == DEPTH_IMAGE and "aligned_depth_to_" in check.topic:
                result.notes.append(
                    f"{check.topic} is depth aligned to another camera (realsense2_camera's "
                    "align_depth): its pixels and camera_info are that camera's, not the depth "
                    "camera's the calibration describes, so thermal lands off the people by "
                    "the cameras' offset; record the depth stream's own topic "
                    "(depth/image_rect_raw), or calibrate the rig on this topic "
                    "(iphd-calibrate --depth-topic)"
                )
            corrupt = reader.corrupt.get(check.topic, 0)
            samples[name] = _read(reader, check, stop_ns)
            if reader.corrupt.get(check.topic, 0) > corrupt:
                skipped = reader.corrupt[check.topic] - corrupt
                result.problems.append(
                    f"{check.topic}: {skipped} of its messages in the part read were skipped, "
                    f"the first because {reader.errors[check.topic]}"
                )
            if not samples[name] and reader.corrupt.get(check.topic, 0) == corrupt:
                if stop_ns < reader.end_ns and check.count != 0:
                    result.notes.append(
                        f"{check.topic} ({role}) has no message in the first {seconds:g} s, "
                        "so it was not looked at: read more with --seconds"
                    )
                elif required:  # the whole bag was read: reading more finds nothing
                    result.problems.append(
                        f"{check.topic} ({role}) has no message in the whole bag, so no tool "
                        f"can run on it: record the {role} (or give its topic with "
                        f"--{_option(name)})"
                    )
                else:
                    result.notes.append(f"{check.topic} ({role}) has no message in the bag")
        _describe(result, samples, rig)
        _pairs(result, samples, rig, max_skew_ms, max_wait_ms)
        _tracking_frame(result, reader, samples, stop_ns)
        _rig_transforms(result, reader, rig)
        _graph_outputs(result, reader)
        for gap in reader.gaps:
            result.problems.append(f"{bag}: {gap.describe()}")
    return result


def _tracking_frame(
    result: BagCheck, reader: BagReader, samples: dict[str, list[tuple[int, Any]]],
    stop_ns: int,
) -> None:
    """Note the frame to track in when the bag's TF moves the depth camera (a robot's odom)."""
    depth = samples.get(DEPTH_IMAGE, [])
    if not depth or not any(name.rstrip("/").rpartition("/")[2] == "tf"
                            for name in reader.topics):
        return
    frame = str(depth[0][1].header.frame_id).lstrip("/")
    tf = read_transform_buffer(reader, stop_ns)  # the part read, as for the other inputs
    try:
        above = tf.ancestors(frame)
    except LookupError as exc:
        result.problems.append(f"/tf: {exc}; the robot's TF tree is broken")
        return
    moving = [child for child in [frame, *above[:-1]] if tf.moves(child)]
    if above and moving:
        root = above[-1]
        result.notes.append(
            f"/tf moves {frame} in {root} (through {', '.join(moving)}): the robot moved while "
            f"recording, so track in {root} as the node does: iphd-eval bag and tune_tracker.py "
            f"--tracking-frame {root}; the tracker node's tracking_frame: {root} with up_axis: z"
        )


def _rig_transforms(result: BagCheck, reader: BagReader, rig: RigCalibration) -> None:
    """Note recorded static transforms of the rig's frames that disagree with the fusion node's.

    The fusion node publishes the depth optical frame under ``frames.base`` (when set) and the
    thermal optical frame under the depth one. A robot whose depth driver or robot description
    already places either frame elsewhere would get a frame with two parents, which tf2 does
    not resolve. One under the same parent but placed elsewhere is another calibration's.
    """
    for conflict in transform_conflicts(rig_static_transforms(rig), read_static_transforms(reader)):
        child = conflict.child
        if not conflict.second_parent:
            result.notes.append(
                f"the bag's /tf_static places {child} {conflict.offset_m * 100:.1f} cm and "
                f"{conflict.angle_deg:.1f}° from where this calibration does (recorded with "
                "another one?): a replay with source:=bag leaves the recorded rig transforms "
                "out, ros2 bag play publishes them beside the fusion node's"
            )
            continue
        result.notes.append(
            f"the bag's /tf_static places {child} under {conflict.parent}, and with this "
            f"calibration the fusion node publishes it under {conflict.ours}: on the robot it "
            f"would have two parents, which breaks its TF tree; "
            f"{conflict.second_parent_fix(rig.frames)}"
        )


def _graph_outputs(result: BagCheck, reader: BagReader) -> None:
    """Note a recording of a running graph (its detections and tracks) and what scores them."""
    topics = reader.topics
    found = [
        topic for name, msgtype in (("detections", PERSON_DETECTIONS), ("tracks", PERSON_TRACKS))
        if (topic := find_topic(topics, name)) and topics[topic].msgtype == msgtype
    ]
    if found:
        result.notes.append(
            f"{' and '.join(found)}: a running graph's output was recorded. iphd-eval bag "
            "--recorded scores it as the robot made it; iphd-eval bag without --recorded and a "
            "replay (iphd-run --bag, source:=bag) make it anew from the sensor topics, and the "
            "replay leaves the recorded copies out"
        )


def _compressed_note(result: BagCheck, check: TopicCheck, role: str, name: str) -> None:
    """Say how the tools read an image recorded through a compressed transport."""
    assert check.topic is not None
    transport = transport_of(check.topic) or "a compressed transport"
    raw = base_topic(check.topic)
    result.notes.append(
        f"{check.topic} ({role}) is image_transport's {transport}: the offline tools decode "
        f"it; the live graph (iphd-run --bag, source:=bag) gets it decoded from the bag player "
        f"as {raw}" + ("" if raw.lstrip("/") == name else f", so give --{_option(name)} {raw}")
    )


def _option(topic: str) -> str:
    """The command-line option that names ``topic`` (``depth-topic``, ...)."""
    return next((a.replace("_", "-") for a, t in TOPIC_ARGUMENTS.items() if t == topic), "")


def _calibration(reader: BagReader, path: str, result: BagCheck) -> RigCalibration:
    if path:
        result.calibration = path
        given = load_calibration(path)
        carried = reader.calibration
        if carried is not None and (diff := calibration_differences(given, carried)):
            result.notes.append(
                f"the bag carries another rig calibration ({reader.calibration_origin}; "
                f"{', '.join(diff)} differ): {path} is used, as asked; leave out --calibration "
                "to use the bag's"
            )
        return given
    carried = reader.calibration
    if carried is not None:
        result.calibration = reader.calibration_origin
        return carried
    result.calibration = f"none in the bag: the package's nominal {DEFAULT_CALIBRATION}"
    result.notes.append(
        "the bag carries no rig calibration, so the tools register thermal with the nominal "
        "one: pass yours with --calibration (iphd-calibrate makes it), store it in the bag "
        "with iphd-eval copy or import-mot --calibration, or record rig_calibration (the "
        "fusion node's) with the drivers' topics"
    )
    return load_calibration(DEFAULT_CALIBRATION)


def _missing(
    result: BagCheck, check: TopicCheck, name: str, required: bool, topics: Mapping[str, Any]
) -> None:
    if name == GROUND_TRUTH:
        result.notes.append(
            "no ground_truth/people: the models run (iphd-run --bag), but iphd-eval bag and the "
            "training tools need ground truth (iphd-eval export-mot, annotate, import-mot)"
        )
    elif required:
        option = _option(name)
        wanted = CAMERA_INFO if name.endswith("camera_info") else IMAGE
        candidates = _candidates(topics, wanted)
        result.problems.append(
            f"no {check.wanted} topic: record it, or name the driver's topic with --{option}"
            + (f" (the bag's {wanted.rpartition('/')[2]} topics: {candidates})"
               if candidates else "")
        )


def _candidates(topics: Mapping[str, Any], msgtype: str) -> str:
    """The bag's topics of ``msgtype``, named as the topic options take them.

    An image on a compressed transport is named by its raw topic, the transport in brackets.
    """
    names = []
    for topic, info in sorted(topics.items()):
        if info.msgtype == msgtype:
            names.append(topic)
        elif msgtype == IMAGE and info.msgtype == COMPRESSED_IMAGE and transport_of(topic):
            names.append(f"{base_topic(topic)} ({transport_of(topic)})")
    return ", ".join(names)


def _read(reader: BagReader, check: TopicCheck, stop_ns: int) -> list[tuple[int, Any]]:
    """The messages of the part read (log time, message); the topic's rate from them."""
    assert check.topic is not None
    read = [(log_ns, msg) for _t, _y, log_ns, msg in reader.messages([check.topic],
                                                                      stop_ns=stop_ns)]
    if len(read) > 1 and read[-1][0] > read[0][0]:
        check.rate_hz = (len(read) - 1) / ((read[-1][0] - read[0][0]) / 1e9)
    return read


def _describe(
    result: BagCheck, samples: dict[str, list[tuple[int, Any]]], rig: RigCalibration
) -> None:
    checks = {c.role: c for c in result.topics}
    cal = rig.thermal
    depth = samples.get(DEPTH_IMAGE, [])
    if depth:
        check = checks["depth image"]
        values = _measure(result, check, depth, DEPTH_ENCODINGS, "millimetres in 16UC1/mono16, "
                          "metres in 32FC1", _depth_values)
        if values is not None:
            check.details += f", median {values[0]:.2f} m, {values[1]:.0%} valid"
            units = depth_units_problem(values[0])
            if units:
                result.problems.append(f"{check.topic}: {units}")
        frame_id = depth[0][1].header.frame_id
        if frame_id != rig.frames.depth:
            result.notes.append(
                f"depth images are in frame {frame_id} but the calibration's frames.depth is "
                f"{rig.frames.depth}: on the robot the thermal camera's TF would not join them; "
                f"set frames.depth: {frame_id} in rig.yaml"
            )
    info = samples.get(DEPTH_INFO, [])
    if info:
        check = checks["depth info"]
        msg = info[0][1]
        check.details = f"{msg.width}x{msg.height}, {msg.distortion_model or 'no model'}"
        try:
            k = camera_info_to_intrinsics(msg)
            check.details += f", fx {k.fx:.1f} fy {k.fy:.1f}"
        except IphdError as exc:
            result.problems.append(f"{check.topic}: {exc}")
        image = depth[0][1] if depth else None
        if image is not None and (msg.width, msg.height) != (image.width, image.height):
            result.problems.append(
                f"{check.topic} is {msg.width}x{msg.height} but the depth images are "
                f"{image.width}x{image.height}: give the camera_info of that image with "
                "--depth-info-topic"
            )
    thermal = samples.get(THERMAL_IMAGE, [])
    if thermal:
        check = checks["thermal image"]
        problems = len(result.problems)
        median = _measure(result, check, thermal, THERMAL_ENCODINGS, "centi-kelvin",
                          _thermal_median, (cal.width, cal.height))
        if median is not None:
            check.details += f", median {median / 100:.1f} K"
            problem = centi_kelvin_problem(median)
            if problem:
                result.problems.append(f"{check.topic}: {problem}")
        elif len(result.problems) == problems:  # read and decoded, but all zero
            why = "check the driver's output"
            if transport_of(check.topic or "") == "compressedDepth":
                why = (
                    "compressedDepth sets every value above its depth_max (10 m, that is "
                    "10 000, by default) to 0, and a room is about 29 500 centi-kelvin: record "
                    "the thermal image raw, or through the compressed transport with format png"
                )
            result.problems.append(
                f"{check.topic}: every pixel of the thermal images read is 0, and fusion "
                f"drops such frames; {why}"
            )
        frame_id = str(thermal[0][1].header.frame_id)
        if frame_id != rig.frames.thermal:
            result.notes.append(
                f"thermal images are in frame {frame_id} but the calibration's frames.thermal "
                f"is {rig.frames.thermal}: the fusion node's TF would place a frame the thermal "
                f"images are not in (registration is not affected); set frames.thermal: "
                f"{frame_id} in rig.yaml"
            )
    tinfo = samples.get(THERMAL_INFO, [])
    if tinfo:
        check = checks["thermal info"]
        msg = tinfo[0][1]
        check.details = f"{msg.width}x{msg.height}"
        if (int(msg.width), int(msg.height)) != (cal.width, cal.height):
            result.notes.append(
                f"{check.topic} is {msg.width}x{msg.height} but the calibration is for "
                f"{cal.width}x{cal.height}: the live fusion node reports it; use the "
                "calibration made for this camera"
            )
    truth = samples.get(GROUND_TRUTH, [])
    if truth:
        people = {int(t.id) for _l, m in truth for t in m.tracks}
        checks["ground truth"].details = f"{len(people)} people in the part read"


def _measure(
    result: BagCheck,
    check: TopicCheck,
    read: list[tuple[int, Any]],
    encodings: tuple[str, ...],
    units: str,
    measure: Any,
    size: tuple[int, int] | None = None,
) -> Any:
    """Describe an image topic by its first message and ``measure`` its first images.

    A problem is added, and None returned, for an encoding not in ``encodings``, a size other
    than ``size`` (the calibration's) or images that do not decode.
    """
    msg = read[0][1]
    check.details = f"{msg.encoding} {msg.width}x{msg.height}, frame {msg.header.frame_id}"
    if msg.encoding not in encodings:
        result.problems.append(
            f"{check.topic}: encoding {msg.encoding}, not one of {', '.join(encodings)} "
            f"({units})"
        )
        return None
    if size is not None and (int(msg.width), int(msg.height)) != size:
        result.problems.append(
            f"{check.topic} is {msg.width}x{msg.height} but the calibration is for "
            f"{size[0]}x{size[1]}: strip telemetry rows, or calibrate this resolution"
        )
        return None
    try:
        return measure(read[:SAMPLE_IMAGES])
    except IphdError as exc:
        result.problems.append(f"{check.topic}: {exc}")
        return None


def _depth_values(read: list[tuple[int, Any]]) -> tuple[float, float] | None:
    """Median valid depth (m) and valid share of the sampled depth images; None if all invalid.

    Raises:
        IphdError: an image that does not decode (its size does not fit its buffer, ...).
    """
    valid, total = [], 0
    for _log, msg in read:
        mm = depth_to_mm(image_to_array(msg, DEPTH_ENCODINGS), msg.encoding)
        total += mm.size
        valid.append(mm[mm > 0])
    kept = np.concatenate(valid) if valid else np.zeros(0)
    if not kept.size:
        return None
    return float(np.median(kept)) / 1000.0, kept.size / max(total, 1)


def _thermal_median(read: list[tuple[int, Any]]) -> float | None:
    """Median of the sampled thermal images' non-zero pixels; None if all are zero.

    Raises:
        IphdError: an image that does not decode.
    """
    values = []
    for _log, msg in read:
        image = image_to_array(msg, THERMAL_ENCODINGS)
        values.append(image[image > 0])
    kept = np.concatenate(values) if values else np.zeros(0)
    return float(np.median(kept)) if kept.size else None


def _pairs(
    result: BagCheck, samples: dict[str, list[tuple[int, Any]]], rig: RigCalibration,
    max_skew_ms: float, max_wait_ms: float,
) -> None:
    """How many thermal frames the fusion's rule pairs, fed their stamps in the bag's order.

    The fusion keeps a second of depth frames: a thermal frame stamped further from the depth
    frames that come with it finds no partner, even when some depth frame of the bag is near.
    """
    depth = samples.get(DEPTH_IMAGE, [])
    thermal = samples.get(THERMAL_IMAGE, [])
    if not depth or not thermal:
        return
    sync: Synchronizer[None, None] = Synchronizer(SyncConfig.from_calibration(
        rig, max_skew_ns=int(max_skew_ms * 1e6), max_wait_ns=int(max_wait_ms * 1e6)))
    thermal = thermal[:SAMPLE_PAIRS]
    # Depth frames logged until the last of those could still have waited for one.
    until = thermal[-1][0] + int(max_wait_ms * 1e6)
    arrivals = sorted([(log, 0, header_stamp_ns(m)) for log, m in depth if log <= until]
                      + [(log, 1, header_stamp_ns(m)) for log, m in thermal])
    pairs = []
    for _log, is_thermal, stamp in arrivals:
        push = sync.push_thermal if is_thermal else sync.push_depth
        pairs += push(stamp, None)
    pairs += sync.flush()
    result.paired = len(pairs) / sync.stats.thermal_in
    if pairs:
        result.median_skew_ms = float(np.median([abs(p.skew_ns) / 1e6 for p in pairs]))
    if result.paired < MIN_PAIRED:
        result.problems.append(
            f"only {result.paired:.0%} of the thermal frames read find a depth frame within "
            f"{max_skew_ms:g} ms as the fusion pairs them; "
            f"{unpaired_reason(sync.stats.unpaired_skew_ns)}"
        )


def format_check(check: BagCheck) -> str:
    """The check as the command prints it."""
    lines = [
        f"{check.bag}: {check.duration_s:.1f} s; calibration: {check.calibration}",
    ]
    width = max(len(c.role) for c in check.topics)
    for c in check.topics:
        if c.topic is None:
            lines.append(f"  {c.role:<{width}}  not found (looked for {c.wanted})")
            continue
        rate = f", {c.rate_hz:.1f} Hz" if c.rate_hz is not None else ""
        details = f"; {c.details}" if c.details else ""
        lines.append(f"  {c.role:<{width}}  {c.topic}: {c.count} messages{rate}{details}")
    if check.paired is not None:
        apart = (f" (median {check.median_skew_ms:.1f} ms apart)"
                 if check.median_skew_ms is not None else "")
        lines.append(
            f"  {'pairs':<{width}}  {check.paired:.0%} of the thermal frames read have a depth "
            f"frame within the fusion's skew{apart}"
        )
    for note in check.notes:
        lines.append(f"note: {note}")
    for problem in check.problems:
        lines.append(f"problem: {problem}")
    if not check.problems:
        lines.append(
            "no problem found: with the same topic options, the offline tools and iphd-run "
            "--bag can read this bag"
        )
    return "\n".join(lines)
