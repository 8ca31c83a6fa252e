"""``iphd-eval bag --video``: the tracks and the labelled people over each pair's depth."""

import cv2
import numpy as np
import pytest

from iphd.data.truth import PersonTruth
from iphd.errors import DatasetError
from iphd.eval.cli import main
from iphd.eval.video import TRUTH_COLOUR, VIDEO_NAME, TrackVideo, review_frame
from iphd.tracking.tracker import TrackState
from iphd.viz import track_colour


def _track(track_id, state, box):
    return TrackState(track_id, state, 0.9, np.zeros(3), np.zeros(3), np.asarray(box, float),
                      1.0, 0.0, None)


def test_a_frame_shows_published_tracks_and_the_labelled_people():
    depth = np.full((120, 160), 2000, np.uint16)
    tracks = [_track(2, "confirmed", (10, 20, 60, 110)),
              _track(9, "tentative", (100, 20, 150, 110))]
    people = [PersonTruth(5, (20.0, 30.0, 50.0, 100.0), 1.0, (0.0, 0.0, 2.0))]
    image = review_frame(depth, tracks, people, (160, 120), 3.5)
    assert image.shape == (120, 160, 3)
    assert tuple(image[60, 10]) == track_colour(2)  # the confirmed track's edge
    assert tuple(image[60, 20]) == TRUTH_COLOUR  # the person's, inside it
    assert tuple(image[60, 19]) == tuple(image[60, 21]) == (0, 0, 0)  # outlined
    # Tentative tracks are left out, as the tracker node leaves them out of `tracks`.
    assert not np.all(image == track_colour(9), axis=-1).any()


def test_the_video_has_a_frame_per_picture_and_a_bad_path_is_a_clear_error(tmp_path):
    video = TrackVideo(tmp_path / "out" / "v.mp4")
    for i in range(5):
        video.add(np.full((48, 64, 3), 40 * i, np.uint8))
    video.add(np.zeros((24, 32, 3), np.uint8))  # another size: scaled to the first
    video.close()
    video.close()
    capture = cv2.VideoCapture(str(tmp_path / "out" / "v.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == video.frames == 6
    ok, frame = capture.read()
    assert ok and frame.shape == (48, 64, 3)
    (tmp_path / "file").write_text("")
    with pytest.raises(DatasetError, match="could not write the video"):
        TrackVideo(tmp_path / "file" / "v.mp4").add(np.zeros((8, 8, 3), np.uint8))


def test_the_cli_writes_the_video_beside_the_report(sim_bag, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["bag", "--bag", str(sim_bag), "--out", str(out), "--quiet", "--video",
                 "--reid-checkpoint", "none"]) == 0
    printed = capsys.readouterr().out
    assert f"and {VIDEO_NAME}" in printed
    capture = cv2.VideoCapture(str(out / VIDEO_NAME))
    pairs = int(printed.split(" pairs,")[0].rsplit("(", 1)[1])
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == pairs > 20
    assert capture.get(cv2.CAP_PROP_FRAME_WIDTH) == 848
    assert "tracks.mp4 (" in (out / "report.md").read_text()
    # A recording's tracks have no depth frames drawn here.
    assert main(["bag", "--bag", str(sim_bag), "--out", str(tmp_path / "r"), "--recorded",
                 "--video"]) == 2
    assert "--video draws the offline run's tracks" in capsys.readouterr().err


def _without_truth(src, dst):
    """``src`` as a robot records it: no ground_truth/people."""
    from rosbags.rosbag2 import Writer

    from iphd.data.rosbag import GROUND_TRUTH, BagReader, typestore

    store, connections = typestore(), {}
    writer = Writer(dst, version=Writer.VERSION_LATEST)
    writer.open()
    with BagReader(src) as reader:
        for raw in reader.raw_messages():
            if raw.topic == GROUND_TRUTH:
                continue
            if raw.topic not in connections:
                connections[raw.topic] = writer.add_connection(raw.topic, raw.msgtype,
                                                               typestore=store)
            writer.write(connections[raw.topic], raw.log_ns, raw.data)
    writer.close()
    return dst


def test_any_bag_can_be_watched_with_or_without_ground_truth(sim_bag, tmp_path, capsys):
    bag = _without_truth(sim_bag, tmp_path / "robot")
    counts = {}
    for name, source in (("with", sim_bag), ("without", bag)):
        out = tmp_path / f"{name}.mp4"
        assert main(["video", "--bag", str(source), "--out", str(out), "--quiet",
                     "--reid-checkpoint", "none"]) == 0
        printed = capsys.readouterr().out
        counts[name] = int(cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT))
        assert printed.strip() == f"wrote {out}: {counts[name]} frames"
    assert counts["with"] == counts["without"] > 20  # a frame per pair either way
    assert main(["video", "--bag", str(bag), "--out", str(tmp_path / "v.avi")]) == 2
    assert "must be an .mp4 file" in capsys.readouterr().err
    assert main(["video", "--bag", str(tmp_path / "none"), "--out", str(tmp_path / "v.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_part_without_thermal_frames_says_where_the_next_one_is(sim_bag, tmp_path, capsys):
    from iphd.data.rosbag import THERMAL_IMAGE, BagReader

    with BagReader(sim_bag) as reader:
        start = reader.start_ns
        logged = [m.log_ns - start for m in reader.raw_messages([THERMAL_IMAGE])][3:5]
    # Between two thermal frames: depth frames only.
    begin, length = (logged[0] + 10_000_000) / 1e9, (logged[1] - logged[0] - 20_000_000) / 1e9
    assert main(["video", "--bag", str(sim_bag), "--out", str(tmp_path / "v.mp4"), "--quiet",
                 "--reid-checkpoint", "none", "--start-s", f"{begin}",
                 "--limit-s", f"{length}"]) == 2
    err = capsys.readouterr().err
    assert "no depth/thermal pair was made, so nothing was drawn: the part read (" in err
    assert f"holds no thermal image on {THERMAL_IMAGE} (the next is logged " \
           f"{logged[1] / 1e9:.2f} s after the bag's start" in err
