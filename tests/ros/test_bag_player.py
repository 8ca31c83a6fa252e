import time

import numpy as np
import pytest
from damaged_bags import damage_db3_page, kill_in_wal_mode, mcap_chunks
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from iphd_msgs.msg import PersonTrackArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Writer
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
from transport_bags import write_graph_recording

from iphd.calibration import load_calibration
from iphd.data.rosbag import IMAGE, BagReader, RigBagWriter, typestore
from iphd.data.truth import PersonTruth
from iphd.errors import ConfigError, DatasetError
from iphd.ros.bag_player_node import BagPlayerNode, message_class
from iphd.ros.conversions import image_to_array, rig_transforms, stamp_to_ns
from iphd.sensors.frames import CameraIntrinsics

T0 = 1_000_000_000_000
FRAME_NS = 33_333_333
INTR_W, INTR_H = 64, 48


def _write_bag(path, frames: int = 31, storage: str = "sqlite3", t0: int = T0, **kwargs):
    """``frames`` depth frames at 30 Hz (1 s for 31), thermal with every 4th, truth with each."""
    intr = CameraIntrinsics(INTR_W, INTR_H, 40.0, 40.0, 31.5, 23.5)
    stamps = {"depth": [], "thermal": []}
    with RigBagWriter(path, load_calibration(), intr, storage=storage, **kwargs) as writer:
        for i in range(frames):
            stamp = t0 + i * FRAME_NS
            writer.write_depth(stamp, np.full((INTR_H, INTR_W), 1000 + i, np.uint16))
            writer.write_ground_truth(
                stamp, [PersonTruth(4, (1.0, 2.0, 10.0, 40.0), 0.5, (0.0, 0.1, 2.0))]
            )
            stamps["depth"].append(stamp)
            if i % 4 == 0:
                writer.write_thermal(stamp + 2_000_000, np.full((120, 160), 30000 + i, np.uint16))
                stamps["thermal"].append(stamp + 2_000_000)
    return stamps


class _Recorder(Node):
    def __init__(self, **kwargs):
        super().__init__("bag_recorder", **kwargs)
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.msgs: dict[str, list] = {}
        self.arrival: dict[str, list[float]] = {}
        for topic, cls in (
            ("depth/image_raw", Image),
            ("depth/camera_info", CameraInfo),
            ("thermal/image_raw", Image),
            ("ground_truth/people", PersonTrackArray),
            ("/clock", Clock),
        ):
            self.create_subscription(cls, topic, lambda m, t=topic: self._on(t, m), qos)

    def _on(self, topic, msg):
        self.msgs.setdefault(topic, []).append(msg)
        self.arrival.setdefault(topic, []).append(time.monotonic())

    def stamps(self, topic):
        return [stamp_to_ns(m.header.stamp) for m in self.msgs.get(topic, [])]


def _player(ros_context, executor, bag, **params):
    values = {"bag": str(bag), "start_delay_s": 0.3, **params}
    node = BagPlayerNode(
        context=ros_context,
        parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
    )
    if executor is not None:
        executor.add_node(node)
    return node


def _play(ros_context, executor, spin_until, bag, **params):
    recorder = _Recorder(context=ros_context)
    executor.add_node(recorder)
    player = _player(ros_context, executor, bag, **params)
    assert spin_until(executor, lambda: player.finished, timeout_s=8.0)
    # Topics travel on separate DDS writers: the last messages may still be in flight.
    spin_until(
        executor,
        lambda: all(
            len(recorder.msgs.get(t, [])) >= n for t, n in player.published.items() if t != "/clock"
        ),
        1.0,
    )
    return player, recorder


def test_player_publishes_every_message_with_its_recorded_stamp_and_clock(
    tmp_path, ros_context, executor, spin_until
):
    stamps = _write_bag(tmp_path / "bag")
    player, rec = _play(ros_context, executor, spin_until, tmp_path / "bag")
    assert rec.stamps("depth/image_raw") == stamps["depth"]
    assert rec.stamps("depth/camera_info") == stamps["depth"]
    assert rec.stamps("thermal/image_raw") == stamps["thermal"]
    assert rec.stamps("ground_truth/people") == stamps["depth"]
    assert rec.msgs["ground_truth/people"][0].tracks[0].id == 4
    np.testing.assert_array_equal(
        image_to_array(rec.msgs["depth/image_raw"][3]), np.full((INTR_H, INTR_W), 1003)
    )
    clock = [stamp_to_ns(m.clock) for m in rec.msgs["/clock"]]
    end = max(stamps["depth"][-1], stamps["thermal"][-1])
    assert all(T0 <= c <= end for c in clock)
    assert clock == sorted(clock) and clock[-1] == end and clock.count(T0) < len(clock) // 2
    span = rec.arrival["depth/image_raw"][-1] - rec.arrival["depth/image_raw"][0]
    # The recording is 1.0 s long (its depth images arrived over 0.76 s once, on a busy run);
    # a player without pacing would send them all at once.
    assert 0.7 < span < 1.6
    assert player.published["depth/image_raw"] == 31 and player.corrupt == {}
    if message_class("tf2_msgs/msg/TFMessage") is None:
        assert player.skipped == {"/tf_static": 1}


def test_a_player_run_on_its_own_delivers_the_bags_last_messages_before_it_exits(
    tmp_path, ros_context, executor, spin_until
):
    # As `ros2 run` / `source:=bag` start it: the process ended right after its last publish
    # and took the messages its subscribers had not acknowledged yet with it.
    import os
    import subprocess
    import sys

    stamps = _write_bag(tmp_path / "bag")
    recorder = _Recorder(context=ros_context)
    executor.add_node(recorder)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from iphd.ros.bag_player_node import main; main()",
         "--ros-args", "-p", f"bag:={tmp_path / 'bag'}", "-p", "start_delay_s:=1.0",
         "-p", "wait_for_subscribers:=['depth/image_raw:1']"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ),
    )
    try:
        spin_until(executor, lambda: proc.poll() is not None, 30.0)
        assert proc.wait(timeout=10.0) == 0, proc.stdout.read() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    spin_until(executor, lambda: recorder.stamps("depth/image_raw") == stamps["depth"], 2.0)
    assert recorder.stamps("depth/image_raw") == stamps["depth"]
    assert recorder.stamps("thermal/image_raw") == stamps["thermal"]


def test_the_standalone_player_waits_for_acknowledgements_once_the_bag_ended(monkeypatch):
    from iphd.ros import bag_player_node

    calls = []
    monkeypatch.setattr(bag_player_node, "spin_node",
                        lambda factory, args, done: calls.append(done))
    bag_player_node.main([])
    done = calls[0]

    class Player:
        finished = False
        drained = 0

        def drain(self):
            self.drained += 1
            return True

    player = Player()
    assert not done(player) and player.drained == 0
    player.finished = True
    assert done(player) and player.drained == 1


def test_rate_two_plays_twice_as_fast(tmp_path, ros_context, executor, spin_until):
    _write_bag(tmp_path / "bag")
    _, rec = _play(ros_context, executor, spin_until, tmp_path / "bag", rate=2.0)
    assert len(rec.msgs["depth/image_raw"]) == 31
    span = rec.arrival["depth/image_raw"][-1] - rec.arrival["depth/image_raw"][0]
    assert 0.35 < span < 0.75  # half of the 1.0 s recording


def test_topics_filter_and_loop(tmp_path, ros_context, executor, spin_until):
    stamps = _write_bag(tmp_path / "bag", frames=4)
    recorder = _Recorder(context=ros_context)
    executor.add_node(recorder)
    player = _player(
        ros_context, executor, tmp_path / "bag", loop=True, topics=["depth/image_raw"], rate=4.0
    )
    assert spin_until(executor, lambda: len(recorder.msgs.get("depth/image_raw", [])) >= 6, 5.0)
    assert player.loops >= 1 and not player.finished
    assert recorder.stamps("depth/image_raw")[:6] == stamps["depth"] + stamps["depth"][:2]
    assert "thermal/image_raw" not in recorder.msgs
    assert set(player.published) == {"depth/image_raw"}


def test_a_graphs_own_outputs_in_a_recording_are_not_played_again(
    tmp_path, ros_context, executor, spin_until
):
    stamps = _write_bag(tmp_path / "bag", frames=4)
    write_graph_recording(tmp_path / "bag", tmp_path / "rec", calibration_text="x", clock=True)
    recorder = _Recorder(context=ros_context)
    registered: list = []
    recorder.create_subscription(Image, "thermal/registered", registered.append, 100)
    executor.add_node(recorder)
    player = _player(ros_context, executor, tmp_path / "rec",
                     exclude_topics=["thermal/registered", "rig_calibration", "detections"])
    assert spin_until(executor, lambda: player.finished, timeout_s=8.0)
    spin_until(executor, lambda: len(recorder.msgs.get("depth/image_raw", [])) >= 4, 1.0)
    assert player.excluded == ["/clock", "rig_calibration", "thermal/registered"]
    assert "published_thermal/registered" not in player.stats()
    assert player.stats()["not_played"] == "/clock, rig_calibration, thermal/registered"
    assert recorder.stamps("depth/image_raw") == stamps["depth"] and registered == []
    assert T0 <= min(stamp_to_ns(m.clock) for m in recorder.msgs["/clock"])  # its own only


def test_recorded_outputs_are_matched_by_the_name_they_resolve_to(tmp_path, ros_context):
    _write_bag(tmp_path / "bag", frames=2)
    write_graph_recording(tmp_path / "bag", tmp_path / "rec",
                          registered="/robot1/thermal/registered", clock=True)
    player = BagPlayerNode(
        context=ros_context, namespace="robot1",
        parameter_overrides=[Parameter("bag", value=str(tmp_path / "rec")),
                             Parameter("exclude_topics", value=["thermal/registered"]),
                             Parameter("publish_clock", value=False)],
    )
    assert player.excluded == ["/robot1/thermal/registered"]
    player.destroy_node()
    # Outside that namespace, the recorded name is another topic: played.
    player = _player(ros_context, None, tmp_path / "rec", exclude_topics=["thermal/registered"])
    assert player.excluded == ["/clock"]
    player.destroy_node()
    with pytest.raises(DatasetError, match="nothing to play.*exclude_topics"):
        _player(ros_context, None, tmp_path / "rec", topics=["depth/image_raw"],
                exclude_topics=["depth/image_raw"])


def test_a_bag_recorded_outside_the_namespace_plays_into_the_graph_that_waits_in_it(
    tmp_path, ros_context, executor, spin_until
):
    # ros2 bag record stores absolute names: /depth/image_raw from a robot without namespace.
    store = typestore()
    header = store.types["std_msgs/msg/Header"]
    time_msg = store.types["builtin_interfaces/msg/Time"]
    with Writer(tmp_path / "bag", version=9) as writer:
        conn = writer.add_connection("/depth/image_raw", IMAGE, typestore=store)
        other = writer.add_connection("/other", IMAGE, typestore=store)
        for i in range(3):
            image = store.types[IMAGE](
                header=header(stamp=time_msg(sec=1, nanosec=i), frame_id="d"), height=1,
                width=1, encoding="16UC1", is_bigendian=0, step=2,
                data=np.zeros(2, dtype=np.uint8))
            writer.write(conn, T0 + i * FRAME_NS, store.serialize_cdr(image, IMAGE))
            writer.write(other, T0 + i * FRAME_NS, store.serialize_cdr(image, IMAGE))
    inside: list = []
    listener = Node("listener", namespace="robot1", context=ros_context)
    listener.create_subscription(Image, "depth/image_raw", inside.append, 10)
    executor.add_node(listener)
    player = BagPlayerNode(
        context=ros_context, namespace="robot1",
        parameter_overrides=[Parameter("bag", value=str(tmp_path / "bag")),
                             Parameter("wait_for_subscribers", value=["depth/image_raw:1"]),
                             Parameter("publish_clock", value=False)],
    )
    executor.add_node(player)
    assert spin_until(executor, lambda: player.finished, timeout_s=8.0)
    spin_until(executor, lambda: len(inside) == 3, 1.0)
    assert len(inside) == 3 and player.published["/depth/image_raw"] == 3
    # A topic the graph does not wait for keeps its recorded name.
    names = dict(player.get_publisher_names_and_types_by_node("bag_player", "/robot1"))
    assert "/robot1/depth/image_raw" in names and "/other" in names
    assert "/depth/image_raw" not in names


def _player_statuses(ros_context, executor) -> list:
    """The bag player's diagnostic statuses, as they arrive."""
    statuses: list = []
    listener = Node("diag_listener", context=ros_context)
    listener.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda m: statuses.extend(s for s in m.status if s.name.startswith("bag_player")),
        10,
    )
    executor.add_node(listener)
    return statuses


def test_corrupt_messages_are_counted_and_the_rest_played(
    tmp_path, ros_context, executor, spin_until
):
    store = typestore()
    t = store.types
    good = t[IMAGE](
        header=t["std_msgs/msg/Header"](
            stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="d"
        ),
        height=1,
        width=2,
        encoding="16UC1",
        is_bigendian=0,
        step=4,
        data=np.arange(4, dtype=np.uint8),
    )
    with Writer(tmp_path / "bag", version=9) as writer:
        conn = writer.add_connection("depth/image_raw", IMAGE, typestore=store)
        writer.write(conn, T0, store.serialize_cdr(good, IMAGE))
        writer.write(conn, T0 + 10_000_000, b"\x00\x01\x00\x00not an image")
        writer.write(conn, T0 + 20_000_000, store.serialize_cdr(good, IMAGE))
    statuses = _player_statuses(ros_context, executor)
    player = _player(ros_context, executor, tmp_path / "bag", diagnostics_period=0.2)
    assert spin_until(executor, lambda: player.finished, timeout_s=5.0)
    assert player.corrupt == {"depth/image_raw": 1}
    assert player.published == {"depth/image_raw": 2}
    assert player.stats()["corrupt_depth/image_raw"] == 1
    assert spin_until(executor, lambda: any(s.message.startswith("end of bag") for s in statuses))
    last = statuses[-1]
    assert last.level == DiagnosticStatus.WARN and "corrupt" in last.message
    assert {kv.key: kv.value for kv in last.values}["corrupt_depth/image_raw"] == "1"


def test_a_recording_cut_off_mid_write_plays_what_it_kept_and_says_so(
    tmp_path, ros_context, executor, spin_until
):
    stamps = _write_bag(tmp_path / "bag", frames=200, storage="mcap")  # 3 chunks of 1 MiB
    (mcap,) = (tmp_path / "bag").glob("*.mcap")
    (tmp_path / "bag" / "metadata.yaml").unlink()
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    player, last = _play_a_beginning(ros_context, executor, spin_until, tmp_path / "bag",
                                     stamps["depth"], rate=8.0)
    assert "lost" in player.stats()[f"cut_off_{mcap}"]
    assert last.level == DiagnosticStatus.WARN and "cut off" in last.message


def _play_a_beginning(ros_context, executor, spin_until, bag, depth, rate):
    """Play ``bag`` to its end; check that the depth frames played begin ``depth``.

    Returns:
        The player and its last diagnostic status.
    """
    statuses = _player_statuses(ros_context, executor)
    player, rec = _play(ros_context, executor, spin_until, bag, rate=rate,
                        diagnostics_period=0.1)
    played = rec.stamps("depth/image_raw")
    assert 0 < len(played) < len(depth) and played == depth[: len(played)]
    assert spin_until(executor, lambda: any(s.message.startswith("end of bag") for s in statuses))
    return player, statuses[-1]


def test_a_damaged_chunk_is_skipped_and_counted_and_the_rest_played(
    tmp_path, ros_context, executor, spin_until
):
    stamps = _write_bag(tmp_path / "bag", frames=200, storage="mcap")  # 3 chunks of 1 MiB
    (mcap,) = (tmp_path / "bag").glob("*.mcap")
    data = bytearray(mcap.read_bytes())
    chunks = mcap_chunks(bytes(data))
    start = chunks[1][0] + 9 + 8 + 8 + 8 + 4 + 4 + len("zstd") + 8  # its compressed data
    data[start : start + 4] = bytes(4)  # the second chunk's zstd frame, no longer one
    mcap.write_bytes(bytes(data))
    statuses = _player_statuses(ros_context, executor)
    player, rec = _play(ros_context, executor, spin_until, tmp_path / "bag", rate=8.0,
                        diagnostics_period=0.1)
    played = rec.stamps("depth/image_raw")
    lost = player.all_corrupt()["depth/image_raw"]
    assert lost > 0 and len(played) + lost == len(stamps["depth"])
    assert played[-1] == stamps["depth"][-1] and player.corrupt == {}
    assert spin_until(executor, lambda: any(s.message.startswith("end of bag") for s in statuses))
    assert statuses[-1].level == DiagnosticStatus.WARN and "corrupt" in statuses[-1].message


def test_a_damaged_page_of_a_db3_is_played_past_and_said(
    tmp_path, ros_context, executor, spin_until
):
    _write_bag(tmp_path / "bag", compression="none")
    with BagReader(tmp_path / "bag") as reader:
        recorded = reader.message_count
    (db3,) = (tmp_path / "bag").glob("*.db3")
    damage_db3_page(db3)
    statuses = _player_statuses(ros_context, executor)
    player, rec = _play(ros_context, executor, spin_until, tmp_path / "bag", rate=2.0,
                        diagnostics_period=0.1)
    played = sum(n for t, n in player.published.items() if t != "/clock")
    played += sum(player.skipped.values())
    assert 0 < recorded - played < 4 and player.published["depth/image_raw"] > 25
    assert "the storage failed after log time" in player.stats()["storage_gap_0"]
    assert spin_until(executor, lambda: any(s.message.startswith("end of bag") for s in statuses))
    assert statuses[-1].level == DiagnosticStatus.WARN and "storage" in statuses[-1].message


def test_a_recording_killed_with_messages_in_its_write_ahead_log_plays_them_too(
    tmp_path, ros_context, executor, spin_until
):
    stamps = _write_bag(tmp_path / "bag", compression="none")
    db3, total = kill_in_wal_mode(tmp_path / "bag", tmp_path / "killed", stamps["depth"][16])
    statuses = _player_statuses(ros_context, executor)
    player, rec = _play(ros_context, executor, spin_until, tmp_path / "killed", rate=2.0,
                        diagnostics_period=0.1)
    assert rec.stamps("depth/image_raw") == stamps["depth"]
    assert rec.stamps("thermal/image_raw") == stamps["thermal"]
    assert "messages were read from a merged copy" in player.stats()[f"write_ahead_log_{db3}"]
    assert spin_until(executor, lambda: any(s.message.startswith("end of bag") for s in statuses))
    assert "write-ahead" not in statuses[-1].message  # nothing was left unread


def test_a_db3_cut_short_by_a_power_loss_plays_the_rows_that_read_and_says_so(
    tmp_path, ros_context, executor, spin_until
):
    stamps = _write_bag(tmp_path / "bag", compression="none")
    (db3,) = (tmp_path / "bag").glob("*.db3")
    db3.write_bytes(db3.read_bytes()[: db3.stat().st_size * 2 // 3])
    (tmp_path / "bag" / "metadata.yaml").unlink()
    player, last = _play_a_beginning(ros_context, executor, spin_until, tmp_path / "bag",
                                     stamps["depth"], rate=2.0)
    assert "rebuilt in a temporary folder" in player.stats()[f"rebuilt_{db3}"]
    assert last.level == DiagnosticStatus.WARN
    assert "a damaged file was read from the rows that still read" in last.message


def test_a_split_recording_plays_as_one_bag_leaving_out_a_damaged_file(
    tmp_path, ros_context, executor, spin_until
):
    split = tmp_path / "split"
    split.mkdir()
    depth = []
    for part in range(2):
        t0 = T0 + part * 8 * FRAME_NS
        depth += _write_bag(tmp_path / f"part{part}", frames=8, t0=t0)["depth"]
        (tmp_path / f"part{part}" / f"part{part}.db3").rename(split / f"split_{part}.db3")
    data = (split / "split_1.db3").read_bytes()
    (split / "split_2.db3").write_bytes(bytes(4096) + data[4096:])  # its header and schema lost
    statuses = _player_statuses(ros_context, executor)
    player, rec = _play(ros_context, executor, spin_until, split, rate=2.0,
                        diagnostics_period=0.1)
    assert rec.stamps("depth/image_raw") == depth
    assert f"left_out_{split / 'split_2.db3'}" in player.stats()
    assert spin_until(executor, lambda: any(s.message.startswith("end of bag") for s in statuses))
    assert statuses[-1].level == DiagnosticStatus.WARN and "left out" in statuses[-1].message


def test_missing_bag_is_a_clear_error(tmp_path, ros_context):
    with pytest.raises(ConfigError, match="needs the 'bag' parameter"):
        BagPlayerNode(context=ros_context)
    with pytest.raises(DatasetError, match="does not exist"):
        BagPlayerNode(
            context=ros_context,
            parameter_overrides=[Parameter("bag", value=str(tmp_path / "missing"))],
        )


def test_player_waits_for_the_subscribers_it_is_told_to_wait_for(
    tmp_path, ros_context, executor, spin_for, spin_until
):
    _write_bag(tmp_path / "bag", frames=4)
    player = _player(
        ros_context, executor, tmp_path / "bag", start_delay_s=0.0,
        wait_for_subscribers=["depth/image_raw:1", "thermal/image_raw:1"],
    )
    spin_for(executor, 0.8)
    assert sum(player.published.values()) == 0  # nobody listens yet
    recorder = _Recorder(context=ros_context)
    executor.add_node(recorder)
    assert spin_until(executor, lambda: player.finished, timeout_s=8.0)
    spin_until(executor, lambda: len(recorder.msgs.get("depth/image_raw", [])) == 4, 1.0)
    assert len(recorder.msgs["depth/image_raw"]) == 4  # the first frame reached it too


def test_player_starts_anyway_when_subscribers_do_not_come(
    tmp_path, ros_context, executor, spin_until
):
    _write_bag(tmp_path / "bag", frames=4)
    player = _player(
        ros_context, executor, tmp_path / "bag", start_delay_s=0.0,
        wait_for_subscribers=["depth/image_raw:3"], wait_for_subscribers_s=0.5,
    )
    start = time.monotonic()
    assert spin_until(executor, lambda: player.finished, timeout_s=8.0)
    assert time.monotonic() - start > 0.5


def test_bad_wait_for_subscribers_entries_are_refused(tmp_path, ros_context):
    _write_bag(tmp_path / "bag", frames=2)
    for entry in ("depth/image_raw", "depth/image_raw:0", ":2", "depth/image_raw:two"):
        with pytest.raises(ConfigError, match="'topic:count'"):
            BagPlayerNode(
                context=ros_context,
                parameter_overrides=[
                    Parameter("bag", value=str(tmp_path / "bag")),
                    Parameter("wait_for_subscribers", value=[entry]),
                ],
            )


def test_list_parameters_given_as_a_single_string_are_refused(tmp_path, ros_context):
    _write_bag(tmp_path / "bag", frames=2)
    for name in ("topics", "exclude_topics", "exclude_transforms", "wait_for_subscribers"):
        # A single string would otherwise be taken letter by letter.
        with pytest.raises(ConfigError, match=f"'{name}' must be a list of strings, got "
                           "'thermal_optical_frame'.*parameters file"):
            _player(ros_context, None, tmp_path / "bag", **{name: "thermal_optical_frame"})
    with pytest.raises(ConfigError, match="'topics' must be a list of strings"):
        _player(ros_context, None, tmp_path / "bag", topics=[1, 2])
    with pytest.raises(ConfigError, match="diagnostics_period must be .* above 0"):
        _player(ros_context, None, tmp_path / "bag", diagnostics_period=0.0)


def test_a_bags_tf_static_is_played_latched_where_tf2_msgs_is_installed(
    tmp_path, ros_context, executor, spin_until, tf2_msgs
):
    from iphd.ros import qos

    _write_bag(tmp_path / "bag")
    player, _ = _play(ros_context, executor, spin_until, tmp_path / "bag")
    assert player.skipped == {} and player.published["/tf_static"] == 1
    # Played once at the start; a listener that comes after the end of the bag gets it.
    late = Node("late_listener", context=ros_context)
    got = []
    late.create_subscription(tf2_msgs.TFMessage, "/tf_static", got.append, qos.STATIC_TF)
    executor.add_node(late)
    assert spin_until(executor, lambda: bool(got))
    frames = {(t.header.frame_id, t.child_frame_id) for t in got[0].transforms}
    assert frames == {
        ("camera_link", "depth_optical_frame"), ("depth_optical_frame", "thermal_optical_frame")
    }
    # The recorded transforms, as the bag writer made them from the calibration.
    first = next(t for t in got[0].transforms if t.child_frame_id == "thermal_optical_frame")
    (expected,) = (
        t for t in rig_transforms(load_calibration(), T0)
        if t.child_frame_id == "thermal_optical_frame"
    )
    assert first.transform == expected.transform


def _late_tf_static(ros_context, executor, spin_until, tf2_msgs) -> dict:
    """What a listener that comes after the end of the bag gets on /tf_static: child -> tf."""
    from iphd.ros import qos

    late = Node("late_listener", context=ros_context)
    got = []
    late.create_subscription(tf2_msgs.TFMessage, "/tf_static", got.append, qos.STATIC_TF)
    executor.add_node(late)
    assert spin_until(executor, lambda: bool(got))
    spin_until(executor, lambda: False, 0.3)  # anything else latched arrives too
    return {t.child_frame_id: t for m in got for t in m.transforms}


def test_a_late_listener_gets_every_static_transform_of_the_bag(
    tmp_path, ros_context, executor, spin_until, tf2_msgs
):
    from iphd.calibration import StaticTransform

    _write_bag(tmp_path / "bag", frames=4)
    # A robot's static transforms, latched by another publisher after the rig's.
    mount = StaticTransform("base_link", "camera_link", (0.1, 0.0, 1.2), (0.0, 0.0, 0.0, 1.0))
    write_graph_recording(tmp_path / "bag", tmp_path / "rec", static_tf=[mount])
    recorded = BagReader(tmp_path / "rec").topics["/tf_static"]
    assert (recorded.count, recorded.latched) == (2, True)
    player, _ = _play(ros_context, executor, spin_until, tmp_path / "rec")
    assert player.published["/tf_static"] == 2
    # As tf2's static broadcaster: the last message holds all, not the last publisher's only.
    got = _late_tf_static(ros_context, executor, spin_until, tf2_msgs)
    assert set(got) == {"camera_link", "depth_optical_frame", "thermal_optical_frame"}
    assert got["camera_link"].transform.translation.z == pytest.approx(1.2)


def test_tf_static_is_played_latched_even_when_the_bag_stored_no_qos(
    tmp_path, ros_context, executor, spin_until, tf2_msgs
):
    from iphd.calibration import StaticTransform

    _write_bag(tmp_path / "bag", frames=4)
    mount = StaticTransform("base_link", "camera_link", (0.1, 0.0, 1.2), (0.0, 0.0, 0.0, 1.0))
    write_graph_recording(tmp_path / "bag", tmp_path / "rec", static_tf=[mount], qos=False)
    assert not BagReader(tmp_path / "rec").topics["/tf_static"].latched
    _play(ros_context, executor, spin_until, tmp_path / "rec")
    # tf2's listeners ask for transient-local: a volatile /tf_static would reach none of them.
    got = _late_tf_static(ros_context, executor, spin_until, tf2_msgs)
    assert set(got) == {"camera_link", "depth_optical_frame", "thermal_optical_frame"}


def test_the_rig_transforms_the_graph_publishes_are_not_played(
    tmp_path, ros_context, executor, spin_until, tf2_msgs
):
    from iphd.calibration import StaticTransform

    _write_bag(tmp_path / "bag", frames=4)
    mount = StaticTransform("base_link", "camera_link", (0.1, 0.0, 1.2), (0.0, 0.0, 0.0, 1.0))
    write_graph_recording(tmp_path / "bag", tmp_path / "rec", static_tf=[mount])
    player, _ = _play(ros_context, executor, spin_until, tmp_path / "rec",
                      exclude_transforms=["thermal_optical_frame", "/depth_optical_frame"])
    got = _late_tf_static(ros_context, executor, spin_until, tf2_msgs)
    assert set(got) == {"camera_link"}  # the robot's transform still plays
    assert player.transforms_not_played == {"depth_optical_frame": 1, "thermal_optical_frame": 1}
    assert player.stats()["transforms_not_played"] == (
        "depth_optical_frame (1), thermal_optical_frame (1)"
    )
    # The bag's first /tf_static held only excluded frames: nothing of it went out.
    assert player.published["/tf_static"] == 1
    with pytest.raises(ConfigError, match="exclude_transforms"):
        _player(ros_context, None, tmp_path / "rec", exclude_transforms=["/"])


def test_compressed_images_are_also_published_decoded_on_their_raw_topic(
    tmp_path, ros_context, executor, spin_until
):
    """A robot's bag of image_transport topics feeds the graph: compressedDepth and compressed
    images come out as the Images they stand for, with their stamps and frames."""
    from transport_bags import write_transport_bag

    stamps = _write_bag(tmp_path / "raw", frames=8)

    def tear(topic, index, msg):
        if topic == "depth/image_raw" and index == 3:
            msg.data = msg.data[:40]
        return msg

    write_transport_bag(tmp_path / "raw", tmp_path / "bag", {
        "depth/image_raw": "compressedDepth", "thermal/image_raw": "compressed"}, edit=tear)
    player, rec = _play(ros_context, executor, spin_until, tmp_path / "bag")
    torn = T0 + 3 * FRAME_NS
    assert rec.stamps("depth/image_raw") == [s for s in stamps["depth"] if s != torn]
    assert rec.stamps("thermal/image_raw") == stamps["thermal"]
    depth = rec.msgs["depth/image_raw"][4]
    assert depth.encoding == "16UC1" and depth.header.frame_id == "depth_optical_frame"
    np.testing.assert_array_equal(image_to_array(depth), np.full((INTR_H, INTR_W), 1005))
    np.testing.assert_array_equal(image_to_array(rec.msgs["thermal/image_raw"][1]),
                                  np.full((120, 160), 30004))
    assert player.published["depth/image_raw/compressedDepth"] == 8
    assert player.undecodable == {"depth/image_raw/compressedDepth": 1}
    assert "did not decode" in player._summary()
    assert player.stats()["undecodable_depth/image_raw/compressedDepth"] == 1
    # decompress:=false plays the bag as recorded.
    player = _player(ros_context, executor, tmp_path / "bag", decompress=False)
    assert "depth/image_raw" not in player.published
    assert "depth/image_raw/compressedDepth" in player.published


def test_decoded_topics_leave_raw_images_alone_and_pick_a_transport_per_image():
    from iphd.ros.bag_player_node import decoded_topics

    image = "sensor_msgs/msg/Image"
    compressed = "sensor_msgs/msg/CompressedImage"
    assert decoded_topics({
        "/cam/depth/image_rect_raw/compressed": compressed,
        "/cam/depth/image_rect_raw/compressedDepth": compressed,
        "/cam/color/image_raw/compressed": compressed,
        "/cam/color/image_raw": image,  # recorded raw as well: left as it is
        "/lepton/image_raw/compressed": compressed,
        "/lepton/image_raw/compressedDepth": compressed,
        "/other/compressed": "std_msgs/msg/String",
    }) == {
        "/cam/depth/image_rect_raw/compressedDepth": "/cam/depth/image_rect_raw",
        "/lepton/image_raw/compressed": "/lepton/image_raw",
    }
    # A depth camera whose topic does not say so (depthai's), named as the graph's depth
    # topic: compressedDepth, not the JPEG that compressed defaults to.
    oak = {"/oak/stereo/image_raw/compressed": compressed,
           "/oak/stereo/image_raw/compressedDepth": compressed}
    assert decoded_topics(oak) == {"/oak/stereo/image_raw/compressed": "/oak/stereo/image_raw"}
    assert decoded_topics(oak, ["oak/stereo/image_raw"]) == {
        "/oak/stereo/image_raw/compressedDepth": "/oak/stereo/image_raw"}
