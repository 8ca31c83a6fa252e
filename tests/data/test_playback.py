import numpy as np
import pytest
from transport_bags import write_graph_recording

from iphd.calibration import load_calibration
from iphd.data.playback import BagPlayback, PlaybackConfig
from iphd.data.rosbag import BagReader, RigBagWriter
from iphd.errors import ConfigError, DatasetError
from iphd.sensors.frames import CameraIntrinsics

T0 = 5_000_000_000
MS = 1_000_000
INTR = CameraIntrinsics(16, 16, 10.0, 10.0, 7.5, 7.5)


@pytest.fixture
def bag(tmp_path):
    """Depth at 0, 100, ..., 400 ms (camera info + image each) plus /tf_static at 0."""
    path = tmp_path / "bag"
    with RigBagWriter(path, load_calibration(), INTR, compression="none") as writer:
        for i in range(5):
            writer.write_depth(T0 + i * 100 * MS, np.full((16, 16), i + 1, np.uint16))
    with BagReader(path) as reader:
        yield reader


def _stamps(messages):
    return [(m.topic, (m.log_ns - T0) // MS) for m in messages]


def test_messages_are_released_at_their_recorded_offsets(bag):
    play = BagPlayback(bag, PlaybackConfig(topics=("depth/image_raw",)))
    assert play.start(1_000 * MS) == []
    assert _stamps(play.due(1_000 * MS)) == [("depth/image_raw", 0)]
    assert play.due(1_099 * MS) == []
    assert _stamps(play.due(1_100 * MS)) == [("depth/image_raw", 100)]
    assert play.bag_time_ns(1_150 * MS) == T0 + 150 * MS
    assert _stamps(play.due(1_350 * MS)) == [("depth/image_raw", 200), ("depth/image_raw", 300)]
    assert not play.finished
    assert len(play.due(1_400 * MS)) == 1 and play.finished
    assert play.bag_time_ns(9_000 * MS) == T0 + 400 * MS


def test_rate_scales_the_pace_and_offset_skips_but_keeps_latched_topics(bag):
    play = BagPlayback(bag, PlaybackConfig(rate=2.0, start_offset_s=0.15))
    early = play.start(0)
    assert _stamps(early) == [("/tf_static", 0), ("rig_calibration", 0)]
    assert play.due(24 * MS) == []
    assert _stamps(play.due(25 * MS)) == [("depth/camera_info", 200), ("depth/image_raw", 200)]
    assert play.bag_time_ns(50 * MS) == T0 + 250 * MS


def test_loop_starts_again_and_counts(bag):
    play = BagPlayback(bag, PlaybackConfig(loop=True, topics=("depth/image_raw",), rate=10.0))
    play.start(0)
    assert len(play.due(40 * MS)) == 5 and play.loops == 1 and not play.finished
    assert _stamps(play.due(40 * MS)) == [("depth/image_raw", 0)]


def test_max_per_step_bounds_a_catch_up(bag):
    play = BagPlayback(bag, PlaybackConfig(max_per_step=3))
    play.start(0)
    assert len(play.due(10_000 * MS)) == 3
    assert len(play.due(10_000 * MS)) == 3


def test_bad_settings_are_refused(bag):
    with pytest.raises(ConfigError, match="rate"):
        PlaybackConfig(rate=0.0)
    with pytest.raises(DatasetError, match="past the end"):
        BagPlayback(bag, PlaybackConfig(start_offset_s=1.0))
    with pytest.raises(DatasetError, match="no topic"):
        BagPlayback(bag, PlaybackConfig(topics=("thermal/image_raw",)))


def test_offset_still_releases_tf_static_a_bag_stored_no_qos_for(bag, tmp_path):
    write_graph_recording(bag.path, tmp_path / "rec", qos=False)
    with BagReader(tmp_path / "rec") as reader:
        assert not reader.topics["/tf_static"].latched
        early = BagPlayback(reader, PlaybackConfig(start_offset_s=0.15)).start(0)
    # As the bag player node publishes it: tf2's static broadcaster always latches /tf_static.
    assert ("/tf_static", 0) in _stamps(early)
