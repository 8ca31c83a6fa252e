"""QoS profiles of the iphd topics: drivers publish reliable, consumers use sensor-data QoS."""

from __future__ import annotations

from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

# Drivers keep a short reliable queue: a reliable publisher serves both reliable and
# best-effort subscribers, so any consumer can connect.
SENSOR_PUB = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE
)
SENSOR_SUB = qos_profile_sensor_data
RESULT_PUB = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE
)
# A recorder (the runner's evaluation monitor) must see every result: reliable, with a queue
# deep enough to ride out an executor busy with fusion for a second (tracks come at < 9 Hz).
RECORD_SUB = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE
)
STATIC_TF = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


def warn_on_incompatible_qos(node: Node, topic: str):  # noqa: ANN201 - rclpy event type
    """Return subscription event callbacks that log an incompatible-QoS event on ``topic``."""
    from rclpy.event_handler import SubscriptionEventCallbacks

    def _log(event: object) -> None:
        node.get_logger().warning(
            f"incompatible QoS on '{topic}' "
            f"(last policy: {getattr(event, 'last_policy_kind', '?')}); "
            "the publisher must offer at least best-effort, volatile QoS"
        )

    return SubscriptionEventCallbacks(incompatible_qos=_log)
