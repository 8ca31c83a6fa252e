"""``iphd-eval copy``: what reads of a bag, written as a closed bag."""

import numpy as np
import pytest

from iphd.calibration import load_calibration
from iphd.data.rosbag import DEPTH_IMAGE, BagReader, RigBagWriter, copy_bag, image_to_array
from iphd.errors import DatasetError
from iphd.eval.cli import main
from iphd.sensors.frames import CameraIntrinsics

T0 = 1_700_000_000_000_000_000
INTR = CameraIntrinsics(64, 48, 40.0, 40.0, 31.5, 23.5)


def _bag(path, n=30, compression="zstd"):
    with RigBagWriter(path, load_calibration(), INTR, compression=compression) as writer:
        for i in range(n):
            writer.write_depth(T0 + i * 33_333_333, np.full((48, 64), 1000 + i, np.uint16))
            if i % 4 == 0:
                writer.write_thermal(T0 + i * 33_333_333 + 10**6,
                                     np.full((120, 160), 30000, np.uint16))
    return path


def _read(path):
    with BagReader(path) as reader:
        raws = [(r.topic, r.msgtype, r.log_ns, r.data) for r in reader.raw_messages()]
        depth = [int(image_to_array(m)[0, 0]) for *_, m in reader.messages([DEPTH_IMAGE])]
        return raws, depth, reader.notes(), reader.calibration


def test_a_killed_recording_is_copied_to_a_bag_with_its_metadata(tmp_path):
    # Messages compressed one by one and no metadata.yaml to say so: the copy holds them
    # decompressed (and compressed again by its own writer, which says so).
    src = _bag(tmp_path / "src")
    (src / "metadata.yaml").unlink()
    out = tmp_path / "out"
    copied = copy_bag(src, out, load_calibration())
    assert (out / "metadata.yaml").is_file() and copied.notes == ()
    raws, depth, notes, rig = _read(out)
    assert (raws, depth) == _read(src)[:2] and notes == [] and rig is not None
    assert depth == list(range(1000, 1030)) and copied.messages == len(raws)
    with pytest.raises(DatasetError, match="already exists"):
        copy_bag(src, out)


def test_a_damaged_file_is_copied_as_far_as_it_reads_and_the_cli_says_what_was_lost(
    tmp_path, capsys
):
    src = _bag(tmp_path / "src", n=60, compression="none")
    (db3,) = src.glob("*.db3")
    db3.write_bytes(db3.read_bytes()[: db3.stat().st_size // 2])
    (src / "metadata.yaml").unlink()
    out = tmp_path / "out"
    assert main(["copy", "--bag", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    raws, depth, notes, _ = _read(out)
    assert printed[0] == f"wrote {out}: {len(raws)} messages on 6 topics"
    assert printed[1] == f"not copied, or read from a rebuilt copy, of {src}:"
    assert printed[2].startswith(f"  {db3} is damaged (database disk image is malformed")
    assert 0 < len(depth) < 60 and depth == list(range(1000, 1000 + len(depth)))
    assert notes == []  # the copy itself reads whole
    assert main(["copy", "--bag", str(src), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_topic_of_an_undefined_type_of_the_robots_own_is_left_out_and_named(tmp_path):
    # rosbag2 before Iron stored no message definitions; rosbags knows the standard types only.
    import sqlite3

    import yaml
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    store.register(get_types_from_msg("int32 x\n", "my_msgs/msg/Foo"))
    src = tmp_path / "src"
    writer = Writer(src, version=8)
    writer.open()
    foo = writer.add_connection("/foo", "my_msgs/msg/Foo", typestore=store)
    clock = writer.add_connection("/clock", "rosgraph_msgs/msg/Clock", typestore=store)
    for i in range(3):
        writer.write(foo, T0 + i, store.serialize_cdr(store.types["my_msgs/msg/Foo"](x=i),
                                                     "my_msgs/msg/Foo"))
        writer.write(clock, T0 + i, store.serialize_cdr(
            store.types["rosgraph_msgs/msg/Clock"](
                clock=store.types["builtin_interfaces/msg/Time"](sec=i, nanosec=0)),
            "rosgraph_msgs/msg/Clock"))
    writer.close()
    (db3,) = src.glob("*.db3")
    connection = sqlite3.connect(db3)
    connection.execute("DELETE FROM message_definitions")
    connection.commit()
    connection.close()
    meta = yaml.safe_load((src / "metadata.yaml").read_text())
    for topic in meta["rosbag2_bagfile_information"]["topics_with_message_count"]:
        topic["topic_metadata"]["type_description_hash"] = ""
    (src / "metadata.yaml").write_text(yaml.safe_dump(meta))
    copied = copy_bag(src, tmp_path / "out")
    assert copied.notes == ("/foo (my_msgs/msg/Foo) left out: the bag holds no definition of its "
                            "type (rosbag2 before Iron stored none) and it is not a standard one",)
    with BagReader(tmp_path / "out") as reader:
        assert set(reader.topics) == {"/clock"} and reader.message_count == copied.messages == 3


def test_the_colour_stream_is_left_out_on_request_and_an_unknown_topic_refused(tmp_path, capsys):
    from iphd.data.rosbag import COLOR_IMAGE, COLOR_INFO

    src = tmp_path / "src"
    with RigBagWriter(src, load_calibration(), INTR, color_intrinsics=INTR) as writer:
        for i in range(4):
            writer.write_depth(T0 + i * 33_333_333, np.full((48, 64), 1000, np.uint16))
            writer.write_color(T0 + i * 33_333_333, np.zeros((48, 64, 3), np.uint8))
    out = tmp_path / "out"
    assert main(["copy", "--bag", str(src), "--out", str(out), "--exclude", COLOR_IMAGE,
                 "--exclude", COLOR_INFO]) == 0
    assert f"({COLOR_IMAGE}, {COLOR_INFO} left out)" in capsys.readouterr().out
    with BagReader(out) as reader, BagReader(src) as original:
        assert set(reader.topics) == set(original.topics) - {COLOR_IMAGE, COLOR_INFO}
        assert reader.topics[DEPTH_IMAGE].count == 4
    assert main(["copy", "--bag", str(src), "--out", str(tmp_path / "x"), "--exclude",
                 "/camera/color/image_raw"]) == 2
    assert "has no topic /camera/color/image_raw to leave out" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_copy_that_fails_half_way_leaves_no_part_of_a_bag(tmp_path, monkeypatch):
    from rosbags.rosbag2 import Writer

    src = _bag(tmp_path / "src")
    write = Writer.write
    calls = []

    def full_disk(self, *args):
        calls.append(1)
        if len(calls) > 10:
            raise OSError(28, "No space left on device")
        write(self, *args)

    monkeypatch.setattr(Writer, "write", full_disk)
    with pytest.raises(DatasetError, match=r"writing .*out failed \(\[Errno 28\] No space left "
                       r"on device\); nothing was left"):
        copy_bag(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_bag_of_which_nothing_reads_is_not_copied_to_an_empty_bag(tmp_path, capsys):
    src = _bag(tmp_path / "src", n=0)  # the topics, and not one message (a driver that hung)
    out = tmp_path / "out"
    assert main(["copy", "--bag", str(src), "--out", str(out)]) == 2
    assert (f"no message of {src} could be read, so there is nothing to copy; iphd-eval check "
            f"--bag {src}") in capsys.readouterr().err
    assert not out.exists()
