import math

from geometry_msgs.msg import Point, Vector3
from iphd_msgs.msg import PersonDetection, PersonDetectionArray, PersonTrack, PersonTrackArray
from rclpy.node import Node

from iphd.ros import qos
from iphd.ros.conversions import header


def _round_trip(executor, ros_context, spin_until, msg_type, msg):
    node = Node("msg_round_trip", context=ros_context)
    executor.add_node(node)
    received = []
    node.create_subscription(msg_type, "round_trip", received.append, qos.RESULT_PUB)
    pub = node.create_publisher(msg_type, "round_trip", qos.RESULT_PUB)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0)
    pub.publish(msg)
    assert spin_until(executor, lambda: bool(received))
    return received[0]


def test_detection_array_round_trips_through_dds(executor, ros_context, spin_until):
    msg = PersonDetectionArray(header=header(1_700_000_000_123_456_789, "depth_optical_frame"))
    msg.image_width, msg.image_height = 848, 480
    msg.detections = [
        PersonDetection(
            score=0.9,
            x1=10.0,
            y1=20.0,
            x2=110.0,
            y2=300.0,
            position=Point(x=0.1, y=-0.2, z=3.5),
            temperature_k=306.5,
        ),
        PersonDetection(
            score=0.4,
            x1=1.0,
            y1=2.0,
            x2=3.0,
            y2=4.0,
            position=Point(x=math.nan, y=math.nan, z=math.nan),
            temperature_k=math.nan,
        ),
    ]
    got = _round_trip(executor, ros_context, spin_until, PersonDetectionArray, msg)
    assert got.header.stamp.sec == 1_700_000_000 and got.header.stamp.nanosec == 123_456_789
    assert got.header.frame_id == "depth_optical_frame"
    assert (got.image_width, got.image_height) == (848, 480)
    assert got.detections[0].x2 == 110.0 and got.detections[0].position.z == 3.5
    assert math.isnan(got.detections[1].position.x) and math.isnan(got.detections[1].temperature_k)


def test_track_array_round_trips_with_state_constants_and_embedding(
    executor, ros_context, spin_until
):
    track = PersonTrack(
        id=7,
        state=PersonTrack.STATE_CONFIRMED,
        score=0.8,
        position=Point(x=1.0, y=0.0, z=2.0),
        velocity=Vector3(x=0.5, y=0.0, z=0.0),
        age_s=3.0,
        time_since_update_s=0.1,
    )
    track.embedding = [0.5] * 128
    msg = PersonTrackArray(header=header(5, "odom"), tracks=[track])
    got = _round_trip(executor, ros_context, spin_until, PersonTrackArray, msg)
    assert got.header.frame_id == "odom"
    t = got.tracks[0]
    assert (t.id, t.state) == (7, PersonTrack.STATE_CONFIRMED)
    assert PersonTrack.STATE_TENTATIVE != PersonTrack.STATE_LOST
    assert t.velocity.x == 0.5 and len(t.embedding) == 128
