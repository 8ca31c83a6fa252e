import math

import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Point
from iphd_msgs.msg import (
    PersonDetection,
    PersonDetectionArray,
    PersonTrack,
    PersonTrackArray,
    TrackQueryResult,
)
from iphd_msgs.srv import QueryTracks
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import ReliabilityPolicy
from ros_status import latest_status
from sensor_msgs.msg import CameraInfo, Image
from visualization_msgs.msg import Marker, MarkerArray

from iphd.reid.extractor import CropNormalizeConfig, save_embedder
from iphd.reid.model import Embedder, EmbedderConfig
from iphd.ros import common, qos, tracker_node
from iphd.ros.conversions import (
    array_to_image,
    header,
    intrinsics_to_camera_info,
    stamp_to_ns,
)
from iphd.ros.frames import RigidTransform
from iphd.ros.runner import main as run_main
from iphd.ros.tracker_node import TrackerNode
from iphd.sensors.frames import CameraIntrinsics

T0 = 1_700_000_000_000_000_000
PERIOD = 100_000_000  # detections at 10 Hz
FRAME = "depth_optical_frame"
WIDTH, HEIGHT, F = 212, 120, 110.0
SPEED_MPS = 1.0
DEPTH_M = 3.0


def _embedder(modality):
    torch.manual_seed(0 if modality == "depth" else 1)
    model = Embedder(
        EmbedderConfig(
            backbone_depth=18, backbone_width=8, embedding_dim=16, input_size=(32, 16),
            modality=modality,
        )
    )
    model.train()(torch.randn(4, 3, 32, 16))  # non-trivial BNNeck statistics
    return model.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("reid")
    paths = {
        m: str(save_embedder(root / f"{m}.pt", _embedder(m), CropNormalizeConfig()))
        for m in ("depth", "rgb")
    }
    metric = CropNormalizeConfig(depth_crop="metric", depth_reference="person")
    paths["metric"] = str(save_embedder(root / "metric.pt", _embedder("depth"), metric))
    return paths


def _person(k, x0=-1.0):
    """Box (depth pixels) and position (optical frame) of a person walking along x at frame k."""
    x = x0 + SPEED_MPS * k * PERIOD / 1e9
    u = WIDTH / 2 + F * x / DEPTH_M
    half_w, half_h = F * 0.25 / DEPTH_M, F * 0.85 / DEPTH_M
    box = (u - half_w, HEIGHT / 2 - half_h, u + half_w, HEIGHT / 2 + half_h)
    return box, (x, 0.0, DEPTH_M)


def _detections(stamp_ns, people, width=WIDTH, height=HEIGHT):
    msg = PersonDetectionArray(header=header(stamp_ns, FRAME))
    msg.image_width, msg.image_height = width, height
    for box, xyz, score in people:
        det = PersonDetection(score=score)
        det.x1, det.y1, det.x2, det.y2 = (float(v) for v in box)
        det.position = Point(x=xyz[0], y=xyz[1], z=xyz[2])
        det.temperature_k = 306.0
        msg.detections.append(det)
    return msg


def _depth(stamp_ns, boxes):
    depth = np.full((HEIGHT, WIDTH), 6000, np.uint16)
    for x1, y1, x2, y2 in boxes:
        depth[int(y1) : int(math.ceil(y2)), int(x1) : int(math.ceil(x2))] = int(DEPTH_M * 1000)
    return array_to_image(depth, "16UC1", stamp_ns, FRAME)


class Feeder(Node):
    """Publishes detections, depth and queries like the detector; records the tracker."""

    def __init__(self, context):
        super().__init__("feeder", context=context)
        self.detections = self.create_publisher(
            PersonDetectionArray, "detections", qos.RESULT_PUB
        )
        self.depth = self.create_publisher(Image, "depth/image_raw", qos.SENSOR_PUB)
        self.depth_info = self.create_publisher(CameraInfo, "depth/camera_info", qos.SENSOR_PUB)
        self.query = self.create_publisher(Image, "query/image", 10)
        self.tracks: list[PersonTrackArray] = []
        self.markers: list[MarkerArray] = []
        self.results: list[TrackQueryResult] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.create_subscription(PersonTrackArray, "tracks", self.tracks.append, 50)
        self.create_subscription(MarkerArray, "markers", self.markers.append, 50)
        self.create_subscription(TrackQueryResult, "query/result", self.results.append, 10)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 50)

    def latest_status(self):
        return latest_status(self.diagnostics, "tracker")


@pytest.fixture
def graph(executor, ros_context, spin_until, checkpoints):
    def make(**params):
        values = {
            "reid_checkpoint": checkpoints["depth"], "query_checkpoint": checkpoints["rgb"],
            "device": "cpu", "diagnostics_period": 0.1, **params,
        }
        node = TrackerNode(
            context=ros_context,
            parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
        )
        feeder = Feeder(ros_context)
        executor.add_node(node)
        executor.add_node(feeder)
        assert spin_until(
            executor,
            lambda: feeder.detections.get_subscription_count() > 0
            and (node.reid is None or feeder.depth.get_subscription_count() > 0)
            and feeder.query.get_subscription_count() > 0
            and node.count_subscribers("tracks") > 0
            and node.count_subscribers("markers") > 0,
        )
        return node, feeder

    return make


def _walk(executor, spin_until, feeder, frames, start=0, t0=T0, depth=True):
    """Publish ``frames`` frames of the walking person; wait for the track array of each."""
    for k in range(start, start + frames):
        stamp = t0 + k * PERIOD
        box, xyz = _person(k)
        if depth:
            feeder.depth.publish(_depth(stamp, [box]))
        feeder.detections.publish(_detections(stamp, [(box, xyz, 0.9)]))
        assert spin_until(
            executor,
            lambda s=stamp: bool(feeder.tracks)
            and stamp_to_ns(feeder.tracks[-1].header.stamp) == s,
        )


def test_a_walking_person_gets_one_confirmed_track_with_a_stable_id_and_velocity(
    graph, executor, spin_until
):
    node, feeder = graph()
    _walk(executor, spin_until, feeder, 20)
    # Tentative tracks are not published: nothing before the third hit.
    assert [len(m.tracks) for m in feeder.tracks[:2]] == [0, 0]
    confirmed = [m.tracks for m in feeder.tracks[2:]]
    assert all(len(t) == 1 and t[0].state == PersonTrack.STATE_CONFIRMED for t in confirmed)
    assert len({t[0].id for t in confirmed}) == 1
    last = feeder.tracks[-1]
    assert stamp_to_ns(last.header.stamp) == T0 + 19 * PERIOD and last.header.frame_id == FRAME
    track = last.tracks[0]
    assert track.velocity.x == pytest.approx(SPEED_MPS, abs=0.25)
    assert abs(track.velocity.y) < 1e-6 and abs(track.velocity.z) < 0.25
    assert track.position.x == pytest.approx(_person(19)[1][0], abs=0.2)
    assert track.x2 > track.x1 > 0 and list(track.embedding) == []
    stats = node.stats()
    # Every frame was paired with its depth and embedded.
    assert stats["frames_without_depth"] == 0 and "embedding_ms_p50" in stats
    assert node.tracker.tracks[0].embedding is not None


def test_the_tracks_image_draws_the_confirmed_track_in_its_ids_colour_over_its_depth(
    graph, executor, spin_until
):
    from iphd.viz import track_colour

    node, feeder = graph()
    images = []
    _walk(executor, spin_until, feeder, 4)
    assert node._image_pub.get_subscription_count() == 0  # nothing drawn without a subscriber
    feeder.create_subscription(Image, "debug/tracks_image", images.append, 10)
    assert spin_until(executor, lambda: node._image_pub.get_subscription_count() == 1)
    # (Its first image may go out before this subscription has matched the publisher back.)
    _walk(executor, spin_until, feeder, 3, start=4)
    assert spin_until(executor, lambda: len(images) >= 1)
    msg = images[-1]
    stamp = stamp_to_ns(msg.header.stamp)
    assert stamp in (T0 + k * PERIOD for k in (4, 5, 6)) and msg.header.frame_id == FRAME
    assert (msg.encoding, msg.width, msg.height) == ("bgr8", WIDTH, HEIGHT)
    picture = np.frombuffer(bytes(msg.data), np.uint8).reshape(HEIGHT, WIDTH, 3)
    (track,) = next(m for m in feeder.tracks if stamp_to_ns(m.header.stamp) == stamp).tracks
    x1, y1 = int(round(track.x1)), int(round(track.y1))
    assert tuple(picture[(y1 + int(round(track.y2))) // 2, x1]) == track_colour(track.id)
    # Away from the box: the depth frame in grey (6 m of the picture's 8 m).
    assert tuple(picture[2, 2]) == (191, 191, 191)


def test_markers_clear_then_draw_an_upright_cylinder_an_id_and_a_velocity_arrow(
    graph, executor, spin_until
):
    node, feeder = graph(publish_embeddings=True)
    _walk(executor, spin_until, feeder, 8)
    assert len(feeder.tracks[-1].tracks[0].embedding) == 16
    markers = feeder.markers[-1].markers
    assert markers[0].action == Marker.DELETEALL
    by_ns = {m.ns: m for m in markers[1:]}
    assert set(by_ns) == {"tracks", "ids", "velocity"}
    assert all(m.header.frame_id == FRAME for m in markers)
    # They expire: RViz must not show people for good once the tracker stops publishing.
    assert all(m.lifetime.sec + m.lifetime.nanosec * 1e-9 == 2.0 for m in markers[1:])
    body = by_ns["tracks"]
    assert body.type == Marker.CYLINDER and body.id == feeder.tracks[-1].tracks[0].id
    assert (body.scale.x, body.scale.z) == pytest.approx((0.5, 1.7))
    q = body.pose.orientation
    axis = _rotate((q.x, q.y, q.z, q.w), (0.0, 0.0, 1.0))
    assert axis == pytest.approx((0.0, -1.0, 0.0), abs=1e-6)  # optical frame: up is -y
    assert by_ns["ids"].type == Marker.TEXT_VIEW_FACING and by_ns["ids"].text == f"id {body.id}"
    assert by_ns["ids"].pose.position.y < body.pose.position.y  # above the head
    # The id's colour is the one debug/tracks_image draws it in.
    from iphd.viz import track_colour

    colour = np.array((body.color.b, body.color.g, body.color.r)) * 255  # float32 in the msg
    assert np.abs(colour - track_colour(body.id)).max() <= 0.5 + 1e-3
    arrow = by_ns["velocity"]
    assert arrow.type == Marker.ARROW and len(arrow.points) == 2
    assert arrow.points[1].x - arrow.points[0].x == pytest.approx(SPEED_MPS, abs=0.3)
    # The first frames (tentative track only) clear the display and draw nothing.
    assert [len(m.markers) for m in feeder.markers[:2]] == [1, 1]


def _rotate(q, v):
    x, y, z, w = q
    u = np.array([x, y, z])
    v = np.asarray(v)
    return tuple(2 * (u @ v) * u + (w * w - u @ u) * v + 2 * w * np.cross(u, v))


def test_malformed_detections_and_depth_are_dropped_and_tracking_goes_on(
    graph, executor, spin_until
):
    node, feeder = graph()
    _walk(executor, spin_until, feeder, 3)
    stamp = T0 + 3 * PERIOD
    box, xyz = _person(3)
    feeder.depth.publish(_depth(stamp, [box]))
    bad = [
        ((float("nan"), 10.0, 20.0, 30.0), xyz, 0.9),
        ((50.0, 10.0, 40.0, 30.0), xyz, 0.9),
        (box, xyz, 0.9),
    ]
    feeder.detections.publish(_detections(stamp, bad))
    assert spin_until(executor, lambda: len(feeder.tracks) == 4)
    assert len(feeder.tracks[-1].tracks) == 1  # the good detection still updated the track
    assert node.stats()["errors_bad_detection"] == 1
    # No image size: the whole message is dropped.
    feeder.detections.publish(_detections(stamp + PERIOD, [(box, xyz, 0.9)], width=0))
    assert spin_until(executor, lambda: node.stats().get("errors_bad_detections", 0) == 1)
    # A depth image in a colour encoding is dropped; its detections go on without appearance.
    rgb = array_to_image(np.zeros((HEIGHT, WIDTH, 3), np.uint8), "rgb8", stamp + PERIOD, FRAME)
    feeder.depth.publish(rgb)
    assert spin_until(executor, lambda: node.stats().get("errors_bad_depth", 0) == 1)
    _walk(executor, spin_until, feeder, 3, start=5)
    assert len(feeder.tracks) == 7 and len({m.tracks[0].id for m in feeder.tracks[2:]}) == 1
    assert node._status(node.stats())[0] == "WARN"
    node._warn_drop.last_drop_s -= 31.0  # 30 s without a bad message: OK again
    assert node._status(node.stats()) == ("OK", "tracking")


def test_metric_crops_wait_for_the_depth_camera_info_of_the_right_size(
    graph, executor, spin_until, checkpoints
):
    node, feeder = graph(reid_checkpoint=checkpoints["metric"], publish_embeddings=True)
    assert node.reid.normalize.depth_crop == "metric"
    _walk(executor, spin_until, feeder, 3)
    # Without the focal lengths no metric crop can be cut: tracked by position, warned.
    assert node.stats()["errors_no_depth_info"] == 3
    assert node.tracker.tracks[0].embedding is None
    intrinsics = CameraIntrinsics(WIDTH, HEIGHT, F, F, WIDTH / 2, HEIGHT / 2)
    wrong = CameraIntrinsics(2 * WIDTH, 2 * HEIGHT, F, F, WIDTH, HEIGHT)
    feeder.depth_info.publish(intrinsics_to_camera_info(wrong, T0, FRAME))
    assert spin_until(executor, lambda: node._depth_info is not None)
    _walk(executor, spin_until, feeder, 1, start=3)
    assert node.stats()["errors_no_depth_info"] == 4  # another size: still no crops
    feeder.depth_info.publish(intrinsics_to_camera_info(intrinsics, T0, FRAME))
    assert spin_until(executor, lambda: node._depth_info[0] == WIDTH)
    _walk(executor, spin_until, feeder, 2, start=4)
    assert node.stats()["errors_no_depth_info"] == 4
    assert len(feeder.tracks[-1].tracks[0].embedding) == 16
    # A camera info that describes no camera is dropped; the one it had is kept.
    feeder.depth_info.publish(CameraInfo(width=WIDTH, height=HEIGHT))
    assert spin_until(executor, lambda: node.stats().get("errors_bad_depth_info", 0) == 1)
    assert node._depth_info[0] == WIDTH


def test_detections_without_their_depth_frame_are_still_tracked(graph, executor, spin_until):
    node, feeder = graph()
    _walk(executor, spin_until, feeder, 3)
    # Frame 3's depth is lost: it goes out without appearance when frame 4 pairs.
    box, xyz = _person(3)
    feeder.detections.publish(_detections(T0 + 3 * PERIOD, [(box, xyz, 0.9)]))
    _walk(executor, spin_until, feeder, 2, start=4)
    assert [stamp_to_ns(m.header.stamp) for m in feeder.tracks] == [
        T0 + k * PERIOD for k in range(6)
    ]
    assert node.stats()["frames_without_depth"] == 1


def test_without_any_depth_stream_detections_are_tracked_at_once(graph, executor, spin_until):
    node, feeder = graph()
    _walk(executor, spin_until, feeder, 4, depth=False)
    assert len(feeder.tracks[-1].tracks) == 1
    assert node.stats()["frames_without_depth"] == 4


def test_depth_that_never_carries_the_detections_stamps_is_a_warning_that_says_why(
    graph, executor, spin_until, spin_for
):
    # The tracker's depth comes through a relay that re-stamps it (1 ms later): detections
    # are tracked once given up on, without appearance, and the diagnostics say why.
    node, feeder = graph()
    for k in range(40):
        stamp = T0 + k * PERIOD
        box, xyz = _person(k)
        feeder.depth.publish(_depth(stamp + 1_000_000, [box]))
        feeder.detections.publish(_detections(stamp, [(box, xyz, 0.9)]))
        spin_for(executor, 0.01)
    assert spin_until(executor, lambda: node.stats()["frames_without_depth_run"] >= 9)
    assert spin_until(executor, lambda: feeder.latest_status()[0] is not None
                      and feeder.latest_status()[0].level == DiagnosticStatus.WARN)
    message = feeder.latest_status()[0].message
    assert message.startswith("the last ") and (
        "detection arrays found no depth/image_raw frame with their stamp: tracking by "
        "position only, without appearance") in message and "remappings" in message
    assert feeder.tracks  # tracked all the same


def test_no_depth_stream_at_all_is_a_warning_too(graph, executor, spin_until):
    node, feeder = graph()
    _walk(executor, spin_until, feeder, 10, depth=False)
    assert spin_until(executor, lambda: feeder.latest_status()[0] is not None
                      and "no depth/image_raw for over 1 s" in feeder.latest_status()[0].message)
    assert feeder.latest_status()[0].level == DiagnosticStatus.WARN


def test_a_backward_stamp_resets_the_tracks_and_tracking_continues(graph, executor, spin_until):
    node, feeder = graph()
    _walk(executor, spin_until, feeder, 4)
    first_id = feeder.tracks[-1].tracks[0].id
    _walk(executor, spin_until, feeder, 4, t0=T0 - 10_000_000_000)  # a bag loops
    assert node.stats()["clock_jumps"] == 1
    after = feeder.tracks[4:]
    assert [stamp_to_ns(m.header.stamp) for m in after] == [
        T0 - 10_000_000_000 + k * PERIOD for k in range(4)
    ]
    # Fresh tracks after the reset: tentative at first, then a new confirmed id.
    assert [len(m.tracks) for m in after[:2]] == [0, 0]
    assert after[-1].tracks[0].id > first_id
    assert after[-1].tracks[0].state == PersonTrack.STATE_CONFIRMED


def test_a_repeated_or_slightly_older_detections_message_is_dropped_not_a_reset(
    graph, executor, spin_until
):
    node, feeder = graph()
    _walk(executor, spin_until, feeder, 5, depth=False)  # no depth: nothing pairs them
    track_id = feeder.tracks[-1].tracks[0].id
    box, xyz = _person(4)
    for stamp in (T0 + 4 * PERIOD, T0 + 4 * PERIOD - 20_000_000):  # again, then 20 ms older
        feeder.detections.publish(_detections(stamp, [(box, xyz, 0.9)]))
    assert spin_until(executor, lambda: node.stats().get("errors_stale_detections") == 2)
    _walk(executor, spin_until, feeder, 3, start=5, depth=False)
    assert node.stats()["clock_jumps"] == 0
    assert feeder.tracks[-1].tracks[0].id == track_id  # the person kept their track


def test_an_rgb_query_returns_the_track(graph, executor, spin_until):
    node, feeder = graph()
    _walk(executor, spin_until, feeder, 5)
    track_id = feeder.tracks[-1].tracks[0].id
    crop = np.random.default_rng(0).integers(0, 256, (64, 32, 3)).astype(np.uint8)
    feeder.query.publish(array_to_image(crop, "rgb8", T0 + 123, "color_optical_frame"))
    assert spin_until(executor, lambda: len(feeder.results) == 1)
    result = feeder.results[0]
    assert stamp_to_ns(result.header.stamp) == T0 + 123 and result.header.frame_id == FRAME
    assert list(result.track_ids) == [track_id]
    assert len(result.distances) == 1 and 0.0 <= result.distances[0] <= 2.0


def _ask(executor, spin_until, feeder, image, top_k=0):
    """Call the tracker's query/tracks service; return its response."""
    client = feeder.create_client(QueryTracks, "query/tracks")
    assert spin_until(executor, client.service_is_ready)
    future = client.call_async(QueryTracks.Request(image=image, top_k=top_k))
    assert spin_until(executor, future.done)
    return future.result()


def test_the_query_service_answers_as_the_topic_does(graph, executor, spin_until):
    node, feeder = graph()
    # Two people walking side by side, 1.5 m apart.
    for k in range(5):
        stamp = T0 + k * PERIOD
        people = [_person(k), _person(k, x0=0.5)]
        feeder.depth.publish(_depth(stamp, [box for box, _ in people]))
        feeder.detections.publish(
            _detections(stamp, [(box, xyz, 0.9) for box, xyz in people])
        )
        assert spin_until(
            executor,
            lambda s=stamp: bool(feeder.tracks)
            and stamp_to_ns(feeder.tracks[-1].header.stamp) == s,
        )
    ids = {t.id for t in feeder.tracks[-1].tracks}
    assert len(ids) == 2
    crop = np.random.default_rng(0).integers(0, 256, (64, 32, 3)).astype(np.uint8)
    image = array_to_image(crop, "rgb8", T0 + 123, "color_optical_frame")
    feeder.query.publish(image)
    assert spin_until(executor, lambda: len(feeder.results) == 1)
    response = _ask(executor, spin_until, feeder, image)
    assert response.success and response.message == ""
    answer = response.result
    assert stamp_to_ns(answer.header.stamp) == T0 + 123 and answer.header.frame_id == FRAME
    assert list(answer.track_ids) == list(feeder.results[0].track_ids)
    assert set(answer.track_ids) == ids
    assert list(answer.distances) == pytest.approx(list(feeder.results[0].distances), abs=1e-6)
    # top_k asks for fewer than the node's query_top_k.
    nearest = _ask(executor, spin_until, feeder, image, top_k=1).result
    assert list(nearest.track_ids) == list(answer.track_ids[:1])
    # A refused image: success false and why, no answer; the node goes on.
    bad = array_to_image(crop[..., 0].copy(), "mono8", T0, "color_optical_frame")
    response = _ask(executor, spin_until, feeder, bad)
    assert not response.success and "mono8" in response.message
    assert list(response.result.track_ids) == []
    assert _ask(executor, spin_until, feeder, image).success
    # The caller was told: counted, but not an input error that leaves the node at WARN.
    stats = node.stats()
    assert stats["queries_refused"] == 1 and "errors_bad_query" not in stats
    assert node._status(stats)[0] == "OK"


def test_a_query_before_the_first_detections_names_the_depth_frame(
    graph, executor, spin_until
):
    node, feeder = graph()
    crop = np.zeros((64, 32, 3), np.uint8)
    image = array_to_image(crop, "rgb8", T0, "color_optical_frame")
    # Depth came, detections not yet: no tracks, in the frame they will be in (was '').
    feeder.depth.publish(_depth(T0, []))
    assert spin_until(executor, lambda: node._depth_rate.count == 1)
    response = _ask(executor, spin_until, feeder, image)
    assert response.success and list(response.result.track_ids) == []
    assert response.result.header.frame_id == FRAME


def test_without_a_depth_embedder_a_query_says_tracks_have_no_appearance(
    graph, executor, spin_until
):
    node, feeder = graph(reid_checkpoint="none")  # the shipped RGB network still loads
    assert node.reid is None and node.query_extractor is not None
    _walk(executor, spin_until, feeder, 4, depth=False)
    crop = np.zeros((64, 32, 3), np.uint8)
    response = _ask(
        executor, spin_until, feeder, array_to_image(crop, "rgb8", T0, "color_optical_frame")
    )
    assert not response.success and "reid_checkpoint" in response.message


def test_without_an_rgb_embedder_the_query_service_says_which_parameter_to_set(
    graph, executor, spin_until
):
    node, feeder = graph(query_checkpoint="none")
    crop = np.zeros((64, 32, 3), np.uint8)
    response = _ask(
        executor, spin_until, feeder, array_to_image(crop, "rgb8", T0, "color_optical_frame")
    )
    assert not response.success and "query_checkpoint" in response.message


def test_an_own_depth_embedder_beside_the_shipped_rgb_one_is_flagged_at_start(
    graph, executor, spin_until_logged
):
    graph(query_checkpoint="")  # the shipped RGB network, distilled from another depth model
    err = spin_until_logged(executor, "distilled from the shipped depth embedder")
    assert "query_checkpoint" in err


def test_without_appearance_queries_are_ignored_and_diagnostics_warn(
    graph, executor, spin_until, spin_for
):
    node, feeder = graph(reid_checkpoint="none", query_checkpoint="none")
    assert node.reid is None and node.query_extractor is None
    _walk(executor, spin_until, feeder, 4, depth=False)
    assert len(feeder.tracks[-1].tracks) == 1
    crop = np.zeros((64, 32, 3), np.uint8)
    feeder.query.publish(array_to_image(crop, "rgb8", T0, "color_optical_frame"))
    assert spin_until(executor, lambda: node.stats()["queries"] == 1)
    spin_for(executor, 0.2)
    assert feeder.results == []
    assert spin_until(
        executor,
        lambda: feeder.latest_status()[0] is not None
        and feeder.latest_status()[0].level == DiagnosticStatus.WARN
        and "reid_checkpoint" in feeder.latest_status()[0].message,
    )


def test_without_tf2_another_tracking_frame_keeps_the_detections_frame_and_says_why(
    graph, executor, spin_until, capfd, monkeypatch
):
    monkeypatch.setattr(tracker_node, "tf_lookup", lambda node, timeout_s: None)  # no tf2_ros
    node, feeder = graph(tracking_frame="odom")
    _walk(executor, spin_until, feeder, 3)
    assert {m.header.frame_id for m in feeder.tracks} == {FRAME}
    err = capfd.readouterr().err
    assert "tracking_frame 'odom'" in err and "tf2_ros is not installed" in err


def test_without_tf2_an_up_axis_other_than_the_optical_frames_is_refused(
    graph, executor, spin_until, capfd, monkeypatch
):
    # Without a transform tracks stay in the detections' optical frame, where up is -y: the
    # tracker does not start with up_axis z, says why, and the node keeps running.
    monkeypatch.setattr(tracker_node, "tf_lookup", lambda node, timeout_s: None)
    node, feeder = graph(tracking_frame="odom", up_axis="z")
    assert node.tracker is None
    assert "up_axis must match the frame the tracks are in: -y" in capfd.readouterr().err
    assert spin_until(
        executor,
        lambda: feeder.latest_status()[0] is not None
        and feeder.latest_status()[0].level == DiagnosticStatus.ERROR
        and "up_axis" in feeder.latest_status()[0].message,
    )


# The camera looks along odom's x from 1 m up, the robot 2 m along x: optical (x right, y down,
# z forward) -> odom (x forward, y left, z up).
TO_ODOM = RigidTransform(
    np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), np.array([2.0, 0.0, 1.0])
)


class FakeTf:
    """Stands in for tf2: the transform above, or no transform at the stamps in ``missing``."""

    def __init__(self, missing=()):
        self.missing = set(missing)
        self.asked = []

    def __call__(self, target, source, stamp_ns):
        self.asked.append((target, source, stamp_ns))
        if stamp_ns in self.missing:
            raise LookupError("extrapolation into the future")
        return TO_ODOM

    def reset(self, stamp_ns):
        self.asked.append(("reset", stamp_ns))


def test_with_tf_people_are_tracked_and_published_in_the_tracking_frame(
    graph, executor, spin_until, monkeypatch
):
    tf = FakeTf()
    monkeypatch.setattr(tracker_node, "tf_lookup", lambda node, timeout_s: tf)
    node, feeder = graph(tracking_frame="odom", up_axis="z")
    _walk(executor, spin_until, feeder, 12)
    assert tf.asked[0] == ("odom", FRAME, T0)
    last = feeder.tracks[-1]
    assert last.header.frame_id == "odom"
    assert all(m.header.frame_id == "odom" for m in feeder.markers[-1].markers)
    track = last.tracks[0]
    # Walking +x in the optical frame at 3 m is walking -y in odom, 5 m ahead, 1 m up.
    x, _, z = _person(11)[1]
    assert (track.position.x, track.position.y) == pytest.approx((2.0 + z, -x), abs=0.2)
    assert track.position.z == pytest.approx(1.0, abs=1e-6)
    assert track.velocity.y == pytest.approx(-SPEED_MPS, abs=0.25)
    assert abs(track.velocity.x) < 0.25 and track.velocity.z == 0.0


def _tf_message(tf2_msgs, stamp, parent, child, xyz, xyzw):
    """A TFMessage of one transform."""
    from geometry_msgs.msg import Quaternion, Transform, TransformStamped, Vector3

    from iphd.ros.conversions import header

    x, y, z = map(float, xyz)
    qx, qy, qz, qw = map(float, xyzw)
    return tf2_msgs.TFMessage(transforms=[TransformStamped(
        header=header(stamp, parent), child_frame_id=child,
        transform=Transform(translation=Vector3(x=x, y=y, z=z),
                            rotation=Quaternion(x=qx, y=qy, z=qz, w=qw)))])


def _listening_tracker(graph, executor, spin_until, monkeypatch, tf2_msgs):
    """A tracker in odom through iphd's own listener (tf2_msgs without tf2_ros), its feeder,
    and the feeder's /tf publisher; base_link -> optical is already on /tf_static."""
    from rclpy.qos import DurabilityPolicy, QoSProfile

    from iphd.calibration import BASE_TO_OPTICAL_XYZW
    from iphd.ros.frames import TopicLookup

    monkeypatch.setattr(tracker_node, "tf_lookup", TopicLookup)
    node, feeder = graph(tracking_frame="odom", up_axis="z")
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    static = feeder.create_publisher(tf2_msgs.TFMessage, "/tf_static", latched)
    odom = feeder.create_publisher(tf2_msgs.TFMessage, "/tf", 100)
    assert spin_until(executor, lambda: odom.get_subscription_count() > 0
                      and static.get_subscription_count() > 0)
    static.publish(_tf_message(tf2_msgs, 0, "base_link", FRAME, (0, 0, 0), BASE_TO_OPTICAL_XYZW))
    return node, feeder, odom


def test_without_tf2_ros_the_node_listens_to_tf_itself(
    graph, executor, spin_until, spin_for, monkeypatch, tf2_msgs
):
    """The same walk with real TF messages (a robot's odom -> base_link on /tf and base_link ->
    optical on /tf_static, together TO_ODOM) through iphd's own listener, as where tf2_msgs is
    installed without tf2_ros."""
    node, feeder, odom = _listening_tracker(graph, executor, spin_until, monkeypatch, tf2_msgs)
    for k in range(-1, 14):  # the robot stands 2 m along odom's x, its camera 1 m up
        odom.publish(_tf_message(tf2_msgs, T0 + k * PERIOD, "odom", "base_link",
                                 (2.0, 0.0, 1.0), (0, 0, 0, 1)))
    spin_for(executor, 0.3)  # delivered before the first detections
    _walk(executor, spin_until, feeder, 12)
    last = feeder.tracks[-1]
    assert last.header.frame_id == "odom" and node.stats().get("errors_no_transform", 0) == 0
    track = last.tracks[0]
    x, _, z = _person(11)[1]
    assert (track.position.x, track.position.y) == pytest.approx((2.0 + z, -x), abs=0.2)
    assert track.position.z == pytest.approx(1.0, abs=1e-6)
    assert track.velocity.y == pytest.approx(-SPEED_MPS, abs=0.25)
    # No odometry for a stamp within the wait (0.1 s): dropped and counted, as with tf2.
    late = T0 + 20 * PERIOD
    box, xyz = _person(20)
    feeder.depth.publish(_depth(late, [box]))
    feeder.detections.publish(_detections(late, [(box, xyz, 0.9)]))
    assert spin_until(executor, lambda: node.stats().get("errors_no_transform", 0) == 1)


def test_a_bag_that_loops_is_tracked_in_odom_again_from_its_first_frame(
    graph, executor, spin_until, spin_for, monkeypatch, tf2_msgs
):
    """The replayed robot's odometry starts over from the past when the bag loops: the node's
    own listener drops the last pass's transforms instead of refusing the new ones as old."""
    node, feeder, odom = _listening_tracker(graph, executor, spin_until, monkeypatch, tf2_msgs)
    later = T0 + 30 * 10**9  # the end of the bag's first pass, 30 s in

    def drive(t0):
        for k in range(-1, 8):
            odom.publish(_tf_message(tf2_msgs, t0 + k * PERIOD, "odom", "base_link",
                                     (2.0, 0.0, 1.0), (0, 0, 0, 1)))
        spin_for(executor, 0.3)
        _walk(executor, spin_until, feeder, 6, t0=t0)

    drive(later)
    drive(T0)  # the loop: stamps 30 s back
    stats = node.stats()
    assert stats.get("errors_no_transform", 0) == 0 and stats["clock_jumps"] == 1
    assert stamp_to_ns(feeder.tracks[-1].header.stamp) == T0 + 5 * PERIOD
    assert feeder.tracks[-1].header.frame_id == "odom" and feeder.tracks[-1].tracks


def test_detections_without_a_transform_are_dropped_and_reported(
    graph, executor, spin_until, monkeypatch
):
    missing = T0 + 5 * PERIOD
    tf = FakeTf(missing=[missing])
    monkeypatch.setattr(tracker_node, "tf_lookup", lambda node, timeout_s: tf)
    node, feeder = graph(tracking_frame="odom", up_axis="z")
    _walk(executor, spin_until, feeder, 5)
    box, xyz = _person(5)
    feeder.depth.publish(_depth(missing, [box]))
    feeder.detections.publish(_detections(missing, [(box, xyz, 0.9)]))
    assert spin_until(executor, lambda: node.stats().get("errors_no_transform", 0) == 1)
    assert spin_until(
        executor,
        lambda: feeder.latest_status()[0] is not None
        and feeder.latest_status()[0].level == DiagnosticStatus.WARN
        and "no transform" in feeder.latest_status()[0].message,
    )
    # The track goes on with the next frame; the dropped one published nothing.
    _walk(executor, spin_until, feeder, 3, start=6)
    assert missing not in {stamp_to_ns(m.header.stamp) for m in feeder.tracks}
    assert len({m.tracks[0].id for m in feeder.tracks[2:]}) == 1
    # No transform at all (odometry not up, a wrong frame name): nothing is tracked, an ERROR.
    tf.missing = {T0 + k * PERIOD for k in range(9, 30)}
    for k in range(9, 21):
        box, xyz = _person(k)
        feeder.depth.publish(_depth(T0 + k * PERIOD, [box]))
        feeder.detections.publish(_detections(T0 + k * PERIOD, [(box, xyz, 0.9)]))
        assert spin_until(executor, lambda n=k: node.stats()["errors_no_transform"] == n - 7)
    assert spin_until(
        executor,
        lambda: feeder.latest_status()[0] is not None
        and feeder.latest_status()[0].level == DiagnosticStatus.ERROR
        and "detection arrays were dropped: no transform into tracking_frame 'odom'"
        in feeder.latest_status()[0].message,
    )
    tf.missing = set()
    _walk(executor, spin_until, feeder, 3, start=30)
    assert node.stats()["frames_without_transform_run"] == 0


def test_frames_with_nobody_to_place_are_tracked_while_the_transform_is_missing(
    graph, executor, spin_until, monkeypatch
):
    # Empty arrays were dropped for want of a transform they do not need: the tracker stood
    # still, so a person who had left kept a confirmed track, and nothing was published.
    tf = FakeTf()
    monkeypatch.setattr(tracker_node, "tf_lookup", lambda node, timeout_s: tf)
    node, feeder = graph(tracking_frame="odom", up_axis="z", lost_timeout_s=0.5)
    _walk(executor, spin_until, feeder, 5)
    assert feeder.tracks[-1].tracks
    tf.missing = {T0 + k * PERIOD for k in range(5, 20)}
    for k in range(5, 20):
        feeder.detections.publish(_detections(T0 + k * PERIOD, []))
        assert spin_until(executor, lambda s=T0 + k * PERIOD: bool(feeder.tracks) and
                          stamp_to_ns(feeder.tracks[-1].header.stamp) == s)
    assert feeder.tracks[-1].header.frame_id == "odom"
    assert list(feeder.tracks[-1].tracks) == []  # lost, then deleted after 0.5 s
    assert "errors_no_transform" not in node.stats()


def test_a_query_after_the_detections_stopped_for_longer_than_lost_timeout_s_is_refused(
    graph, executor, spin_until, spin_for
):
    # Tracks age only when detections come: a query answered a track the tracker would have
    # deleted minutes ago, as live.
    node, feeder = graph(lost_timeout_s=0.5)
    _walk(executor, spin_until, feeder, 5)
    crop = np.zeros((64, 32, 3), np.uint8)
    image = array_to_image(crop, "rgb8", T0, "color_optical_frame")
    spin_for(executor, 0.7)
    response = _ask(executor, spin_until, feeder, image)
    assert not response.success
    assert "no detections for" in response.message and "lost_timeout_s (0.5 s)" in response.message
    _walk(executor, spin_until, feeder, 1, start=5)
    assert _ask(executor, spin_until, feeder, image).success


def test_every_input_takes_the_input_qos_and_warns_on_an_incompatible_publisher(
    graph, executor, spin_until_logged
):
    node, feeder = graph(input_reliability="reliable", input_queue_depth=7)
    inputs = {s.topic: s.qos_profile for s in node.subscriptions}
    assert set(inputs) == {"detections", "depth/image_raw", "depth/camera_info", "query/image"}
    for topic, profile in inputs.items():
        assert (profile.reliability, profile.depth) == (ReliabilityPolicy.RELIABLE, 7), topic
    # A best-effort publisher cannot serve a reliable subscription: the node says what to fix.
    feeder.create_publisher(Image, "query/image", qos.SENSOR_SUB)
    err = spin_until_logged(executor, "incompatible QoS on 'query/image'")
    assert "input_reliability" in err


def test_diagnostics_report_rates_latency_and_an_error_when_detections_stop(
    graph, executor, spin_until
):
    node, feeder = graph()
    _walk(executor, spin_until, feeder, 5)
    feeder.diagnostics.clear()
    assert spin_until(executor, lambda: feeder.latest_status()[0] is not None)
    status, kv = feeder.latest_status()
    assert status.level == DiagnosticStatus.OK
    assert kv["reid_model"].endswith("depth.pt") and kv["query_model"].endswith("rgb.pt")
    assert kv["device"] == "cpu" and float(kv["detections_rate_hz"]) > 0
    for key in ("embedding_ms_p50", "embedding_ms_p95", "tracking_ms_p50", "tracking_ms_p95"):
        assert float(kv[key]) >= 0.0
    assert kv["tracks_confirmed"] == "1" and kv["tracker_created"] == "1"
    assert spin_until(
        executor,
        lambda: feeder.latest_status()[0].level == DiagnosticStatus.ERROR
        and "no detections" in feeder.latest_status()[0].message,
        timeout_s=3.0,
    )


def test_no_detection_at_all_since_the_start_is_an_error_after_a_grace(
    graph, executor, spin_until, spin_until_logged, monkeypatch
):
    monkeypatch.setattr(tracker_node, "STARTUP_GRACE_S", 0.5)
    monkeypatch.setattr(common, "STARTUP_LOG_GRACE_S", 0.5)
    node, feeder = graph()
    assert spin_until(
        executor,
        lambda: feeder.latest_status()[0] is not None
        and feeder.latest_status()[0].level == DiagnosticStatus.ERROR
        and "detections since the start" in feeder.latest_status()[0].message,
        timeout_s=3.0,
    )
    spin_until_logged(executor, "status ERROR: no detections since the start")


def test_runner_starts_the_tracker_after_the_detector(tmp_path, capsys):
    no_tracker = ["--no-detector", "--reid-checkpoint", "none", "--duration", "1"]
    assert run_main(["--source", "sim_live", *no_tracker]) == 2
    assert "tracker:=false" in capsys.readouterr().err
    argv = [
        "--source", "sim_live", "--reid-checkpoint", "none",
        "--duration", "5", "--out", str(tmp_path), "--log-level", "error",
    ]
    assert run_main(argv) == 0
    summary = capsys.readouterr().out
    line = next(x for x in summary.splitlines() if "tracker (re-ID none" in x)
    assert int(line.split("):")[1].split()[0]) > 0  # track arrays published


def test_every_tracker_config_field_has_a_parameter_description():
    import dataclasses

    from iphd.ros.tracker_node import TRACKER_PARAMETERS
    from iphd.tracking.tracker import TrackerConfig

    assert {f.name for f in dataclasses.fields(TrackerConfig)} == set(TRACKER_PARAMETERS)


def test_dynamic_parameters_apply_at_once_and_keep_the_tracks(
    graph, executor, spin_until, set_remote_parameters
):
    node, feeder = graph()
    _walk(executor, spin_until, feeder, 5)
    track_id = feeder.tracks[-1].tracks[0].id
    assert list(feeder.tracks[-1].tracks[0].embedding) == []
    result = set_remote_parameters(
        executor, feeder, "tracker", publish_embeddings=True, gate_distance_m=0.8,
        measurement_std_m=0.3, query_top_k=2,
    )
    assert result.successful, result.reason
    assert node.config.gate_distance_m == 0.8 and node.tracker.config is node.config
    assert node.get_parameter("gate_distance_m").value == 0.8
    # The live track's filter took the new measurement noise.
    assert node.tracker._tracks[track_id].kf._r[0, 0] == pytest.approx(0.09)
    _walk(executor, spin_until, feeder, 2, start=5)
    (track,) = feeder.tracks[-1].tracks
    assert track.id == track_id and len(track.embedding) == 16


def test_bad_or_read_only_parameter_changes_are_refused_and_change_nothing(
    graph, executor, spin_until, set_remote_parameters
):
    node, feeder = graph()
    _walk(executor, spin_until, feeder, 4)
    before = node.config
    # Values the tracker cannot use: the reason names the parameter; all or none are applied.
    for values, named in (
        ({"gate_distance_m": -1.0}, "gate_distance_m"),
        ({"min_iou": 0.5, "appearance_weight": 1.5}, "appearance_weight"),
        ({"min_iou": 0.5, "query_top_k": 0}, "query_top_k"),
        ({"publish_tentative": True, "query_max_distance": 3.0}, "query_max_distance"),
    ):
        result = set_remote_parameters(executor, feeder, "tracker", **values)
        assert not result.successful and named in result.reason, result.reason
    assert node.config is before and node.tracker.config is before
    assert node.get_parameter("min_iou").value == before.min_iou
    assert node._query_top_k == 5 and node._publish_tentative is False
    # Parameters read once at start are read-only: a set is refused, not silently ignored.
    for name, value in (("up_axis", "z"), ("reid_checkpoint", "other.pt"), ("max_queue", 3)):
        result = set_remote_parameters(executor, feeder, "tracker", **{name: value})
        assert not result.successful and "read-only" in result.reason, result.reason
    # Still tracking the same person.
    _walk(executor, spin_until, feeder, 2, start=4)
    assert len(feeder.tracks[-1].tracks) == 1


def test_detections_stamped_0_are_dropped_and_the_tracks_kept(
    graph, executor, spin_until, spin_for
):
    node, feeder = graph()
    _walk(executor, spin_until, feeder, 5)
    track_id = feeder.tracks[-1].tracks[0].id
    # A publisher that never set the stamp: dropped as malformed, not a clock jump back.
    box, xyz = _person(5)
    feeder.detections.publish(_detections(0, [(box, xyz, 0.9)]))
    spin_for(executor, 0.3)
    assert node.stats()["clock_jumps"] == 0 and node.stats()["errors_bad_detections"] == 1
    _walk(executor, spin_until, feeder, 2, start=6)
    assert [t.id for t in feeder.tracks[-1].tracks] == [track_id]
    assert all(stamp_to_ns(m.header.stamp) != 0 for m in feeder.tracks)


def test_one_detections_message_stamped_far_ahead_is_dropped_and_the_tracks_kept(
    graph, executor, spin_until, spin_for
):
    # Taken as tracking time, an hour's leap expired every track, and the next message, back
    # on the stream's time, was a clock jump that reset them: the person came back renamed.
    node, feeder = graph()
    _walk(executor, spin_until, feeder, 5)
    track_id = feeder.tracks[-1].tracks[0].id
    box, xyz = _person(5)
    ahead = T0 + 5 * PERIOD + 3600 * 10**9
    feeder.depth.publish(_depth(ahead, [box]))
    feeder.detections.publish(_detections(ahead, [(box, xyz, 0.9)]))
    spin_for(executor, 0.3)
    _walk(executor, spin_until, feeder, 3, start=5)
    assert [t.id for t in feeder.tracks[-1].tracks] == [track_id]
    stats = node.stats()
    assert stats["clock_jumps"] == 0 and stats["errors_stamp_leap"] == 1
    assert all(stamp_to_ns(m.header.stamp) != ahead for m in feeder.tracks)
    level, message = node._status(stats)
    assert level == "WARN" and "3600.1 s after the last tracked" in message, message


def test_a_real_gap_in_the_detections_is_tracked_once_the_next_message_confirms_it(
    graph, executor, spin_until
):
    node, feeder = graph()
    _walk(executor, spin_until, feeder, 5)
    # The detector came back 20 s later: the first message after the gap waits for the next
    # one, which continues from it, and both are tracked in order.
    gap = 20 * 10**9
    box, xyz = _person(5)
    feeder.depth.publish(_depth(T0 + gap, [box]))
    feeder.detections.publish(_detections(T0 + gap, [(box, xyz, 0.9)]))
    _walk(executor, spin_until, feeder, 2, start=6, t0=T0 + gap - 5 * PERIOD)
    stamps = [stamp_to_ns(m.header.stamp) for m in feeder.tracks[-3:]]
    assert stamps == [T0 + gap, T0 + gap + PERIOD, T0 + gap + 2 * PERIOD]
    # A last message after another gap, with nothing after it: tracked once the stream
    # stays silent.
    feeder.depth.publish(_depth(T0 + 2 * gap, [box]))
    feeder.detections.publish(_detections(T0 + 2 * gap, [(box, xyz, 0.9)]))
    assert spin_until(
        executor, lambda: stamp_to_ns(feeder.tracks[-1].header.stamp) == T0 + 2 * gap
    )
    stats = node.stats()
    assert stats["clock_jumps"] == 0 and "errors_stamp_leap" not in stats


def test_a_box_far_larger_than_the_image_costs_only_itself(graph, executor, spin_until):
    # Cropping (-1e7, -1e7, 1e7, 1e7) for an embedding once asked for petabytes, and the
    # whole frame, the person's detection with it, was lost.
    node, feeder = graph()
    _walk(executor, spin_until, feeder, 5)
    track_id = feeder.tracks[-1].tracks[0].id
    stamp = T0 + 5 * PERIOD
    box, xyz = _person(5)
    feeder.depth.publish(_depth(stamp, [box]))
    feeder.detections.publish(
        _detections(stamp, [(box, xyz, 0.9), ((-1e7, -1e7, 1e7, 1e7), xyz, 0.9)])
    )
    assert spin_until(
        executor, lambda: stamp_to_ns(feeder.tracks[-1].header.stamp) == stamp
    )
    assert [t.id for t in feeder.tracks[-1].tracks] == [track_id]
    stats = node.stats()
    assert stats["errors_bad_detection"] == 1 and "errors_internal" not in stats


def test_parameter_changes_are_refused_while_the_tracker_is_not_started(
    graph, executor, spin_until, set_remote_parameters
):
    node, feeder = graph(confirm_hits=0)
    assert node.tracker is None
    result = set_remote_parameters(executor, feeder, "tracker", confirm_hits=3)
    assert not result.successful
    assert "did not start" in result.reason and "confirm_hits" in result.reason
    # What iphd-run stops on and prints as its last line.
    assert "confirm_hits" in node.stats()["not_started"]
    # A later input error (a camera info with an all-zero K) does not take the reason's place.
    node._on_depth_info(CameraInfo(width=64, height=48))
    assert node.stats()["errors_bad_depth_info"] == 1
    level, message = node._status(node.stats())
    assert level == "ERROR" and "confirm_hits" in message and "camera_info" not in message
    result = set_remote_parameters(executor, feeder, "tracker", confirm_hits=3)
    assert "confirm_hits" in result.reason and "camera_info" not in result.reason


def test_tracks_as_vision_msgs_leave_out_lost_tracks_and_stand_along_the_up_axis(vision_msgs):
    from iphd.ros.tracking_msgs import PERSON_HEIGHT_M, tracks_to_vision
    from iphd.tracking.tracker import CONFIRMED, LOST, TENTATIVE, TrackState

    def state(track_id, status, position, score=0.9):
        return TrackState(
            track_id, status, score, np.asarray(position, dtype=np.float64), np.zeros(3),
            None, 1.0, 0.0, None, np.diag([0.04, 0.09, 0.01]),
        )

    tracks = [
        state(4, CONFIRMED, (0.5, 0.1, 3.0), score=0.8),
        state(5, LOST, (1.0, 0.1, 3.0)),
        state(6, TENTATIVE, (-0.5, 0.1, 2.0)),
        state(7, CONFIRMED, (math.nan, math.nan, math.nan)),
    ]
    msg = tracks_to_vision(vision_msgs, tracks, T0 + 5, FRAME, "-y")
    assert isinstance(msg, vision_msgs.Detection3DArray)
    assert stamp_to_ns(msg.header.stamp) == T0 + 5 and msg.header.frame_id == FRAME
    assert [d.id for d in msg.detections] == ["4", "6"]
    first = msg.detections[0]
    assert first.header.frame_id == FRAME
    centre = first.bbox.center.position
    assert (centre.x, centre.y, centre.z) == pytest.approx((0.5, 0.1, 3.0))
    assert first.bbox.size.z == pytest.approx(PERSON_HEIGHT_M)
    # The box's own z axis is the optical frame's up, -y.
    q = first.bbox.center.orientation
    assert _rotate((q.x, q.y, q.z, q.w), (0, 0, 1)) == pytest.approx([0, -1, 0])
    (result,) = first.results
    assert result.hypothesis.class_id == "person"
    assert result.hypothesis.score == pytest.approx(0.8)
    assert result.pose.pose.position.z == pytest.approx(3.0)
    # The track's position covariance, not zeros (certainty); the orientation is unknown.
    covariance = np.asarray(result.pose.covariance).reshape(6, 6)
    assert np.allclose(covariance[:3, :3], np.diag([0.04, 0.09, 0.01]))
    assert np.all(np.diag(covariance)[3:] >= 1e6)
    # In odom (up z) the box stands upright as it is.
    upright = tracks_to_vision(vision_msgs, tracks[:1], T0, "odom", "z").detections[0]
    q = upright.bbox.center.orientation
    assert _rotate((q.x, q.y, q.z, q.w), (0, 0, 1)) == pytest.approx([0, 0, 1])


def test_where_vision_msgs_is_installed_the_tracks_are_published_as_detection3d_too(
    vision_msgs, graph, executor, spin_until
):
    node, feeder = graph()
    received = []
    feeder.create_subscription(
        vision_msgs.Detection3DArray, "vision_tracks", received.append, 50
    )
    assert spin_until(executor, lambda: node.count_subscribers("vision_tracks") > 0)
    _walk(executor, spin_until, feeder, 5)
    assert spin_until(executor, lambda: len(received) >= 5)
    track_id = feeder.tracks[-1].tracks[0].id
    last = received[-1]
    assert last.header == feeder.tracks[-1].header
    assert [d.id for d in last.detections] == [str(track_id)]
    # Tentative tracks are not published by default, as in tracks.
    assert [len(m.detections) for m in received[:2]] == [0, 0]
    assert node.stats()["vision_msgs"] == "on"


def test_without_vision_msgs_the_tracker_says_so_and_publishes_no_vision_tracks(
    graph, executor, spin_until
):
    node, feeder = graph()
    assert node.stats()["vision_msgs"] == "not installed"
    assert node.count_publishers("vision_tracks") == 0
    node_off, _ = graph(publish_vision_msgs=False)
    assert node_off.stats()["vision_msgs"] == "off"


def test_an_embedder_failure_refuses_that_query_and_the_service_goes_on(
    graph, executor, spin_until
):
    node, feeder = graph()
    _walk(executor, spin_until, feeder, 4)
    real = node.query_extractor

    class Failing:
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, crops):
            raise RuntimeError("onnxruntime: out of memory")

    node.query_extractor = Failing()
    crop = np.zeros((64, 32, 3), np.uint8)
    image = array_to_image(crop, "rgb8", T0, "color_optical_frame")
    response = _ask(executor, spin_until, feeder, image)
    assert not response.success and "out of memory" in response.message
    node.query_extractor = real
    assert _ask(executor, spin_until, feeder, image).success


def test_an_internal_error_costs_one_frame_and_the_worker_goes_on(
    graph, executor, spin_until, break_once
):
    node, feeder = graph()
    calls = break_once(node, "_process", 2)
    # _walk waits for a track array per frame: send the broken frame on its own.
    _walk(executor, spin_until, feeder, 1)
    box, xyz = _person(1)
    feeder.depth.publish(_depth(T0 + PERIOD, [box]))
    feeder.detections.publish(_detections(T0 + PERIOD, [(box, xyz, 0.9)]))
    assert spin_until(executor, lambda: node.stats().get("errors_internal") == 1)
    _walk(executor, spin_until, feeder, 4, start=2)
    assert len(calls) == 6 and len(feeder.tracks) == 5
    (track,) = feeder.tracks[-1].tracks
    assert track.state == PersonTrack.STATE_CONFIRMED
    # A WARN for the input-error window after it, not for good.
    level, message = node._status(node.stats())
    assert level == "WARN" and "internal error" in message
    node._warn_drop.last_drop_s -= 31.0
    assert node._status(node.stats()) == ("OK", "tracking")
