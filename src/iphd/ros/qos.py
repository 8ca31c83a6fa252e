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

from iphd.errors import ConfigError
from iphd.ros.common import declare, topic_label

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
# What the ``input_reliability`` parameter accepts.
INPUT_RELIABILITY = {
    "best_effort": ReliabilityPolicy.BEST_EFFORT,
    "reliable": ReliabilityPolicy.RELIABLE,
}
# Published once and kept for late subscribers and recorders ("latched"), as /tf_static and
# robot_description are.
LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
STATIC_TF = LATCHED
# tf2's listener of /tf: the 100 newest transforms, reliable, volatile.
TF_LISTENER = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
# tf2's listener of /tf_static: every latched message of every publisher, reliable.
STATIC_TF_LISTENER = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


def declare_input_qos(node: Node) -> QoSProfile:
    """Declare ``input_reliability`` and ``input_queue_depth``; return the inputs' QoS profile.

    The defaults are ROS's sensor-data QoS (best effort, the 5 newest messages), right for
    live sensors: a late frame is worth less than the next one. Bag replay asks for reliable
    inputs and a deeper queue (``iphd.graph.REPLAY_INPUT_QOS``). Volatile either way. A
    best-effort subscription takes any publisher; a reliable one needs a reliable publisher,
    which the drivers, the bag player and the iphd nodes all are.

    Raises:
        ConfigError: an unknown reliability or a queue depth below 1.
    """
    reliability = declare(
        node, "input_reliability", "best_effort",
        "QoS reliability of the subscribed streams: best_effort (live sensors) or reliable "
        "(bag replay: nothing lost while the node is busy)",
    )
    depth = declare(
        node, "input_queue_depth", SENSOR_SUB.depth,
        "messages kept per subscribed stream while the node is busy; older ones are dropped",
    )
    if reliability not in INPUT_RELIABILITY:
        raise ConfigError(
            f"input_reliability must be one of {', '.join(INPUT_RELIABILITY)}, "
            f"got {reliability!r}"
        )
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"input_queue_depth must be an integer >= 1, got {depth!r}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=INPUT_RELIABILITY[reliability],
        durability=DurabilityPolicy.VOLATILE,
    )


def warn_on_incompatible_qos(  # noqa: ANN201 - rclpy event type
    node: Node, topic: str, seen: set[str] | None = None
):
    """Return subscription event callbacks that log an incompatible-QoS event on ``topic``.

    The topic is named as it resolves (a remapped driver topic, ``topic`` beside it); with
    ``seen``, its label is added there too, for the node's stats.
    """
    from rclpy.event_handler import SubscriptionEventCallbacks

    def _log(event: object) -> None:
        label = topic_label(node, topic)
        if seen is not None:
            seen.add(label)
        node.get_logger().warning(
            f"incompatible QoS on '{label}' "
            f"(last policy: {getattr(event, 'last_policy_kind', '?')}); "
            "the publisher must offer at least this subscription's reliability "
            "(the node's input_reliability parameter) and volatile durability"
        )

    return SubscriptionEventCallbacks(incompatible_qos=_log)
