"""``iphd-eval check``: a bag's inputs as the pipeline reads them, and what to change."""

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Writer

from iphd.calibration import DEFAULT_CALIBRATION, load_calibration
from iphd.data.rosbag import BagReader, RigBagWriter, typestore
from iphd.eval.bag_check import check_bag, format_check
from iphd.eval.cli import main
from iphd.sensors.frames import CameraIntrinsics

T0 = 1_700_000_000_000_000_000


def _bag(path, *, thermal_ck=29500, thermal_shift_ns=3_000_000, t0=T0, compression="zstd",
         depth_value=3000):
    """1 s like the rig records: 128x96 depth at 30 Hz, thermal at a quarter of that."""
    calibration = load_calibration()
    fx = 0.5 * 128 / np.tan(np.deg2rad(87.0 / 2))
    depth = np.full((96, 128), depth_value, np.uint16)
    depth[:10] = 0
    intrinsics = CameraIntrinsics(128, 96, fx, fx, 63.5, 47.5)
    with RigBagWriter(path, calibration, intrinsics, compression=compression) as writer:
        for i in range(30):
            stamp = t0 + i * 33_333_333
            writer.write_depth(stamp, depth)
            if i % 4 == 0:
                # Logged when it arrives, whatever clock stamped it.
                writer.write_thermal(stamp + thermal_shift_ns,
                                     np.full((120, 160), thermal_ck, np.uint16),
                                     log_ns=stamp + 3_000_000)
    return path


def test_a_simulator_bag_reads_as_the_pipeline_needs(sim_bag, capsys):
    check = check_bag(sim_bag)
    assert not check.problems and not check.notes
    roles = {c.role: c for c in check.topics}
    assert roles["depth image"].topic == "depth/image_raw"
    assert roles["depth image"].rate_hz == pytest.approx(30.0, rel=0.05)
    assert "16UC1 848x480, frame depth_optical_frame" in roles["depth image"].details
    assert "median 2" in roles["thermal image"].details  # about 29x K
    assert roles["ground truth"].count > 0
    assert check.paired == 1.0 and check.median_skew_ms < 20
    assert main(["check", "--bag", str(sim_bag)]) == 0
    assert "no problem found" in capsys.readouterr().out


def test_other_drivers_topics_are_named_and_each_info_is_the_one_beside_its_image(
    other_drivers_bag, capsys
):
    bag, topics = other_drivers_bag
    assert main(["check", "--bag", str(bag)]) == 2
    out = capsys.readouterr()
    assert "problem: no depth/image_raw topic: record it, or name the driver's topic with " \
        "--depth-topic" in out.out
    assert "problem: no thermal/image_raw topic" in out.out and "2 problem(s)" in out.err
    assert main(["check", "--bag", str(bag), "--depth-topic", topics["depth/image_raw"],
                 "--thermal-topic", topics["thermal/image_raw"]]) == 0
    out = capsys.readouterr().out
    assert f"depth info     {topics['depth/camera_info']}: " in out
    # The copy stores no calibration: the tools fall back to the nominal one, and say so.
    assert "note: the bag carries no rig calibration" in out
    assert "aligned to another camera" not in out


def test_the_calibration_a_recorded_graph_published_is_the_one_used_and_named(tmp_path, capsys):
    from transport_bags import write_transport_bag

    from iphd.calib.simulate import perturbed_calibration
    from iphd.calibration import calibration_to_yaml, save_calibration

    rig = perturbed_calibration(load_calibration())
    bag = write_transport_bag(_bag(tmp_path / "rig"), tmp_path / "recorded", {},
                              calibration_text=calibration_to_yaml(rig))
    assert main(["check", "--bag", str(bag)]) == 0
    out = capsys.readouterr().out
    assert "calibration: recorded on /rig_calibration" in out
    assert "no rig calibration" not in out
    # A calibration given wins; when it is not the one the bag carries, check says so.
    assert main(["check", "--bag", str(bag), "--calibration", str(DEFAULT_CALIBRATION)]) == 0
    out = capsys.readouterr().out
    assert (f"note: the bag carries another rig calibration (recorded on /rig_calibration; "
            f"thermal intrinsics, extrinsic, clock offset differ): {DEFAULT_CALIBRATION} is "
            "used, as asked; leave out --calibration to use the bag's") in out
    save_calibration(rig, tmp_path / "rig.yaml")
    assert main(["check", "--bag", str(bag), "--calibration", str(tmp_path / "rig.yaml")]) == 0
    assert "another rig calibration" not in capsys.readouterr().out


def test_recorded_transforms_that_give_a_rig_frame_a_second_parent_are_noted(tmp_path):
    from transport_bags import write_graph_recording

    from iphd.calibration import StaticTransform

    bag = _bag(tmp_path / "rig")
    # The rig's own transforms (as the simulator, or a recorded fusion node, wrote them) and a
    # robot's other frames are fine.
    mount = StaticTransform("base_link", "camera_link", (0.1, 0.0, 1.2), (0.0, 0.0, 0.0, 1.0))
    write_graph_recording(bag, tmp_path / "robot", static_tf=[mount])
    assert not [n for n in check_bag(tmp_path / "robot").notes if "/tf_static" in n]
    # A depth driver that places the depth frame itself, and a description with the Lepton.
    driver = StaticTransform("camera_depth_frame", "depth_optical_frame", (0.0, 0.0, 0.0),
                             (-0.5, 0.5, -0.5, 0.5))
    lepton = StaticTransform("/base_link", "thermal_optical_frame", (0.1, 0.0, 1.3),
                             (-0.5, 0.5, -0.5, 0.5))
    write_graph_recording(bag, tmp_path / "driver", static_tf=[mount, driver, lepton])
    notes = [n for n in check_bag(tmp_path / "driver").notes if "/tf_static" in n]
    assert notes == [
        "the bag's /tf_static places depth_optical_frame under camera_depth_frame, and with "
        "this calibration the fusion node publishes it under camera_link: on the robot it "
        "would have two parents, which breaks its TF tree; set frames.base: '' in rig.yaml, so "
        "fusion publishes depth -> thermal only and the driver's placement of the depth frame "
        "stands",
        "the bag's /tf_static places thermal_optical_frame under base_link, and with this "
        "calibration the fusion node publishes it under depth_optical_frame: on the robot it "
        "would have two parents, which breaks its TF tree; take the thermal camera out of the "
        "robot description, or keep it there (with the calibration's extrinsic) and set the "
        "fusion node's publish_tf: false",
    ]
    # A recording of another calibration's rig transform: under the same parent, elsewhere.
    other = StaticTransform("depth_optical_frame", "thermal_optical_frame", (0.02, -0.035, 0.0),
                            (0.0, 0.0, 0.0, 1.0))
    write_graph_recording(bag, tmp_path / "other", static_tf=[other])
    notes = [n for n in check_bag(tmp_path / "other").notes if "/tf_static" in n]
    assert notes == [
        "the bag's /tf_static places thermal_optical_frame 2.0 cm and 0.0° from where this "
        "calibration does (recorded with another one?): a replay with source:=bag leaves the "
        "recorded rig transforms out, ros2 bag play publishes them beside the fusion node's"
    ]


def test_thermal_images_in_another_frame_than_the_calibrations_are_noted(tmp_path):
    bag = _bag(tmp_path / "rig")
    rig = tmp_path / "lepton.yaml"
    rig.write_text(DEFAULT_CALIBRATION.read_text().replace(
        "thermal: thermal_optical_frame", "thermal: lepton_optical_frame"))
    check = check_bag(bag, calibration=str(rig))
    assert not check.problems
    assert [n for n in check.notes if n.startswith("thermal images")] == [
        "thermal images are in frame thermal_optical_frame but the calibration's frames.thermal "
        "is lepton_optical_frame: the fusion node's TF would place a frame the thermal images "
        "are not in (registration is not affected); set frames.thermal: thermal_optical_frame "
        "in rig.yaml"
    ]
    assert not [n for n in check_bag(bag).notes if n.startswith("thermal images")]


def test_depth_aligned_to_the_colour_camera_is_noted(sim_bag, tmp_path):
    from transport_bags import write_transport_bag

    aligned = "/camera/camera/aligned_depth_to_color/image_raw"
    bag = write_transport_bag(sim_bag, tmp_path / "bag", {}, stop_ns=2_000_000_000, rename={
        "depth/image_raw": aligned,
        "depth/camera_info": "/camera/camera/aligned_depth_to_color/camera_info"})
    check = check_bag(bag, topics={"depth/image_raw": aligned})
    assert not check.problems
    notes = [n for n in check.notes if "aligned to another camera" in n]
    assert len(notes) == 1 and "depth/image_rect_raw" in notes[0]


def test_a_recording_cut_off_mid_write_is_noted_and_still_checked(sim_bag, tmp_path):
    from transport_bags import write_transport_bag

    bag = write_transport_bag(sim_bag, tmp_path / "bag", {}, storage="mcap")
    (mcap,) = bag.glob("*.mcap")
    (bag / "metadata.yaml").unlink()
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size * 2 // 3])
    check = check_bag(bag)
    assert not check.problems
    (note,) = [n for n in check.notes if "cut off" in n]
    assert note.startswith(f"{mcap} was cut off before its recording closed it") and "lost" in note
    assert check.paired == 1.0


def test_a_split_recording_without_its_metadata_is_noted_and_checked_as_one_bag(tmp_path):
    split = tmp_path / "split"
    split.mkdir()
    for part in range(2):
        (db3,) = _bag(tmp_path / f"part{part}", t0=T0 + part * 1_000_000_000).glob("*.db3")
        db3.rename(split / f"split_{part}.db3")
    check = check_bag(split)
    assert not check.problems
    assert any("has no metadata.yaml: its 2 storage files are read as one bag" in n
               for n in check.notes)
    roles = {c.role: c for c in check.topics}
    assert roles["depth image"].count == 60 and check.duration_s > 1.9
    # A third file the recorder left damaged: named, with what saves it; the rest checked.
    data = (split / "split_1.db3").read_bytes()
    (split / "split_2.db3").write_bytes(bytes(4096) + data[4096:])  # its header and schema lost
    check = check_bag(split)
    (problem,) = check.problems
    assert problem.startswith(f"{split / 'split_2.db3'} does not open") and ".recover" in problem
    assert {c.role: c for c in check.topics}["depth image"].count == 60


def test_a_damaged_page_of_a_db3_is_a_problem_with_its_rescue(tmp_path):
    from damaged_bags import damage_db3_page

    (db3,) = _bag(tmp_path / "bag", compression="none").glob("*.db3")
    damage_db3_page(db3)
    check = check_bag(tmp_path / "bag")
    (problem,) = check.problems
    assert "the storage failed after log time" in problem and ".recover" in problem


def test_each_problem_is_named_with_what_to_do(tmp_path):
    good = check_bag(_bag(tmp_path / "good"))
    assert not good.problems and good.paired == 1.0
    # A Lepton driver at 0.1 K resolution.
    deci = check_bag(_bag(tmp_path / "deci", thermal_ck=2950))
    assert any("median 2950 does not read as centi-kelvin" in p for p in deci.problems)
    # A depth driver at 0.1 mm units: a room 3 m away reads 30 m.
    units = check_bag(_bag(tmp_path / "units", depth_value=30000))
    assert any("median 30.0 m is beyond a D435's range" in p and "1 mm" in p
               for p in units.problems)
    # Thermal stamped on another clock: no depth frame near any of them.
    clocks = check_bag(_bag(tmp_path / "clocks", thermal_shift_ns=1_000_000_000_000))
    assert clocks.paired == 0.0
    assert any("only 0% of the thermal frames" in p and "ROS time" in p for p in clocks.problems)
    # A camera_info that is not the depth image's.
    info = check_bag(good.bag, topics={"depth/camera_info": "thermal/camera_info"})
    assert any("is 160x120 but the depth images are 128x96" in p for p in info.problems)
    # Depth in another frame than the calibration given: a note; the pipeline still runs.
    data = yaml.safe_load(DEFAULT_CALIBRATION.read_text())
    data["frames"] = {"base": "", "depth": "camera_depth_optical_frame"}
    rig = tmp_path / "rig.yaml"
    rig.write_text(yaml.safe_dump(data))
    frame = check_bag(good.bag, calibration=str(rig))
    assert not frame.problems and frame.calibration == str(rig)
    assert any("set frames.depth: depth_optical_frame in rig.yaml" in n for n in frame.notes)
    assert good.calibration == "stored in the bag"
    # Frames whose pixels do not fit their size: named, as the pipeline would drop them.
    torn = tmp_path / "torn"
    store = typestore()
    writer = Writer(torn, version=Writer.VERSION_LATEST)
    writer.open()
    connections = {}
    with BagReader(good.bag) as reader:
        for raw in reader.raw_messages():
            data = raw.data
            if raw.topic == "thermal/image_raw":
                msg = store.deserialize_cdr(raw.data, raw.msgtype)
                msg.data = msg.data[:1000]
                data = store.serialize_cdr(msg, raw.msgtype)
            if raw.topic not in connections:
                connections[raw.topic] = writer.add_connection(raw.topic, raw.msgtype,
                                                               typestore=store)
            writer.write(connections[raw.topic], raw.log_ns, data)
    writer.close()
    broken = check_bag(torn)
    assert [p for p in broken.problems if p.startswith("thermal/image_raw: ")], broken.problems
    # A stream that starts late is not looked at in the part read, and that is said.
    late = check_bag(good.bag, seconds=0.002)  # thermal comes 3 ms after depth
    assert any("thermal/image_raw (thermal image) has no message in the first 0.002 s" in n
               for n in late.notes)
    # A topic recorded without a message (a driver that never published): reading more finds
    # none, so it is a problem, not a note to read more.
    silent = tmp_path / "silent"
    writer = Writer(silent, version=Writer.VERSION_LATEST)
    writer.open()
    connections = {}
    with BagReader(good.bag) as reader:
        for raw in reader.raw_messages():
            if raw.topic not in connections:
                connections[raw.topic] = writer.add_connection(raw.topic, raw.msgtype,
                                                               typestore=store)
            if raw.topic != "thermal/image_raw":
                writer.write(connections[raw.topic], raw.log_ns, raw.data)
    writer.close()
    for seconds in (1.0, 1000.0):
        empty = check_bag(silent, seconds=seconds)
        assert ("thermal/image_raw (thermal image) has no message in the whole bag, so no tool "
                "can run on it" in " ".join(empty.problems)), empty.problems
    text = format_check(deci)
    assert text.splitlines()[0].startswith(f"{deci.bag}: 1.0 s")
    assert "problem: " in text and "no problem found" not in text


def test_compressed_transports_are_read_and_what_they_lose_is_named(compressed_bag, tmp_path):
    from transport_bags import write_transport_bag

    from iphd.compressed_images import encode_compressed

    bag, topics = compressed_bag
    # Without the names, the problem lists the bag's images by the names the options take.
    unnamed = check_bag(bag)
    assert any(p.startswith("no depth/image_raw topic") and p.endswith(
        "(the bag's Image topics: /camera/camera/depth/image_rect_raw (compressedDepth), "
        "/lepton/image_raw (compressed))") for p in unnamed.problems), unnamed.problems
    check = check_bag(bag, topics=topics)
    assert not check.problems, check.problems
    roles = {c.role: c for c in check.topics}
    depth = "/camera/camera/depth/image_rect_raw"
    assert roles["depth image"].topic == f"{depth}/compressedDepth"
    assert "16UC1 848x480" in roles["depth image"].details
    assert "median 2" in roles["thermal image"].details  # about 29x K, decoded
    assert any(n.startswith(f"{depth}/compressedDepth (depth image) is image_transport's "
                            "compressedDepth: the offline tools decode it") and
               n.endswith(f"so give --depth-topic {depth}") for n in check.notes)
    assert check.paired == 1.0
    # Thermal through compressedDepth comes out black (its depth_max), and one torn depth
    # image: both named.
    _fmt, black_png = encode_compressed(np.zeros((120, 160), np.uint16), "16UC1")

    def black_and_torn(topic, index, msg):
        if topic == "thermal/image_raw":
            msg.data = np.frombuffer(black_png, np.uint8)
        elif index == 4:
            msg.data = msg.data[:30]
        return msg

    path = write_transport_bag(_bag(tmp_path / "good"), tmp_path / "black", {
        "depth/image_raw": "compressedDepth", "thermal/image_raw": "compressedDepth"},
        edit=black_and_torn)
    black = check_bag(path)
    assert any(p.startswith("thermal/image_raw/compressedDepth: every pixel of the thermal "
                            "images read is 0") and "compressedDepth sets every value above its "
                            "depth_max" in p for p in black.problems), black.problems
    assert any(p.startswith("depth/image_raw/compressedDepth: 1 of its messages in the part "
                            "read were skipped, the first because FrameError:")
               for p in black.problems), black.problems


def test_a_depth_topic_whose_every_message_fails_to_decode_is_said_to_be_so(tmp_path):
    from transport_bags import write_transport_bag

    def torn(topic, index, msg):
        if topic == "depth/image_raw":
            msg.data = msg.data[:30]
        return msg

    path = write_transport_bag(_bag(tmp_path / "good"), tmp_path / "torn", {
        "depth/image_raw": "compressedDepth", "thermal/image_raw": "compressed"}, edit=torn)
    check = check_bag(path)
    assert any(p.startswith("depth/image_raw/compressedDepth: 30 of its messages in the part "
                            "read were skipped") for p in check.problems), check.problems
    # Not "it has no message: read more", nor a clock problem.
    assert not any("has no message" in n for n in check.notes), check.notes
    # What iphd-eval bag says when no pair is made: the skipped messages, no clock problem.
    from iphd.eval.pipeline import OfflineConfig, pipeline_for_bag

    with BagReader(path) as reader:
        pipeline = pipeline_for_bag(OfflineConfig(reid_checkpoint="none", verifier="none"),
                                    reader)
        for _ in pipeline.run_bag(reader):
            pass
        reason = pipeline.no_pair_reason(reader)
    assert "depth/image_raw messages skipped" in reason and "within 20 ms" not in reason, reason


def test_a_robot_that_moved_is_told_which_frame_to_track_in(pan_bag):
    check = check_bag(pan_bag)
    assert not check.problems
    assert any(n.startswith("/tf moves depth_optical_frame in odom (through camera_link)") and
               "--tracking-frame odom" in n and "up_axis: z" in n for n in check.notes), \
        check.notes
