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
    assert printed[0] == f"wrote {out}: {len(raws)} messages on 5 topics"
    assert printed[1] == f"not copied, or read from a rebuilt copy, of {src}:"
    assert printed[2].startswith(f"  {db3} is damaged (database disk image is malformed")
    assert 0 < len(depth) < 60 and depth == list(range(1000, 1000 + len(depth)))
    assert notes == []  # the copy itself reads whole
    assert main(["copy", "--bag", str(src), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
