import cv2
import pytest

from iphd.errors import ConfigError
from iphd.ros.runner import main, run_graph


@pytest.mark.slow
def test_sim_live_graph_pairs_and_registers_in_one_process(tmp_path):
    result = run_graph(
        "sim_live",
        4.0,
        snapshot=tmp_path / "fusion.png",
        overrides={"sim_source": {"depth_profile": "depth_424x240"}},
    )
    stats = result.stats
    assert stats["depth_frames"] > 60 and stats["thermal_frames"] > 15
    assert stats["published"] >= stats["pairs"] - 1 > 10
    assert stats["thermal_drop_fraction"] < 0.1
    assert not any(k.startswith("errors_") for k in stats), stats
    image = cv2.imread(str(result.snapshot))
    assert image is not None and image.shape[0] == 240


@pytest.mark.slow
def test_sim_source_generates_the_demo_bag_once_then_replays_it(monkeypatch, tmp_path):
    import iphd.sim.demo as demo

    monkeypatch.setenv("IPHD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "DEMO_DURATION_S", 3.0)
    monkeypatch.setattr(demo, "DEMO_PROFILE", "aligned_424x240")
    result = run_graph("sim", 8.0, snapshot=tmp_path / "fusion.png")
    bag = demo.demo_bag_path()
    assert (bag / "metadata.yaml").is_file()
    stats = result.stats
    assert stats["depth_frames"] >= 60 and stats["published"] >= 10, stats
    assert not any(k.startswith("errors_") for k in stats), stats
    made = (bag / "metadata.yaml").stat().st_mtime_ns
    assert demo.ensure_demo_bag() == bag  # reused, not regenerated
    assert (bag / "metadata.yaml").stat().st_mtime_ns == made


def test_runner_refuses_an_unknown_source_with_the_choices(capsys):
    assert main(["--source", "camera", "--duration", "1"]) == 2
    assert "choose one of live, sim" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        run_graph("camera", 1.0)


def _write_rig_bag(path, seconds: float = 1.5) -> int:
    """A small bag like the rig records: 128x96 depth at 30 Hz, 160x120 thermal near 7.5 Hz."""
    import numpy as np

    from iphd.calibration import load_calibration
    from iphd.data.rosbag import RigBagWriter
    from iphd.sensors.frames import CameraIntrinsics

    fx = 0.5 * 128 / np.tan(np.deg2rad(87.0 / 2))
    intr = CameraIntrinsics(128, 96, fx, fx, 63.5, 47.5)
    depth_mm = np.full((96, 128), 3000, np.uint16)
    depth_mm[30:90, 50:70] = 2000  # someone in front of the wall
    thermal_ck = np.full((120, 160), 29500, np.uint16)
    thermal_ck[40:110, 70:90] = 30600
    t0 = 1_700_000_000_000_000_000
    frames = int(seconds * 30)
    with RigBagWriter(path, load_calibration(), intr) as writer:
        for i in range(frames):
            stamp = t0 + i * 33_333_333
            writer.write_depth(stamp, depth_mm)
            if i % 4 == 0:
                writer.write_thermal(stamp + 3_000_000, thermal_ck)
    return frames


def test_bag_graph_plays_the_bag_registers_thermal_and_ends_with_the_bag(tmp_path):
    frames = _write_rig_bag(tmp_path / "bag")
    result = run_graph("bag", 30.0, bag=str(tmp_path / "bag"), snapshot=tmp_path / "fusion.png")
    assert result.duration_s < 10.0  # ended with the bag, not at the 30 s limit
    assert result.player_stats["finished"] and result.player_stats["published"] > 2 * frames
    stats = result.stats
    assert stats["depth_frames"] == frames and stats["thermal_frames"] == (frames + 3) // 4
    # The first depth frame may beat its camera info; the last thermal frame waits for a later
    # depth frame that never comes: all the others are registered.
    assert stats["published"] >= stats["thermal_frames"] - 2 > 8
    assert not any(k.startswith("errors_") for k in stats), stats
    assert result.nodes["fusion"].get_parameter("use_sim_time").value is True
    holes_before_fix, _ = result.nodes["fusion"].pipeline.last_zero_fraction
    assert holes_before_fix < 0.8  # the thermal view covers the middle of the depth view
    assert cv2.imread(str(result.snapshot)) is not None


def test_runner_bag_source_needs_a_bag_and_a_bag_needs_the_bag_source(tmp_path, capsys):
    assert main(["--source", "bag", "--duration", "1"]) == 2
    assert "pass bag:=" in capsys.readouterr().err
    assert main(["--source", "sim", "--bag", str(tmp_path), "--duration", "1"]) == 2
    assert "only played with source:=bag" in capsys.readouterr().err
    assert main(["--bag", str(tmp_path / "missing"), "--duration", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
