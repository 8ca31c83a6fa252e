"""``iphd-calibrate`` on small simulated bags: a loadable rig.yaml + overlay, or a clear refusal."""

import cv2
import numpy as np
import pytest

from iphd.calib.cli import main
from iphd.calib.simulate import recovery_errors
from iphd.calibration import load_calibration
from iphd.data.rosbag import RigBagWriter


def _write_bag(path, rec, calibration, thermal=None, topics=None):
    with RigBagWriter(path, calibration, rec.depth_intrinsics, compression="none",
                      topics=topics) as bag:
        for stamp, frame in zip(rec.depth_stamps_ns, rec.depth_mm, strict=True):
            bag.write_depth(int(stamp), frame)
        for stamp, frame in zip(rec.thermal_stamps_ns, thermal or rec.thermal_ck, strict=True):
            bag.write_thermal(int(stamp), frame)
    return path


@pytest.fixture(scope="module")
def bag(tmp_path_factory, capture, nominal):
    return _write_bag(tmp_path_factory.mktemp("calib") / "bag", capture.recording, nominal)


def test_cli_bag_writes_loadable_rig_yaml_and_overlay(tmp_path, bag, truth, capture, capsys):
    out, png = tmp_path / "rig.yaml", tmp_path / "check.png"
    assert main(["--bag", str(bag), "--out", str(out), "--overlay", str(png), "--quiet"]) == 0
    cal = load_calibration(out)
    assert cal.meta["views_used"] >= 8 and "bag" in cal.meta["source"]
    err = recovery_errors(cal, truth, capture.recording.depth_intrinsics)
    assert err.translation_mm < 5.0 and err.clock_offset_ms < 5.0
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] == capture.recording.depth_intrinsics.height
    printed = capsys.readouterr().out
    assert "coverage" in printed and f"wrote {out}" in printed


def test_cli_reads_a_bag_of_other_drivers_topics_named_on_the_command_line(
    tmp_path, bag, truth, capture, nominal, capsys
):
    # As `ros2 bag record` of realsense2_camera and a Lepton driver would name them.
    topics = {"depth/image_raw": "/camera/camera/depth/image_rect_raw",
              "depth/camera_info": "/camera/camera/depth/camera_info",
              "thermal/image_raw": "/lepton/image_raw"}
    other = _write_bag(tmp_path / "other", capture.recording, nominal, topics=topics)
    out = tmp_path / "rig.yaml"
    assert main(["--bag", str(other), "--out", str(out), "--quiet"]) == 2
    assert not out.exists() and "--depth-topic" in capsys.readouterr().err
    assert main(["--bag", str(other), "--out", str(out), "--quiet",
                 "--depth-topic", topics["depth/image_raw"],
                 "--thermal-topic", topics["thermal/image_raw"]]) == 0  # info: beside it
    assert main(["--bag", str(bag), "--out", str(tmp_path / "ours.yaml"), "--quiet"]) == 0
    mine, ours = load_calibration(out), load_calibration(tmp_path / "ours.yaml")
    # The same solve (to the solver's float noise) as from the bag under our names.
    np.testing.assert_allclose(mine.translation_m, ours.translation_m, atol=1e-6)
    assert mine.thermal_clock_offset_s == pytest.approx(ours.thermal_clock_offset_s, abs=1e-6)
    assert recovery_errors(mine, truth, capture.recording.depth_intrinsics).translation_mm < 5.0


def test_the_rig_yaml_takes_the_frames_the_drivers_recorded(
    tmp_path, bag, capture, nominal, capsys
):
    import dataclasses

    from iphd.calibration import RigFrames

    # As realsense2_camera and a Lepton driver stamp and place them.
    drivers = dataclasses.replace(nominal, frames=RigFrames(
        base="camera_depth_frame", depth="camera_depth_optical_frame", thermal="lepton"))
    recorded = _write_bag(tmp_path / "drivers", capture.recording, drivers)
    out = tmp_path / "rig.yaml"
    assert main(["--bag", str(recorded), "--out", str(out), "--quiet"]) == 0
    assert load_calibration(out).frames == RigFrames("", "camera_depth_optical_frame", "lepton")
    printed = capsys.readouterr().out
    assert "frames: base '', depth camera_depth_optical_frame, thermal lepton" in printed
    assert "frames.base: '', as the recording's /tf_static places camera_depth_optical_frame " \
        "under camera_depth_frame" in printed
    # A bag in the initial calibration's own frames keeps them.
    assert main(["--bag", str(bag), "--out", str(out), "--quiet"]) == 0
    assert load_calibration(out).frames == nominal.frames
    assert "frames.base" not in capsys.readouterr().out


def test_cli_flat_thermal_bag_exits_2_and_writes_nothing(tmp_path, capture, nominal, capsys):
    rec = capture.recording
    flat = [np.full_like(f, 29500) for f in rec.thermal_ck[:40]]
    short = type(rec)(rec.depth_intrinsics, rec.depth_stamps_ns[:150], rec.depth_mm[:150],
                      rec.thermal_stamps_ns[:40], flat)
    bag = _write_bag(tmp_path / "flat_bag", short, nominal)
    out = tmp_path / "rig.yaml"
    assert main(["--bag", str(bag), "--out", str(out), "--quiet"]) == 2
    assert not out.exists()
    assert "no thermal contrast" in capsys.readouterr().err


def test_a_solve_the_loaders_would_refuse_is_not_written(tmp_path, bag, solved, monkeypatch,
                                                         capsys):
    # Both streams recorded in one frame: rig.yaml was written with status 0, and every node
    # then refused to load it.
    import dataclasses

    import iphd.calib.cli as cli
    from iphd.calibration import RigFrames

    same = dataclasses.replace(solved.calibration,
                               frames=RigFrames("camera_link", "camera", "camera"))
    monkeypatch.setattr(cli, "calibrate",
                        lambda *a, **k: dataclasses.replace(solved, calibration=same))
    out = tmp_path / "rig.yaml"
    assert main(["--bag", str(bag), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'frames.depth' and 'frames.thermal' are both 'camera'" in err
    assert f"nothing written to {out}" in err and not out.exists()


def test_cli_missing_bag_exits_2(tmp_path, capsys):
    out = tmp_path / "rig.yaml"
    assert main(["--bag", str(tmp_path / "nope"), "--out", str(out), "--quiet"]) == 2
    assert not out.exists()
    assert "does not exist" in capsys.readouterr().err


def test_cli_bag_without_thermal_topic_exits_2(tmp_path, capture, nominal, capsys):
    rec = capture.recording
    path = tmp_path / "depth_only"
    with RigBagWriter(path, nominal, rec.depth_intrinsics, compression="none") as writer:
        for stamp, frame in zip(rec.depth_stamps_ns[:20], rec.depth_mm[:20], strict=True):
            writer.write_depth(int(stamp), frame)
    out = tmp_path / "rig.yaml"
    assert main(["--bag", str(path), "--out", str(out), "--quiet"]) == 2
    assert not out.exists()
    assert "thermal/image_raw" in capsys.readouterr().err


def test_cli_missing_output_folder_exits_2(tmp_path, capsys):
    out = tmp_path / "no" / "rig.yaml"
    assert main(["--sim", "--out", str(out), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    # Every output and option is checked before the capture is read or rendered.
    (tmp_path / "folder").mkdir()
    out = str(tmp_path / "rig.yaml")
    for argv, expected in (
        (["--sim", "--out", str(tmp_path / "folder")], "--out {} is a folder; give the path"),
        (["--sim", "--out", out, "--overlay", str(tmp_path / "folder")],
         "--overlay {} is a folder"),
        (["--sim", "--out", out, "--overlay", str(tmp_path / "o.jpg")], "must be a .png file"),
        (["--bag", str(tmp_path), "--out", out, "--poses", "5", "--seed", "2"],
         "--poses, --seed only apply to --sim; leave them out with --bag"),
        (["--sim", "--out", out, "--spacing-mm", "-5"], "--spacing-mm -5 must be above 0"),
        (["--sim", "--out", out, "--min-views", "0"], "--min-views must be >= 3"),
    ):
        assert main([*argv, "--quiet"]) == 2
        assert expected.format(tmp_path / "folder") in capsys.readouterr().err
    assert not (tmp_path / "rig.yaml").exists()


def test_bag_topics_recorded_only_through_image_transport_are_found(tmp_path):
    from iphd.calib.cli import _find_topic
    from iphd.calib.solve import CalibrationInputError

    names = ["/camera/camera/depth/image_rect_raw/compressed",
             "/camera/camera/depth/image_rect_raw/compressedDepth",
             "/camera/camera/depth/camera_info", "/lepton/image_raw/compressed"]
    topics = {"depth/image_raw": "/camera/camera/depth/image_rect_raw",
              "thermal/image_raw": "/lepton/image_raw"}
    found = [_find_topic(names, s, tmp_path, topics)
             for s in ("depth/image_raw", "depth/camera_info", "thermal/image_raw")]
    assert found == [names[1], names[2], names[3]]
    assert _find_topic(["ns/depth/image_raw/compressedDepth"], "depth/image_raw", tmp_path) \
        == "ns/depth/image_raw/compressedDepth"
    with pytest.raises(CalibrationInputError, match="depth/camera_info"):
        _find_topic(["depth/camera_info/compressed"], "depth/camera_info", tmp_path)


def test_a_simulated_capture_is_saved_as_a_bag_the_tool_then_solves(
    tmp_path, capture, truth, monkeypatch, capsys
):
    import iphd.calib.simulate as simulate

    monkeypatch.setattr(simulate, "simulate_capture", lambda *a, **k: capture)  # rendered once
    saved = tmp_path / "calib_bag"
    assert main(["--sim", "--save-bag", str(saved), "--out", str(tmp_path / "sim.yaml"),
                 "--quiet"]) == 0
    assert main(["--bag", str(saved), "--out", str(tmp_path / "rig.yaml"), "--quiet"]) == 0
    err = recovery_errors(load_calibration(tmp_path / "rig.yaml"), truth,
                          capture.recording.depth_intrinsics)
    assert err.translation_mm < 5.0 and err.clock_offset_ms < 5.0
    capsys.readouterr()
    assert main(["--sim", "--save-bag", str(saved), "--out", str(tmp_path / "x.yaml")]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["--bag", str(saved), "--save-bag", str(tmp_path / "b"), "--out",
                 str(tmp_path / "x.yaml")]) == 2
    assert "goes with --sim" in capsys.readouterr().err


@pytest.mark.parametrize("failing", ["check.png", "rig.yaml"])
def test_a_write_that_fails_leaves_the_rig_yaml_in_use_as_it_was(
    tmp_path, bag, monkeypatch, capsys, failing
):
    import errno

    import iphd.data.output as output

    out, png = tmp_path / "rig.yaml", tmp_path / "check.png"
    out.write_text("# the rig.yaml in use\n")
    real = output.os.replace

    def full_disk(src, dst):
        if str(dst).endswith(failing):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(output.os, "replace", full_disk)
    assert main(["--bag", str(bag), "--out", str(out), "--overlay", str(png), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / failing}: No space left on device" in err
    assert f"nothing written to {out}" in err
    assert out.read_text() == "# the rig.yaml in use\n"
    # The picture goes first: when it fails, neither is written; no half file is left.
    assert png.exists() == (failing == "rig.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["rig.yaml"] + (["check.png"] if failing == "rig.yaml" else [])
    )
