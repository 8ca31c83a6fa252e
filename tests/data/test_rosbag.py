import logging
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from damaged_bags import damage_db3_page, kill_in_wal_mode, mcap_chunks, mcap_records
from rosbags.rosbag2 import CompressionFormat, CompressionMode, Writer
from transport_bags import write_calibration_recording

from iphd.calibration import (
    StaticTransform,
    calibration_to_yaml,
    load_calibration,
    points_transform,
    rig_static_transforms,
)
from iphd.compressed_images import COMPRESSED_IMAGE
from iphd.data.rosbag import (
    CALIBRATION_KEY,
    CALIBRATION_TOPIC,
    COLOR_FRAME,
    COLOR_IMAGE,
    COLOR_INFO,
    DEPTH_IMAGE,
    GROUND_TRUTH,
    IMAGE,
    PERSON_TRACKS,
    TF_STATIC,
    BagReader,
    RigBagWriter,
    camera_info_to_intrinsics,
    compress_image,
    header_stamp_ns,
    image_to_array,
    read_ground_truth,
    read_static_transforms,
    typestore,
    wal_text,
)
from iphd.data.truth import PersonTruth
from iphd.errors import CalibrationError, ConfigError, DatasetError, FrameError
from iphd.sensors.frames import CameraIntrinsics

T0 = 1_700_000_000_000_000_000
DEPTH_INTR = CameraIntrinsics(64, 48, 40.0, 41.0, 31.5, 23.5, (0.01, -0.02, 0.0, 0.0, 0.001))


def _frames(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    depth = [rng.integers(0, 8000, (48, 64), dtype=np.uint16) for _ in range(n)]
    thermal = [rng.integers(28000, 31000, (120, 160), dtype=np.uint16) for _ in range(n)]
    return depth, thermal


def _people(i: int) -> list[PersonTruth]:
    people = [
        PersonTruth(7, (10.0, 5.0, 20.5, 40.0), 1.0, (0.1 * i, 0.2, 3.0), (0.5, 0.0, -0.25)),
        PersonTruth(2, (30.0, 6.0, 38.0, 44.0), 0.75, (-1.0, 0.25, 4.5)),
    ]
    return people[: 1 + i % 2]


def _write(path, n=3, **kwargs):
    cal = load_calibration()
    depth, thermal = _frames(n)
    stamps = [T0 + i * 33_333_333 for i in range(n)]
    with RigBagWriter(path, cal, DEPTH_INTR, **kwargs) as writer:
        for i, stamp in enumerate(stamps):
            writer.write_depth(stamp, depth[i])
            writer.write_thermal(stamp + 1_000_000, thermal[i])
            writer.write_ground_truth(stamp, _people(i))
    return cal, depth, thermal, stamps


@pytest.mark.parametrize(
    ("storage", "compression"),
    [("sqlite3", "zstd"), ("sqlite3", "none"), ("mcap", "zstd"), ("mcap", "none")],
)
def test_round_trip_gives_back_exact_images_stamps_and_camera_infos(tmp_path, storage, compression):
    path = tmp_path / "bag"
    cal, depth, thermal, stamps = _write(path, storage=storage, compression=compression)
    got: dict[str, list] = {}
    with BagReader(path) as reader:
        assert reader.topics[DEPTH_IMAGE].count == 3
        assert reader.topics[DEPTH_IMAGE].msgtype == IMAGE
        assert reader.start_ns == T0
        assert reader.duration_ns == stamps[-1] + 1_000_000 - T0
        for topic, _type, log_ns, msg in reader.messages():
            got.setdefault(topic, []).append((log_ns, msg))
        assert reader.corrupt == {}
    assert [header_stamp_ns(m) for _, m in got["depth/image_raw"]] == stamps
    assert [log for log, _ in got["depth/image_raw"]] == stamps
    for i, (_, msg) in enumerate(got["depth/image_raw"]):
        assert msg.encoding == "16UC1" and msg.header.frame_id == cal.frames.depth
        np.testing.assert_array_equal(image_to_array(msg), depth[i])
    for i, (_, msg) in enumerate(got["thermal/image_raw"]):
        assert header_stamp_ns(msg) == stamps[i] + 1_000_000
        assert msg.header.frame_id == cal.frames.thermal
        np.testing.assert_array_equal(image_to_array(msg), thermal[i])
    depth_infos = [m for _, m in got["depth/camera_info"]]
    assert [header_stamp_ns(m) for m in depth_infos] == stamps
    assert camera_info_to_intrinsics(depth_infos[0]) == DEPTH_INTR
    assert camera_info_to_intrinsics(got["thermal/camera_info"][0][1]) == cal.thermal


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_a_storage_file_reads_as_its_bag_with_or_without_its_metadata(tmp_path, compression):
    import shutil

    path = tmp_path / "bag"
    cal, depth, _thermal, _stamps = _write(path, compression=compression)
    (db3,) = path.glob("*.db3")
    # Named by its file, in its folder: read as the folder (its compression, the calibration).
    with BagReader(db3) as reader:
        images = [m for t, _, _, m in reader.messages([DEPTH_IMAGE])]
        assert reader.corrupt == {} and reader.calibration is not None
    np.testing.assert_array_equal(image_to_array(images[0]), depth[0])
    # Alone, as a recording cut off before its metadata.yaml was written: messages compressed
    # one by one are recognised and still read.
    alone = tmp_path / "cut_off"
    alone.mkdir()
    shutil.copy(db3, alone / db3.name)
    with BagReader(alone / db3.name) as reader:
        images = [m for t, _, _, m in reader.messages([DEPTH_IMAGE])]
        assert reader.corrupt == {} and len(images) == 3
        # The calibration too, from the rig_calibration message written beside /tf_static.
        assert reader.calibration_origin == "recorded on rig_calibration"
        assert calibration_to_yaml(reader.calibration) == calibration_to_yaml(cal)
    np.testing.assert_array_equal(image_to_array(images[2]), depth[2])
    with BagReader(alone) as reader:  # its folder: the one file in it
        assert reader.topics[DEPTH_IMAGE].count == 3
    (alone / "x.mcap").write_bytes(b"")
    with pytest.raises(DatasetError, match="both .db3 and .mcap files: pass one of them"):
        BagReader(alone)


@pytest.mark.parametrize(("storage", "compression"), [("sqlite3", "zstd"), ("mcap", "none")])
def test_a_split_recording_without_its_metadata_reads_as_one_bag(tmp_path, storage,
                                                                  compression, caplog):
    # ros2 bag record --max-bag-duration, killed: bag_0 .. bag_10 and no metadata.yaml. Here
    # eleven short bags of consecutive times; the folder's files in rosbag2's names.
    alone = tmp_path / "split"
    alone.mkdir()
    stamps = []
    for part in range(11):
        path = tmp_path / f"part{part}"
        with RigBagWriter(path, load_calibration(), DEPTH_INTR, storage=storage,
                          compression=compression) as writer:
            for i in range(2):
                stamp = T0 + (2 * part + i) * 33_333_333
                writer.write_depth(stamp, np.full((48, 64), part, np.uint16))
                stamps.append(stamp)
        (file,) = [p for p in path.iterdir() if p.suffix in (".db3", ".mcap")]
        file.rename(alone / f"split_{part}{file.suffix}")
    with caplog.at_level(logging.WARNING), BagReader(alone) as reader:
        assert [Path(f).name for f in reader.unindexed_files][-2:] == [
            f"split_9.{'db3' if storage == 'sqlite3' else 'mcap'}",
            f"split_10.{'db3' if storage == 'sqlite3' else 'mcap'}",
        ]
        assert reader.topics[DEPTH_IMAGE].count == 22 and reader.topics[TF_STATIC].count == 11
        assert reader.start_ns == T0 and reader.end_ns == stamps[-1]
        images = [m for *_, m in reader.messages([DEPTH_IMAGE])]
        assert reader.corrupt == {}
    assert "has no metadata.yaml" in caplog.text and "11 storage files" in caplog.text
    assert [header_stamp_ns(m) for m in images] == stamps
    assert [int(image_to_array(m)[0, 0]) for m in images] == [p for p in range(11) for _ in "ab"]
    if storage == "sqlite3":  # the last file damaged mid-write: left out, the others read
        last = alone / "split_10.db3"
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
        caplog.clear()
        with caplog.at_level(logging.WARNING), BagReader(alone) as reader:
            ((name, why),) = reader.unreadable_files
            assert name == str(last) and why
            assert [header_stamp_ns(m) for *_, m in reader.messages([DEPTH_IMAGE])] == stamps[:20]
        assert f"{last} does not open" in caplog.text and "sqlite3 fixed.db3" in caplog.text
        for part in range(10):
            (alone / f"split_{part}.db3").unlink()
        with pytest.raises(DatasetError, match="sqlite3 fixed.db3"):  # nothing else to read
            BagReader(alone)
    if storage == "mcap":  # the last file cut off before its one chunk was whole: the others
        last = alone / "split_10.mcap"
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
        with BagReader(alone) as reader:
            ((name, kept),) = reader.cut_off
            assert name == str(last) and kept.messages == 0
            assert [header_stamp_ns(m) for *_, m in reader.messages([DEPTH_IMAGE])] == stamps[:20]


class _Usage(NamedTuple):
    """What ``shutil.disk_usage`` gives, as far as ``check_room`` reads it."""

    free: int


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_splits_compressed_whole_are_read_with_the_last_one_that_was_not(tmp_path, storage):
    # ros2 bag record --compression-mode file --max-bag-duration, killed: each split was
    # compressed whole when the recorder closed it (bag_0.db3.zstd, ...), the one it was
    # writing was not (bag_3.db3), and there is no metadata.yaml.
    try:
        from compression import zstd
    except ImportError:
        from backports import zstd

    alone = tmp_path / "split"
    alone.mkdir()
    stamps = []
    for part in range(4):
        path = tmp_path / f"part{part}"
        with RigBagWriter(path, load_calibration(), DEPTH_INTR, storage=storage) as writer:
            for i in range(2):
                stamp = T0 + (2 * part + i) * 33_333_333
                writer.write_depth(stamp, np.full((48, 64), part, np.uint16))
                stamps.append(stamp)
        (file,) = [p for p in path.iterdir() if p.suffix in (".db3", ".mcap")]
        if part < 3:
            (alone / f"bag_{part}{file.suffix}.zstd").write_bytes(zstd.compress(file.read_bytes()))
        else:
            file.rename(alone / f"bag_{part}{file.suffix}")
    with BagReader(alone) as reader:
        suffix = ".db3" if storage == "sqlite3" else ".mcap"
        assert [Path(f).name for f in reader.unindexed_files] == [
            f"bag_0{suffix}.zstd", f"bag_1{suffix}.zstd", f"bag_2{suffix}.zstd", f"bag_3{suffix}"]
        images = [m for *_, m in reader.messages([DEPTH_IMAGE])]
    assert [header_stamp_ns(m) for m in images] == stamps
    assert [int(image_to_array(m)[0, 0]) for m in images] == [0, 0, 1, 1, 2, 2, 3, 3]
    # Without the room to unpack them (a tmpfs /tmp), they are left out with what to do.
    from iphd.data import sqlite_rescue

    unpacked = (alone / f"bag_0{suffix}.zstd").stat().st_size
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite_rescue, "COPY_MARGIN", 0)
        patch.setattr(sqlite_rescue.shutil, "disk_usage", lambda _folder: _Usage(unpacked))
        with BagReader(alone) as reader:
            assert [Path(f).name for f in reader.unindexed_files] == [f"bag_3{suffix}"]
            assert len(reader.unreadable_files) == 3
            assert all("set TMPDIR to a folder with room" in why
                       for _, why in reader.unreadable_files)
    # A compressed split that does not unpack (cut short) is left out and named.
    broken = alone / f"bag_1{suffix}.zstd"
    broken.write_bytes(broken.read_bytes()[:100])
    with BagReader(alone) as reader:
        ((name, why),) = reader.unreadable_files
        assert name == str(broken) and why
        assert len([m for *_, m in reader.messages([DEPTH_IMAGE])]) == 6
    # One of them on its own is a folder to pass; a folder of one compressed file reads.
    with pytest.raises(DatasetError, match="compressed whole .* pass its folder"):
        BagReader(alone / f"bag_0{suffix}.zstd")
    one = tmp_path / "one"
    one.mkdir()
    (alone / f"bag_0{suffix}.zstd").rename(one / f"bag_0{suffix}.zstd")
    with BagReader(one) as reader:
        assert reader.topics[DEPTH_IMAGE].count == 2


def _storages(reader):
    storage = reader._reader.storage
    return getattr(storage, "storages", [storage])


def _killed_in_wal_mode(tmp_path, metadata=False):
    """A recording of 6 frames killed with its last three frames' messages in its -wal.

    A metadata.yaml written at an earlier split (rosbag2 rewrites it at each) is kept with
    ``metadata``.
    """
    _, _, _, stamps = _write(tmp_path / "bag", n=6, storage="sqlite3")
    copy, total = kill_in_wal_mode(tmp_path / "bag", tmp_path / "killed", stamps[3])
    if metadata:  # what it said of the file's first three frames
        _write(tmp_path / "early" / "bag", n=3, storage="sqlite3")
        (tmp_path / "early" / "bag" / "metadata.yaml").rename(copy.parent / "metadata.yaml")
    return copy, total


@pytest.mark.parametrize("metadata", [False, True])
def test_messages_left_in_sqlite_write_ahead_log_are_read_from_a_merged_copy(tmp_path, metadata):
    copy, total = _killed_in_wal_mode(tmp_path, metadata)
    wal = copy.with_name(f"{copy.name}-wal")
    files = {p.name: p.read_bytes() for p in copy.parent.iterdir()}
    with BagReader(copy.parent) as reader:
        (log,) = reader.wal_logs
        assert (log.file, log.wal_bytes, log.error) == (str(copy), wal.stat().st_size, None)
        assert reader.message_count == total and 0 < log.messages < total
        assert sum(1 for _ in reader.raw_messages()) == total
        depth = [header_stamp_ns(m) for *_, m in reader.messages([DEPTH_IMAGE])]
        assert depth == [T0 + i * 33_333_333 for i in range(6)]
        assert reader.topics[DEPTH_IMAGE].count == 6
        read_from = _storages(reader)[0].path
        assert read_from != copy and Path(read_from).exists()
    assert not Path(read_from).exists()  # the merged copy goes with the reader
    # The recording is left exactly as it was, its log included.
    assert {p.name: p.read_bytes() for p in copy.parent.iterdir()} == files
    text = wal_text(log)
    assert f"{copy}-wal held" in text and f"its {log.messages} messages were read" in text
    # The storage file passed on its own reads the same.
    with BagReader(copy) as reader:
        assert reader.message_count == total and reader.wal_logs == [log]
    from iphd.eval.bag_check import check_bag

    assert text in " ".join(check_bag(copy.parent).notes)


def test_a_write_ahead_log_that_cannot_be_merged_is_named_and_the_file_read_alone(
    tmp_path, monkeypatch
):
    import sqlite3

    from iphd.data import sqlite_rescue

    copy, total = _killed_in_wal_mode(tmp_path)

    monkeypatch.setattr(sqlite_rescue.shutil, "disk_usage", lambda _folder: _Usage(10**9))
    size = copy.stat().st_size + Path(f"{copy}-wal").stat().st_size
    monkeypatch.setattr(sqlite_rescue, "COPY_MARGIN", 10**9 - size + 1)  # one byte short
    with BagReader(copy.parent) as reader:
        (log,) = reader.wal_logs
        assert log.error.startswith(f"a copy needs {size / 1e9:.2f} GB and the temporary "
                                    "folder ") and log.messages == 0
        before = reader.message_count
        assert before < total and sum(1 for _ in reader.raw_messages()) == before
        assert _storages(reader)[0].path == copy
    text = wal_text(log)
    assert "1.00 GB free: set TMPDIR to a folder with room" in text
    assert "they are not read" in text and "PRAGMA wal_checkpoint" in text

    def full_disk(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.undo()
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setattr(sqlite_rescue.shutil, "copyfile", full_disk)  # filled while copying
    with BagReader(copy.parent) as reader:
        assert reader.wal_logs[0].error == "[Errno 28] No space left on device"
        assert reader.message_count == before
    assert not list((tmp_path / "tmp").iterdir())  # nothing left behind
    monkeypatch.undo()
    merge = sqlite3.connect(copy)  # what the message says to do
    merge.execute("PRAGMA wal_checkpoint")
    merge.close()
    with BagReader(copy.parent) as reader:
        assert sum(1 for _ in reader.raw_messages()) == total


@pytest.mark.parametrize("metadata", [False, True])
def test_a_sqlite_file_cut_off_mid_write_is_rebuilt_from_the_rows_that_read(
    tmp_path, metadata, caplog
):
    # A power loss with the default preset: the file ends short of the size its header gives,
    # and sqlite refuses it ("database disk image is malformed").
    path = tmp_path / "bag"
    _write(path, n=20, storage="sqlite3", compression="none")
    with BagReader(path) as reader:
        recorded = [(t, log) for t, _, log, _ in reader.messages()]
        depth = [header_stamp_ns(m) for *_, m in reader.messages([DEPTH_IMAGE])]
    (storage_file,) = path.glob("*.db3")
    data = storage_file.read_bytes()
    storage_file.write_bytes(data[: len(data) // 2])
    if not metadata:  # a recorder that lost power wrote none
        (path / "metadata.yaml").unlink()
    with caplog.at_level(logging.WARNING), BagReader(path) as reader:
        (rebuilt,) = reader.rebuilt
        read = [(t, log) for t, _, log, _ in reader.messages()]
        stamps = [header_stamp_ns(m) for *_, m in reader.messages([DEPTH_IMAGE])]
        assert reader.message_count == len(read) == rebuilt.messages
        assert reader.topics[DEPTH_IMAGE].count == len(stamps)
        copy = _storages(reader)[0].path
        assert copy != storage_file and Path(copy).exists()
    assert not Path(copy).exists()
    # What was read is what the recorder wrote first, in log-time order; the rest is lost.
    assert 0 < len(read) < len(recorded) and set(read) < set(recorded)
    assert [log for _, log in read] == sorted(log for _, log in read)
    assert 0 < len(stamps) < len(depth) and stamps == depth[: len(stamps)]
    assert (rebuilt.file, rebuilt.reason) == (str(storage_file), "database disk image is malformed")
    assert rebuilt.missing_bytes == len(data) - len(data) // 2 and rebuilt.lost == 0
    assert f"{storage_file} is damaged (database disk image is malformed, " in caplog.text
    assert f"after message id {rebuilt.last_id} are lost" in caplog.text
    assert storage_file.read_bytes() == data[: len(data) // 2]  # left as it is
    from iphd.eval.bag_check import check_bag

    assert rebuilt.describe() in check_bag(path).notes


def _sqlite_bag(tmp_path):
    """A 20-frame bag in one uncompressed .db3: (folder, the file, its depth stamps)."""
    path = tmp_path / "bag"
    _write(path, n=20, storage="sqlite3", compression="none")
    with BagReader(path) as reader:
        depth = [header_stamp_ns(m) for *_, m in reader.messages([DEPTH_IMAGE])]
    (storage_file,) = path.glob("*.db3")
    return path, storage_file, depth


def test_a_sqlite_file_whose_tail_a_power_loss_zeroed_is_rebuilt(tmp_path):
    # The file system kept the file's size but not its last pages' content.
    path, storage_file, depth = _sqlite_bag(tmp_path)
    data = storage_file.read_bytes()
    kept = len(data) // 2 // 4096 * 4096
    storage_file.write_bytes(data[:kept] + bytes(len(data) - kept))
    with BagReader(path) as reader:
        (rebuilt,) = reader.rebuilt
        stamps = [header_stamp_ns(m) for *_, m in reader.messages([DEPTH_IMAGE])]
    assert rebuilt.missing_bytes == 0 and rebuilt.lost == 0
    assert 0 < len(stamps) < len(depth) and stamps == depth[: len(stamps)]


def test_a_rebuilt_sqlite_file_passes_by_the_rows_of_a_damaged_page(tmp_path):
    path, storage_file, depth = _sqlite_bag(tmp_path)
    damage_db3_page(storage_file)  # a message's data in the middle no longer reads
    data = storage_file.read_bytes()
    storage_file.write_bytes(data[: len(data) * 9 // 10])  # and the file cut short
    with BagReader(path) as reader:
        (rebuilt,) = reader.rebuilt
        stamps = [header_stamp_ns(m) for *_, m in reader.messages([DEPTH_IMAGE])]
        assert reader.message_count == rebuilt.messages and reader.gaps == []
    assert rebuilt.lost == 1 and rebuilt.messages + 1 == rebuilt.last_id
    assert len(stamps) < len(depth) and stamps == [t for t in depth if t in stamps]
    assert f"{rebuilt.lost} messages among them could not be read" in rebuilt.describe()


def test_a_sqlite_file_that_does_not_rebuild_is_refused_with_how_to_rescue_it(tmp_path):
    path = tmp_path / "bag"
    _write(path, n=20, storage="sqlite3")
    (storage_file,) = path.glob("*.db3")
    data = bytearray(storage_file.read_bytes())
    data[:4096] = bytes(4096)  # its header and schema
    storage_file.write_bytes(bytes(data))
    # The rebuild's temporary copy is removed. (Compared with what was there before: a run
    # killed mid-test elsewhere on the machine may have left one of its own.)
    before = set(Path(tempfile.gettempdir()).glob("iphd-db3-*/bag*.db3"))
    with pytest.raises(DatasetError, match="not a readable ROS 2 bag") as error:
        BagReader(path)
    assert "rebuilding it from the rows that still read failed too (it does not start with " \
           "an sqlite header)" in str(error.value)
    assert "'.recover' | sqlite3 fixed.db3" in str(error.value)
    assert set(Path(tempfile.gettempdir()).glob("iphd-db3-*/bag*.db3")) <= before


def test_a_damaged_page_of_a_db3_is_read_past_and_named(tmp_path, caplog):
    path = tmp_path / "bag"
    _write(path, n=40, compression="none")
    with BagReader(path) as reader:
        expected = [(r.topic, r.log_ns, r.data) for r in reader.raw_messages()]
    (db3,) = path.glob("*.db3")
    damage_db3_page(db3)
    with caplog.at_level(logging.WARNING), BagReader(path) as reader:
        got = [(r.topic, r.log_ns, r.data) for r in reader.raw_messages()]
        (gap,) = reader.gaps
    assert 0 < len(expected) - len(got) < 10 and got[-1] == expected[-1]
    assert got == [m for m in expected if m in got]  # in order, nothing read twice
    assert gap.resumed_ns is not None and gap.after_ns < gap.resumed_ns
    lost = [m for m in expected if m not in got]
    assert all(gap.after_ns <= log_ns < gap.resumed_ns for _, log_ns, _ in lost)
    assert "malformed" in gap.reason and f"sqlite3 {db3} '.recover'" in gap.hint
    assert "the storage failed after log time" in caplog.text


def _cut_off_mcap(tmp_path, n, compression="zstd"):
    """A closed MCAP bag of ``n`` frames, its file's place alone, its bytes and chunk records.

    rosbags closes a chunk past 1 MiB: about 23 of these frames.
    """
    path = tmp_path / "bag"
    written = _write(path, n=n, storage="mcap", compression=compression)
    (mcap,) = path.glob("*.mcap")
    data = mcap.read_bytes()
    alone = tmp_path / "cut" / mcap.name
    alone.parent.mkdir()
    chunks = mcap_chunks(data)
    return written, alone, data, chunks


def _depth_stamps(path) -> list[int]:
    with BagReader(path) as reader:
        assert reader.corrupt == {}
        return [header_stamp_ns(m) for *_, m in reader.messages([DEPTH_IMAGE])]


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_an_mcap_file_cut_off_mid_write_is_read_up_to_its_last_whole_chunk(
    tmp_path, compression, caplog
):
    (_cal, depth, _thermal, stamps), alone, data, chunks = _cut_off_mcap(tmp_path, 110, compression)
    assert len(chunks) >= 4, "the test needs a file of several chunks"
    # The closed file: rosbags' own reading, nothing reported cut off.
    alone.write_bytes(data)
    with BagReader(alone) as reader:
        assert reader.cut_off == []
    full = _depth_stamps(alone)
    assert full == stamps
    # Cut inside the third chunk: the first two are read, in log-time order, the rest lost.
    cut = (chunks[2][0] + chunks[2][1]) // 2
    alone.write_bytes(data[:cut])
    with caplog.at_level(logging.WARNING), BagReader(alone) as reader:
        ((name, kept),) = reader.cut_off
        assert name == str(alone) and kept.read_bytes == chunks[2][0]
        assert kept.lost_bytes == cut - chunks[2][0]
        assert kept.reason == "an unfinished record at its end"
        assert reader.message_count == kept.messages > 0
        got = [(t, log) for t, _, log, _ in reader.messages()]
        assert [log for _, log in got] == sorted(log for _, log in got)
        assert reader.start_ns == T0 and reader.end_ns == got[-1][1]
        assert sum(c.count for c in reader.topics.values()) == len(got)
        images = [m for *_, m in reader.messages([DEPTH_IMAGE])]
    assert "cut off before its recording closed it" in caplog.text and str(alone) in caplog.text
    assert 0 < len(images) < len(stamps)
    assert [header_stamp_ns(m) for m in images] == stamps[: len(images)]
    np.testing.assert_array_equal(image_to_array(images[-1]), depth[len(images) - 1])
    # Cut exactly after a whole chunk, or with a zero-filled tail: the same chunks are read.
    alone.write_bytes(data[: chunks[2][0]])
    assert _depth_stamps(alone) == stamps[: len(images)]
    alone.write_bytes(data[: chunks[2][0]] + bytes(5000))
    with BagReader(alone) as reader:
        assert reader.cut_off[0][1].reason == "zero bytes where the next record should start"
    assert _depth_stamps(alone) == stamps[: len(images)]
    # Its folder, as the recorder left it without metadata.yaml, reads the same.
    assert _depth_stamps(alone.parent) == stamps[: len(images)]


def test_an_unchunked_mcap_file_cut_off_mid_write_is_read_up_to_its_last_whole_message(tmp_path):
    # rosbag2's `fastwrite` preset writes messages without chunks. Made here from an
    # uncompressed file: each chunk's records written out at the top level.
    import struct

    (_cal, _depth, _thermal, stamps), alone, data, chunks = _cut_off_mcap(tmp_path, 60, "none")
    header_end = mcap_records(data)[0][2]
    flat = bytearray(data[:header_end])
    for start, _end in chunks:
        name_length = struct.unpack_from("<I", data, start + 9 + 28)[0]
        size_at = start + 9 + 32 + name_length
        (size,) = struct.unpack_from("<Q", data, size_at)
        flat += data[size_at + 8 : size_at + 8 + size]
    records = mcap_records(bytes(flat))
    messages = [(start, end) for op, start, end in records if op == 0x05]
    cut = messages[len(messages) // 2]
    alone.write_bytes(bytes(flat[: cut[0] + 20]))  # inside a message record
    with BagReader(alone) as reader:
        ((_, kept),) = reader.cut_off
        assert kept.read_bytes == cut[0] and kept.messages == len(messages) // 2
    read = _depth_stamps(alone)
    assert 0 < len(read) < len(stamps) and read == stamps[: len(read)]


def test_a_damaged_chunk_of_a_cut_off_mcap_file_is_skipped_or_ends_what_is_read(tmp_path):
    (_cal, _depth, _thermal, stamps), alone, data, chunks = _cut_off_mcap(tmp_path, 110)
    start, end = chunks[2]
    damaged = bytearray(data[: chunks[-1][1]])
    damaged[end - 20 : end - 10] = bytes(10)  # inside the third chunk's compressed data
    # Its message indexes follow it: indexed without decompressing, skipped when read, as in a
    # closed file; the chunks after it are read.
    alone.write_bytes(bytes(damaged))
    with BagReader(alone) as reader:
        ((_, kept),) = reader.cut_off
        assert kept.read_bytes == chunks[-1][1]
        images = [header_stamp_ns(m) for *_, m in reader.messages([DEPTH_IMAGE])]
        lost = reader.corrupt[DEPTH_IMAGE]
    assert lost > 0 and images == [t for t in stamps if t in images]
    assert len(images) + lost == len(stamps) and images[-1] == stamps[-1]
    # Cut right after it, before its indexes: decompressed to be counted, it ends what is read.
    alone.write_bytes(bytes(damaged[:end]))
    with BagReader(alone) as reader:
        ((_, kept),) = reader.cut_off
        assert kept.read_bytes == start
        assert kept.reason.startswith(f"a damaged chunk at byte {start}")
    read = _depth_stamps(alone)
    assert 0 < len(read) < len(stamps) and read == stamps[: len(read)]


def _reference_mcap(path, raws, types, **options):
    """``raws`` written by the reference MCAP writer (the ``mcap`` package, as rosbag2's mcap
    plugin writes: CRCs, schemas and channels in the chunks, message indexes)."""
    from mcap.writer import Writer as McapWriter

    store = typestore()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as stream:
        writer = McapWriter(stream, **options)
        writer.start(profile="ros2", library="mcap reference writer")
        schemas, channels = {}, {}
        for topic, msgtype in types.items():
            if msgtype not in schemas:
                text, _ = store.generate_msgdef(msgtype, ros_version=2)
                schemas[msgtype] = writer.register_schema(msgtype, "ros2msg", text.encode())
            channels[topic] = writer.register_channel(topic, "cdr", schemas[msgtype], {})
        for seq, raw in enumerate(raws):
            writer.add_message(channels[raw.topic], raw.log_ns, raw.data, raw.log_ns, seq)
        writer.finish()
    return path.read_bytes()


@pytest.mark.parametrize("options", ["zstd", "lz4", "none", "unchunked"])
def test_a_cut_off_mcap_of_the_reference_writer_reads_as_the_prefix_of_what_was_recorded(
    tmp_path, options
):
    from mcap.writer import CompressionType

    _write(tmp_path / "bag", n=20)
    with BagReader(tmp_path / "bag") as reader:
        raws = list(reader.raw_messages())
        types = {topic: info.msgtype for topic, info in reader.topics.items()}
    kwargs = ({"use_chunking": False} if options == "unchunked" else
              {"compression": CompressionType[options.upper()], "chunk_size": 16 * 1024})
    data = _reference_mcap(tmp_path / "ref" / "ref.mcap", raws, types, **kwargs)
    cut = tmp_path / "cut" / "ref.mcap"
    cut.parent.mkdir()
    counts = []
    for fraction in (1.0, 0.8, 0.5, 0.2):
        cut.write_bytes(data[: int(len(data) * fraction)])
        with BagReader(cut) as reader:
            got = [(r.topic, r.log_ns, r.data) for r in reader.raw_messages()]
            assert (reader.cut_off == []) == (fraction == 1.0)
            assert reader.message_count == len(got)
        assert got == [(r.topic, r.log_ns, r.data) for r in raws[: len(got)]]
        counts.append(len(got))
    assert counts[0] == len(raws) and counts == sorted(counts, reverse=True) and counts[-1] > 0


def test_an_unchunked_mcap_written_out_of_log_time_order_reads_whole_and_in_order(tmp_path):
    # rosbag2's recorder logs a message at its arrival but writes it when its callback runs:
    # without chunks (`fastwrite`) the file's records are then slightly out of log-time order.
    # rosbags refused the file at the first inversion, which read as a storage gap per
    # inversion, each resumed by scanning again from the start (quadratic).
    _write(tmp_path / "bag", n=40)
    with BagReader(tmp_path / "bag") as reader:
        raws = list(reader.raw_messages())
        types = {topic: info.msgtype for topic, info in reader.topics.items()}
    written = list(raws)
    for i in range(0, len(written) - 1, 3):  # every third pair written the other way round
        written[i], written[i + 1] = written[i + 1], written[i]
    assert [r.log_ns for r in written] != sorted(r.log_ns for r in written)
    data = _reference_mcap(tmp_path / "ref" / "ref.mcap", written, types, use_chunking=False)
    in_order = sorted(raws, key=lambda r: r.log_ns)
    with BagReader(tmp_path / "ref") as reader:
        got = list(reader.raw_messages())
        assert reader.gaps == [] and reader.cut_off == []
    assert [r.log_ns for r in got] == [r.log_ns for r in in_order]
    assert sorted((r.topic, r.log_ns, r.data) for r in got) == sorted(
        (r.topic, r.log_ns, r.data) for r in raws)
    # Cut off mid-write too: what was written before the cut, in log-time order.
    cut = tmp_path / "cut" / "ref.mcap"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    with BagReader(cut) as reader:
        part = [r.log_ns for r in reader.raw_messages()]
        assert reader.gaps == [] and reader.cut_off != []
    assert 0 < len(part) < len(raws) and part == sorted(part)


def test_a_damaged_chunk_without_message_indexes_is_skipped_and_the_rest_read(tmp_path):
    # A writer set to write no message indexes (rosbag2's mcap `noMessageIndex`): in a file
    # without summary each chunk is decompressed to be counted, and a damaged one is passed by.
    from mcap.writer import CompressionType, IndexType

    _write(tmp_path / "bag", n=20)
    with BagReader(tmp_path / "bag") as reader:
        raws = list(reader.raw_messages())
        types = {topic: info.msgtype for topic, info in reader.topics.items()}
    data = bytearray(_reference_mcap(
        tmp_path / "ref" / "ref.mcap", raws, types, compression=CompressionType.ZSTD,
        chunk_size=16 * 1024, index_types=IndexType.CHUNK))
    records = mcap_records(bytes(data))
    assert 0x07 not in {op for op, _, _ in records}
    chunks = mcap_chunks(bytes(data))
    assert len(chunks) >= 6, "the test needs a file of several chunks"
    start, end = chunks[3]
    data[end - 20 : end - 10] = bytes(10)  # inside the fourth chunk's compressed data
    cut = tmp_path / "cut" / "ref.mcap"
    cut.parent.mkdir()
    cut.write_bytes(bytes(data[: chunks[-1][1]]))  # cut after the last whole chunk
    with BagReader(cut) as reader:
        ((_, kept),) = reader.cut_off
        got = [(r.topic, r.log_ns, r.data) for r in reader.raw_messages()]
        assert reader.message_count == len(got) == kept.messages
    assert kept.read_bytes == chunks[-1][1] and kept.skipped == ((start, end, kept.skipped[0][2]),)
    assert "damaged chunk without message indexes at byte" in kept.describe()
    expected = [(r.topic, r.log_ns, r.data) for r in raws]
    lost = [m for m in expected if m not in got]  # one run of messages: the chunk's
    first = expected.index(lost[0])
    assert lost == expected[first : first + len(lost)] and got[-1] == expected[-1]
    assert got == [m for m in expected if m in got]


def test_a_cut_among_the_last_chunks_message_indexes_loses_none_of_its_messages(tmp_path):
    from mcap.writer import CompressionType

    _write(tmp_path / "bag", n=20)
    with BagReader(tmp_path / "bag") as reader:
        raws = list(reader.raw_messages())
        types = {topic: info.msgtype for topic, info in reader.topics.items()}
    data = _reference_mcap(tmp_path / "ref" / "ref.mcap", raws, types,
                           compression=CompressionType.ZSTD, chunk_size=16 * 1024)
    records = mcap_records(data)
    third = [i for i, (op, _, _) in enumerate(records) if op == 0x06][2]
    indexes = [end for op, _, end in records[third + 1 :] if op == 0x07]
    assert len(indexes) > 1 and records[third + 1][0] == 0x07  # one per channel, after it
    cut = tmp_path / "cut" / "ref.mcap"
    cut.parent.mkdir()
    cut.write_bytes(data[: indexes[0]])  # the first channel's index only
    with BagReader(cut) as reader:
        got = [(r.topic, r.log_ns, r.data) for r in reader.raw_messages()]
        assert reader.message_count == len(got) and reader.corrupt == {}
    expected = [(r.topic, r.log_ns, r.data) for r in raws]
    assert got == expected[: len(got)]
    with BagReader(cut) as reader:  # as many as the first three chunks hold, all topics
        topics = {t: info.count for t, info in reader.topics.items()}
    assert len(topics) == len({r.topic for r in raws[: len(got)]})


def test_a_chunk_that_fails_its_crc_is_found_with_or_without_its_index(tmp_path):
    from mcap.writer import CompressionType

    _write(tmp_path / "bag", n=20)
    with BagReader(tmp_path / "bag") as reader:
        raws = list(reader.raw_messages())
        types = {topic: info.msgtype for topic, info in reader.topics.items()}
    data = bytearray(_reference_mcap(tmp_path / "ref" / "ref.mcap", raws, types,
                                     compression=CompressionType.NONE, chunk_size=16 * 1024))
    chunks = mcap_chunks(bytes(data))
    start, end = chunks[2]
    data[end - 100] ^= 0xFF  # one bit flip in the third chunk's (uncompressed) messages
    cut = tmp_path / "cut" / "ref.mcap"
    cut.parent.mkdir()
    expected = [(r.topic, r.log_ns, r.data) for r in raws]
    cut.write_bytes(bytes(data[: chunks[-1][1]]))  # cut off after the last chunk
    with BagReader(cut) as reader:
        got = [(r.topic, r.log_ns, r.data) for r in reader.raw_messages()]
        assert all("Chunk checksum mismatch" in e for e in reader.errors.values())
        lost = sum(reader.corrupt.values())
    assert lost > 0 and got == [m for m in expected if m in got]
    assert got[-1] == expected[len(got) + lost - 1]  # all but the damaged chunk's, to the cut
    cut.write_bytes(bytes(data[:end]))  # cut off right after it: its index never written
    with BagReader(cut) as reader:
        ((_, kept),) = reader.cut_off
        assert kept.read_bytes == start and "checksum" in kept.reason
        got = [(r.topic, r.log_ns, r.data) for r in reader.raw_messages()]
    assert 0 < len(got) and got == expected[: len(got)]


def test_a_damaged_chunk_of_a_closed_mcap_file_is_skipped_and_counted(tmp_path, caplog):
    from mcap.writer import CompressionType

    _write(tmp_path / "bag", n=20)
    with BagReader(tmp_path / "bag") as reader:
        raws = list(reader.raw_messages())
        types = {topic: info.msgtype for topic, info in reader.topics.items()}
    path = tmp_path / "ref" / "ref.mcap"
    data = bytearray(_reference_mcap(path, raws, types, compression=CompressionType.ZSTD,
                                     chunk_size=16 * 1024))
    chunks = mcap_chunks(bytes(data))
    start, end = chunks[len(chunks) // 2]
    data[end - 100] ^= 0xFF  # inside a chunk's compressed data; the file itself is closed
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING), BagReader(path) as reader:
        assert reader.cut_off == []
        got = [(r.topic, r.log_ns, r.data) for r in reader.raw_messages()]
        lost = sum(reader.corrupt.values())
        assert lost > 0 and len(got) + lost == len(raws)
        assert all(f"a damaged chunk at byte {start}" in e for e in reader.errors.values())
    assert "skipped a damaged chunk" in caplog.text
    expected = [(r.topic, r.log_ns, r.data) for r in raws]
    assert got == [m for m in expected if m in got] and got[-1] == expected[-1]


def test_an_mcap_file_cut_off_before_its_first_whole_chunk_is_refused(tmp_path):
    _written, alone, data, chunks = _cut_off_mcap(tmp_path, 30)
    alone.write_bytes(data[: chunks[0][1] - 1])
    with pytest.raises(DatasetError, match="cut off before its recording wrote a whole chunk"):
        BagReader(alone)


def test_camera_info_comes_before_its_image_in_the_bag(tmp_path):
    _write(tmp_path / "bag")
    with BagReader(tmp_path / "bag") as reader:
        order = [t for t, *_ in reader.raw_messages(["depth/image_raw", "depth/camera_info"])]
    assert order == ["depth/camera_info", "depth/image_raw"] * 3


def test_ground_truth_round_trips_as_person_tracks(tmp_path):
    _write(tmp_path / "bag")
    truth = read_ground_truth(tmp_path / "bag")
    assert list(truth) == [T0 + i * 33_333_333 for i in range(3)]
    for i, people in enumerate(truth.values()):
        assert people == sorted(_people(i), key=lambda p: p.pid)
    with BagReader(tmp_path / "bag") as reader:
        msgs = [m for *_, m in reader.messages([GROUND_TRUTH])]
        assert reader.topics[GROUND_TRUTH].msgtype == PERSON_TRACKS
    track = msgs[2].tracks[0]
    assert (track.id, track.state, track.time_since_update_s, len(track.embedding)) == (7, 1, 0, 0)
    assert track.age_s == pytest.approx(2 * 0.033333333)
    assert msgs[1].tracks[0].age_s == 0.0  # pid 2 first written in frame 1
    assert msgs[0].header.frame_id == "depth_optical_frame"


def test_tf_static_holds_the_rig_transforms_and_is_offered_latched(tmp_path):
    cal, *_ = _write(tmp_path / "bag")
    with BagReader(tmp_path / "bag") as reader:
        assert reader.topics[TF_STATIC].latched and reader.topics[TF_STATIC].count == 1
        assert not reader.topics[DEPTH_IMAGE].latched
        ((_, _, log_ns, msg),) = list(reader.messages([TF_STATIC]))
        stored = reader.calibration
    assert log_ns == T0
    expected = rig_static_transforms(cal)
    assert [(t.header.frame_id, t.child_frame_id) for t in msg.transforms] == [
        (e.parent, e.child) for e in expected
    ]
    tr = msg.transforms[1].transform
    np.testing.assert_allclose(
        [tr.translation.x, tr.translation.y, tr.translation.z], expected[1].translation_m
    )
    np.testing.assert_allclose(
        [tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w], expected[1].rotation_xyzw
    )
    assert stored is not None and stored.thermal == cal.thermal
    assert (tmp_path / "bag" / "metadata.yaml").read_text().count(CALIBRATION_KEY) == 1


def test_a_recording_of_the_graph_carries_the_calibration_the_fusion_node_published(tmp_path):
    from iphd.calib.simulate import perturbed_calibration
    from iphd.data.rosbag import copy_bag

    rig = perturbed_calibration(load_calibration(), clock_offset_s=0.04)
    later = perturbed_calibration(load_calibration(), clock_offset_s=0.5)
    # Namespaced, and published again by a restarted node: the first one counts.
    bag = write_calibration_recording(tmp_path / "rec", {
        "/robot1/rig_calibration": [calibration_to_yaml(rig), calibration_to_yaml(later)],
    })
    with BagReader(bag) as reader:
        carried = reader.calibration
        assert reader.calibration_origin == "recorded on /robot1/rig_calibration"
    assert carried is not None and carried.thermal == rig.thermal
    assert carried.thermal_clock_offset_s == pytest.approx(0.04)
    np.testing.assert_allclose(carried.translation_m, rig.translation_m)
    # One stored in the metadata wins (here by a copy with --calibration).
    copy_bag(bag, tmp_path / "copy", calibration=load_calibration())
    with BagReader(tmp_path / "copy") as reader:
        assert reader.calibration_origin == "stored in the bag"
        assert reader.calibration.thermal == load_calibration().thermal
    # A bag without either carries none.
    bag = write_calibration_recording(tmp_path / "none", {"/other": ["x"]})
    with BagReader(bag) as reader:
        assert reader.calibration is None and reader.calibration_origin == ""


def test_an_unusable_or_ambiguous_recorded_calibration_is_refused_with_what_to_pass(tmp_path):
    from iphd.calib.simulate import perturbed_calibration

    text = calibration_to_yaml(load_calibration())
    # The same rig on two topics (a bag player's copy beside a namespaced fusion node's): used.
    bag = write_calibration_recording(tmp_path / "same", {
        "/robot1/rig_calibration": [text], "/rig_calibration": [text],
    })
    with BagReader(bag) as reader:
        assert reader.calibration.thermal == load_calibration().thermal
        assert reader.calibration_origin == (
            "recorded on /rig_calibration and /robot1/rig_calibration"
        )
    other = calibration_to_yaml(perturbed_calibration(load_calibration(), clock_offset_s=0.04))
    bag = write_calibration_recording(tmp_path / "two", {
        "/robot1/rig_calibration": [text], "/robot2/rig_calibration": [other],
    })
    with BagReader(bag) as reader, pytest.raises(
        DatasetError, match=r"different rig calibrations on 2 topics \(/robot1/rig_calibration, "
        r"/robot2/rig_calibration; .*clock offset.* differ\).*--calibration"
    ):
        _ = reader.calibration
    bag = write_calibration_recording(tmp_path / "bad", {"rig_calibration": ["version: 1\n"]})
    with BagReader(bag) as reader, pytest.raises(
        DatasetError, match=r"rig_calibration: the recorded calibration is unusable.*--calibration"
    ):
        _ = reader.calibration


def test_existing_path_is_refused(tmp_path):
    (tmp_path / "bag").mkdir()
    with pytest.raises(DatasetError, match="already exists"):
        RigBagWriter(tmp_path / "bag", load_calibration(), DEPTH_INTR)
    with pytest.raises(ConfigError, match="compression"):
        RigBagWriter(tmp_path / "new", load_calibration(), DEPTH_INTR, compression="lz4")


def test_wrong_image_sizes_and_dtypes_are_refused_with_the_expected_size(tmp_path):
    with RigBagWriter(tmp_path / "bag", load_calibration(), DEPTH_INTR) as writer:
        with pytest.raises(FrameError, match="32x24 but the depth intrinsics are 64x48"):
            writer.write_depth(T0, np.ones((24, 32), np.uint16))
        with pytest.raises(FrameError, match="uint16"):
            writer.write_depth(T0, np.ones((48, 64), np.float32))
        with pytest.raises(FrameError, match="160x120"):
            writer.write_thermal(T0, np.ones((122, 160), np.uint16))
        with pytest.raises(FrameError, match="uint8 RGB"):
            writer.write_color(T0, np.ones((48, 64), np.uint8))
        with pytest.raises(DatasetError, match="outside 0..1"):
            writer.write_ground_truth(T0, [PersonTruth(1, (0, 0, 1, 1), 1.5, (0, 0, 1))])
        # The simulator's truth always has a 3D point; only imported 2D annotations lack it.
        nan3 = (float("nan"),) * 3
        with pytest.raises(DatasetError, match="must be finite"):
            writer.write_ground_truth(T0, [PersonTruth(1, (0, 0, 1, 1), 1.0, nan3, nan3)])
        with pytest.raises(DatasetError, match="negative"):
            writer.write_depth(-1, np.ones((48, 64), np.uint16))
        # Colour needs its camera model, so that it can be related to depth.
        with pytest.raises(DatasetError, match="no colour intrinsics"):
            writer.write_color(T0, np.full((4, 5, 3), 9, np.uint8))


def test_colour_is_written_with_its_camera_info_and_transform(tmp_path):
    color = CameraIntrinsics(5, 4, 3.0, 3.0, 2.0, 1.5)
    with RigBagWriter(tmp_path / "bag", load_calibration(), DEPTH_INTR,
                      color_intrinsics=color) as writer:
        with pytest.raises(FrameError, match="the colour intrinsics are 5x4"):
            writer.write_color(T0, np.full((5, 4, 3), 9, np.uint8))
        writer.write_color(T0, np.full((4, 5, 3), 9, np.uint8))
    with BagReader(tmp_path / "bag") as reader:
        assert set(reader.topics) == {COLOR_IMAGE, COLOR_INFO, TF_STATIC, CALIBRATION_TOPIC}
        ((*_, info), (*_, msg)) = list(reader.messages([COLOR_IMAGE, COLOR_INFO]))
        transforms = read_static_transforms(reader)
    assert msg.encoding == "rgb8" and image_to_array(msg).shape == (4, 5, 3)
    assert camera_info_to_intrinsics(info) == color
    assert info.header.frame_id == msg.header.frame_id == COLOR_FRAME
    depth_frame = load_calibration().frames.depth
    # The simulator's colour view is rendered from the depth camera: the identity.
    rotation, translation = points_transform(transforms, depth_frame, COLOR_FRAME)
    np.testing.assert_allclose(rotation, np.eye(3))
    np.testing.assert_allclose(translation, 0.0)


def test_static_transforms_chain_through_a_common_parent():
    # A D435 as its driver describes it: both optical frames hang below camera_link.
    optical = (-0.5, 0.5, -0.5, 0.5)
    transforms = [
        StaticTransform("camera_link", "depth_optical", (0.0, 0.0, 0.0), optical),
        StaticTransform("camera_link", "color_optical", (0.0, -0.015, 0.0), optical),
        StaticTransform("base_link", "camera_link", (0.2, 0.0, 1.0), (0.0, 0.0, 0.0, 1.0)),
    ]
    rotation, translation = points_transform(transforms, "depth_optical", "color_optical")
    # 15 mm to the right of depth (y = -0.015 in camera_link is +x in optical): a point
    # straight ahead of depth lies 15 mm to the left in colour.
    np.testing.assert_allclose(rotation, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(rotation @ [0.0, 0.0, 2.0] + translation, [-0.015, 0.0, 2.0],
                               atol=1e-12)
    back = points_transform(transforms, "color_optical", "depth_optical")
    np.testing.assert_allclose(back[1], [0.015, 0.0, 0.0], atol=1e-12)
    # The camera opened again with new extrinsics: the later transform of the child counts.
    moved = StaticTransform("camera_link", "color_optical", (0.0, -0.02, 0.0), optical)
    again = points_transform([*transforms, moved], "depth_optical", "color_optical")
    np.testing.assert_allclose(again[1], [-0.02, 0.0, 0.0], atol=1e-12)
    up = points_transform(transforms, "depth_optical", "base_link")
    np.testing.assert_allclose(up[0] @ [0.0, 0.0, 2.0] + up[1], [2.2, 0.0, 1.0], atol=1e-12)
    with pytest.raises(CalibrationError, match="no static transform joins 'depth_optical' and "
                       "'thermal'.*base_link, camera_link"):
        points_transform(transforms, "depth_optical", "thermal")


def test_messages_come_in_log_time_order_whatever_the_write_order(tmp_path):
    depth, thermal = _frames(2)
    with RigBagWriter(tmp_path / "bag", load_calibration(), DEPTH_INTR) as writer:
        writer.write_depth(T0 + 200, depth[0])
        writer.write_thermal(T0 + 50, thermal[0], log_ns=T0 + 300)
        writer.write_depth(T0 + 100, depth[1])
    with BagReader(tmp_path / "bag") as reader:
        logs = [m.log_ns for m in reader.raw_messages()]
        assert reader.start_ns == T0 + 100
    assert logs == sorted(logs) and len(logs) == 8  # 6 + /tf_static + rig_calibration


def test_corrupt_message_is_skipped_counted_and_logged(tmp_path, caplog):
    store = typestore()
    good = store.types[IMAGE](
        header=store.types["std_msgs/msg/Header"](
            stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="d"
        ),
        height=1,
        width=2,
        encoding="16UC1",
        is_bigendian=0,
        step=4,
        data=np.arange(4, dtype=np.uint8),
    )
    with Writer(tmp_path / "bag", version=9) as writer:
        conn = writer.add_connection(DEPTH_IMAGE, IMAGE, typestore=store)
        writer.write(conn, 1, store.serialize_cdr(good, IMAGE))
        writer.write(conn, 2, b"\x00\x01\x00\x00garbage that is not an image")
        writer.write(conn, 3, store.serialize_cdr(good, IMAGE))
    with caplog.at_level(logging.WARNING, logger="iphd.data.rosbag"):
        with BagReader(tmp_path / "bag") as reader:
            logs = [log_ns for _, _, log_ns, _ in reader.messages()]
            assert reader.corrupt == {DEPTH_IMAGE: 1}
    assert logs == [1, 3]
    assert "corrupt" in caplog.text and "log time 2" in caplog.text


def test_a_compressed_message_that_does_not_decompress_is_one_corrupt_message(tmp_path, caplog):
    # ros2 bag record --compression-mode message: each message is its own zstd frame. A damaged
    # frame is that message lost, counted as corrupt; a message of another topic logged at the
    # same time is intact and read, and the storage has no gap.
    import sqlite3

    store = typestore()
    header = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="d")
    good = store.types[IMAGE](header=header, height=1, width=2, encoding="16UC1",
                              is_bigendian=0, step=4, data=np.arange(4, dtype=np.uint8))
    writer = Writer(tmp_path / "bag", version=9)
    writer.set_compression(CompressionMode.MESSAGE, CompressionFormat.ZSTD)
    with writer:
        depth = writer.add_connection(DEPTH_IMAGE, IMAGE, typestore=store)
        other = writer.add_connection("/other", IMAGE, typestore=store)
        for log_ns in (1, 2, 3):
            writer.write(depth, log_ns, store.serialize_cdr(good, IMAGE))
            writer.write(other, log_ns, store.serialize_cdr(good, IMAGE))
    (db,) = (tmp_path / "bag").glob("*.db3")
    with sqlite3.connect(db) as sql:
        (frame,) = sql.execute("SELECT data FROM messages WHERE timestamp = 2 AND topic_id = "
                               "(SELECT id FROM topics WHERE name = ?)", (DEPTH_IMAGE,)).fetchone()
        torn = frame[:4] + bytes(len(frame) - 4)  # the zstd magic, then zeros
        sql.execute("UPDATE messages SET data = ? WHERE timestamp = 2 AND topic_id = "
                    "(SELECT id FROM topics WHERE name = ?)", (torn, DEPTH_IMAGE))
    with caplog.at_level(logging.WARNING, logger="iphd.data.rosbag"):
        with BagReader(tmp_path / "bag") as reader:
            read = [(topic, log_ns) for topic, _, log_ns, _ in reader.messages()]
            raw = [(m.topic, m.log_ns) for m in reader.raw_messages()]
            assert reader.corrupt == {DEPTH_IMAGE: 2}  # once per pass
            assert reader.gaps == []
            assert "decompress" in reader.errors[DEPTH_IMAGE]
    assert sorted(read) == sorted([(DEPTH_IMAGE, 1), (DEPTH_IMAGE, 3),
                                   ("/other", 1), ("/other", 2), ("/other", 3)])
    assert raw == [m for m in raw if m != (DEPTH_IMAGE, 2)] and len(raw) == 5
    assert "corrupt" in caplog.text and "log time 2" in caplog.text


def test_missing_or_unreadable_bag_raises_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        BagReader(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 1}\n")
    with pytest.raises(DatasetError, match="metadata.yaml is a bag's metadata, not the bag: "
                       f"pass its folder, {tmp_path / 'bad'}"):
        BagReader(tmp_path / "bad" / "metadata.yaml")
    with pytest.raises(DatasetError, match="not a readable ROS 2 bag.*its metadata.yaml is "
                       "damaged: move .* aside, and the storage files are read without it"):
        BagReader(tmp_path / "bad")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no metadata.yaml and no .db3/.mcap files"):
        BagReader(tmp_path / "empty")
    _write(tmp_path / "bag", n=1)
    with BagReader(tmp_path / "bag") as reader, pytest.raises(DatasetError, match="no topic"):
        list(reader.raw_messages(["colour/image"]))
    with pytest.raises(DatasetError, match="closed"):
        _ = reader.topics


def test_compressed_images_are_read_as_the_images_they_stand_for(compressed_bag, sim_bag):
    bag, topics = compressed_bag
    depth = topics["depth/image_raw"] + "/compressedDepth"
    with BagReader(sim_bag) as reader:
        expected = next(m for t, _y, _l, m in reader.messages(["depth/image_raw"]))
    with BagReader(bag) as reader:
        assert reader.topics[depth].msgtype == COMPRESSED_IMAGE
        topic, msgtype, _log, msg = next(reader.messages([depth]))
        assert (topic, msgtype, msg.encoding) == (depth, IMAGE, "16UC1")
        assert msg.header.stamp == expected.header.stamp
        assert msg.header.frame_id == expected.header.frame_id
        np.testing.assert_array_equal(image_to_array(msg), image_to_array(expected))
        _t, msgtype, _l, msg = next(reader.messages([depth], decompress=False))
        assert msgtype == COMPRESSED_IMAGE and msg.format == "16UC1; compressedDepth png"
    # One that does not decode is skipped, counted and its reason kept.
    store = typestore()
    torn = compress_image(expected, store=store)
    torn.data = torn.data[:20]
    with Writer(tmp := bag.parent / "torn", version=9) as writer:
        conn = writer.add_connection("d/compressedDepth", COMPRESSED_IMAGE, typestore=store)
        writer.write(conn, 1, store.serialize_cdr(torn, COMPRESSED_IMAGE))
        writer.write(conn, 2, store.serialize_cdr(compress_image(expected, store=store),
                                                  COMPRESSED_IMAGE))
    with BagReader(tmp) as reader:
        assert len(list(reader.messages())) == 1
        assert reader.corrupt == {"d/compressedDepth": 1}
        assert reader.errors["d/compressedDepth"].startswith("FrameError: compressed image")


def test_a_window_of_a_long_bag_reads_only_the_transforms_it_needs(tmp_path):
    from iphd.calibration import StaticTransform
    from iphd.data.rosbag import TF_MARGIN_NS, read_transform_buffer

    calibration = load_calibration()
    s = 1_000_000_000
    with RigBagWriter(tmp_path / "bag", calibration, DEPTH_INTR) as writer:
        for k in range(12):  # the robot drives 1 m a second along x
            writer.write_tf(T0 + k * s, [StaticTransform("odom", "camera_link", (float(k), 0, 0),
                                                         (0.0, 0.0, 0.0, 1.0))])
    with BagReader(tmp_path / "bag") as reader:
        start, stop = T0 + 6 * s, T0 + 7 * s
        tf = read_transform_buffer(reader, stop_ns=stop, start_ns=start)
    # Inside the window and within the margin beyond it: interpolated as from the whole /tf;
    # /tf_static (written at the bag's start) is there.
    for t in (start, start + s // 2, stop):
        to_odom = tf("odom", calibration.frames.depth, t)
        assert to_odom.apply((0.0, 0.0, 0.0))[0] == pytest.approx((t - T0) / s)
    # Beyond the margin nothing was read.
    with pytest.raises(LookupError):
        tf("odom", "camera_link", start - TF_MARGIN_NS - s)
    with pytest.raises(LookupError):
        tf("odom", "camera_link", stop + TF_MARGIN_NS + s)


def test_a_robots_odometry_on_tf_is_read_into_a_transform_buffer(tmp_path, caplog):
    from iphd.calibration import StaticTransform
    from iphd.data.rosbag import read_transform_buffer

    calibration = load_calibration()
    s = 1_000_000_000
    # Recorded in a namespace, as a robot's bag of /robot1/tf can be.
    with RigBagWriter(tmp_path / "bag", calibration, DEPTH_INTR,
                      topics={"/tf": "/robot1/tf"}) as writer:
        for k, x in enumerate((0.0, 1.0)):
            writer.write_tf(T0 + k * s, [StaticTransform("odom", "camera_link", (x, 0.0, 0.0),
                                                         (0.0, 0.0, 0.0, 1.0))])
        writer.write_tf(T0 + 2 * s, [StaticTransform("odom", "camera_link", (0.0, 0.0, 0.0),
                                                     (0.0, 0.0, 0.0, 0.0))])  # not a rotation
    with BagReader(tmp_path / "bag") as reader:
        assert reader.topics["/robot1/tf"].count == 3
        with caplog.at_level(logging.WARNING):
            tf = read_transform_buffer(reader)
    assert "skipped a transform on /robot1/tf" in caplog.text
    assert tf.frames == ["camera_link", "depth_optical_frame", "odom", "thermal_optical_frame"]
    # Halfway between the two samples, through /tf_static's camera_link -> optical.
    to_odom = tf("odom", calibration.frames.depth, T0 + s // 2)
    np.testing.assert_allclose(to_odom.apply((0.0, 0.0, 2.0)), (2.5, 0.0, 0.0), atol=1e-9)
    with pytest.raises(LookupError, match="after the last"):
        tf("odom", "camera_link", T0 + 2 * s)
