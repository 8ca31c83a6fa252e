"""Bag player node: publishes a rosbag2's messages at the recorded pace, with /clock."""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CompressedImage, Image

from iphd.compressed_images import COMPRESSED_IMAGE, decode_compressed
from iphd.data.playback import BagPlayback, PlaybackConfig
from iphd.data.rosbag import BagReader, RawMessage, tf_topics, wal_text
from iphd.errors import ConfigError, DatasetError, IphdError
from iphd.ros import qos
from iphd.ros.common import (
    declare,
    diagnostic_array,
    diagnostics_period,
    forward_library_logs,
    spin_node,
)
from iphd.ros.conversions import array_to_image, ns_to_stamp, stamp_to_ns
from iphd.transports import base_topic, transport_topics

# The player's own pace follows the steady clock (never /clock, which it publishes itself);
# the tick bounds the timing jitter of a release.
TICK_S = 0.005
#: Pause between the last awaited subscription matching and the first message.
SUBSCRIBER_SETTLE_S = 0.25
# At the end of the bag, how long the player waits for its subscribers' acknowledgements.
DRAIN_TIMEOUT_S = 3.0


def message_class(msgtype: str) -> type | None:
    """Return the rclpy message class of ``pkg/msg/Name``; None when it is not importable."""
    parts = msgtype.split("/")
    if len(parts) != 3:
        return None
    package, kind, name = parts
    try:
        module = importlib.import_module(f"{package}.{kind}")
    except ImportError:
        return None
    cls = getattr(module, name, None)
    return cls if isinstance(cls, type) else None


class BagPlayerNode(Node):
    """Plays a bag: each topic on its recorded (relative) name, pace from the log times.

    Sensor topics are published reliable, keep-last 5, like the drivers; topics the recorder
    offered transient-local (``/tf_static``) are published latched. With ``publish_clock`` the
    playback position goes out on ``/clock`` every ``clock_period_s``, so nodes with
    ``use_sim_time`` see the bag's own times (the recorded stamps). Messages are read from the
    bag one ahead of the playback position, from a steady-clock timer, so the executor stays
    responsive. Topics whose message type is not installed here are skipped with one warning.
    A bag's static transforms are played as tf2's static broadcaster publishes them: each
    ``/tf_static`` message holds every static transform played so far (the newest per child
    frame), so a listener that comes late (RViz, a node started later) gets all of them, not
    only the last recorder's message of a bag with several static publishers.
    Images recorded only through image_transport's compressed transports are also published
    decoded on their raw topic (``decompress``; ``decoded_topics``), so a robot's bag of
    ``.../image_rect_raw/compressedDepth`` feeds the graph as ``.../image_rect_raw``.

    Attributes:
        published: messages published per topic.
        skipped: messages not published per topic, because their type is not installed.
        corrupt: messages that did not deserialize, per topic.
        undecodable: compressed images that did not decode, per compressed topic.

    Raises:
        ConfigError: no ``bag`` parameter, or a bad rate, offset or topic list.
        DatasetError: the bag is missing, unreadable, empty or lacks a requested topic.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("bag_player", **kwargs)
        bag = declare(self, "bag", "", "rosbag2 folder (or .db3/.mcap file) to play; required")
        rate = declare(self, "rate", 1.0, "playback speed relative to the recording")
        loop = declare(self, "loop", False, "start again at the end of the bag")
        offset = declare(self, "start_offset_s", 0.0, "seconds of the bag skipped at the start")
        publish_clock = declare(self, "publish_clock", True, "publish the bag's time on /clock")
        clock_period = declare(self, "clock_period_s", 0.01, "period of /clock messages, s")
        delay = declare(
            self, "start_delay_s", 0.5, "wait before the first message so subscribers connect, s"
        )
        wait_s = declare(
            self, "wait_for_subscribers_s", 30.0,
            "longest wait (after start_delay_s) for the wait_for_subscribers counts, s",
        )
        period = diagnostics_period(
            declare(self, "diagnostics_period", 1.0, "diagnostics period, s")
        )
        decompress = declare(
            self, "decompress", True,
            "publish each compressed image topic (image_transport's <image>/compressed and "
            "<image>/compressedDepth) that has no raw <image> in the bag decoded on <image>, "
            "as image_transport's republish would",
        )
        depth_images = self._declare_names(
            "depth_images",
            "the bag's depth image topics (the graph's depth_topic): of their two compressed "
            "transports compressedDepth is decoded, whatever their name; other images are "
            "taken for depth when 'depth' is in their name",
        )
        self._wait_for = parse_subscriber_counts(self._declare_names(
            "wait_for_subscribers",
            "'topic:count' entries: start only once each topic has that many subscribers (or "
            "wait_for_subscribers_s passed); empty = start after start_delay_s",
        ))
        topics = self._declare_names("topics", "topics to play; empty = all")
        exclude = self._declare_names(
            "exclude_topics",
            "topics of the bag not to play, named as the player's own: those the replaying "
            "graph's nodes publish themselves (a recording of a running graph holds its "
            "outputs); empty = none. A recorded /clock is never played with publish_clock",
        )
        exclude_frames = self._declare_names(
            "exclude_transforms",
            "child frames whose transforms on the bag's /tf and /tf_static are not played: "
            "those the replaying graph's nodes publish themselves (fusion's rig transforms, "
            "which a recording of a running graph holds); empty = none",
        )
        if not bag:
            raise ConfigError(
                "bag_player needs the 'bag' parameter: the rosbag2 folder to play "
                "(ros2 run iphd_bringup bag_player_node --ros-args -p bag:=/path/to/bag)"
            )
        if not all(f.strip("/") for f in exclude_frames):
            raise ConfigError(
                f"'exclude_transforms' must be a list of frame names, got {exclude_frames!r}"
            )
        #: Child frames whose recorded transforms are left out (tf2 drops a leading "/").
        self.excluded_frames = frozenset(f.strip("/") for f in exclude_frames)
        if float(clock_period) <= 0:
            raise ConfigError(f"clock_period_s must be > 0, got {clock_period}")
        self.bag_path = str(bag)
        # What the bag reader says (a cut-off recording, a corrupt message) is this node's.
        self._undo_logs = forward_library_logs(self, "iphd.data")
        try:
            self._reader = BagReader(self.bag_path)
        except IphdError:
            self._undo_logs()
            raise
        try:
            own = [*exclude, "/clock"] if publish_clock else list(exclude)
            #: Topics of the bag left out because the player or the graph publishes them.
            self.excluded = self._excluded(own)
            played = [t for t in (topics or sorted(self._reader.topics)) if t not in self.excluded]
            if not played:
                raise DatasetError(
                    f"{self.bag_path} has nothing to play: its topics "
                    f"{', '.join(sorted(self._reader.topics))} are all left out (exclude_topics)"
                )
            config = PlaybackConfig(
                rate=float(rate),
                loop=bool(loop),
                start_offset_s=float(offset),
                topics=tuple(played),
            )
            self._playback = BagPlayback(self._reader, config)
        except IphdError:
            self.close()
            raise
        if self.excluded:
            self.get_logger().info(
                f"not playing the bag's {', '.join(self.excluded)}: published anew here, by "
                "this player (/clock) or the graph's nodes (exclude_topics)"
            )
        self.published: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        self.corrupt: dict[str, int] = {}
        self.undecodable: dict[str, int] = {}
        #: Recorded transforms left out per child frame (``exclude_transforms``).
        self.transforms_not_played: dict[str, int] = {}
        # TF topic of the bag -> whether it is static; a static one's played transforms.
        self._tf_topics = tf_topics(self._reader.topics)
        self._static_tf: dict[str, dict[str, Any]] = {}
        self._topic_pubs: dict[str, tuple[Publisher, type]] = {}
        bag_topics = self._reader.topics
        for topic in self._playback.topics:
            info = bag_topics[topic]
            cls = message_class(info.msgtype)
            if cls is None:
                self.skipped[topic] = 0
                self.get_logger().warning(
                    f"skipping topic '{topic}': its type {info.msgtype} is not installed here"
                )
                continue
            # A static TF topic is latched as tf2's static broadcaster latches it, even where
            # the bag stored no QoS: tf2's listeners and RViz ask for transient-local.
            latched = info.latched or self._tf_topics.get(topic, False)
            profile = qos.STATIC_TF if latched else qos.SENSOR_PUB
            self._topic_pubs[topic] = (
                self.create_publisher(cls, self._graph_topic(topic), profile), cls
            )
            self.published[topic] = 0
        if self.excluded_frames and any(t in self._topic_pubs for t in self._tf_topics):
            self.get_logger().info(
                f"not playing the bag's transforms to {', '.join(sorted(self.excluded_frames))}: "
                "published anew by the graph's nodes (exclude_transforms)"
            )
        # Compressed image topic -> the raw topic its images are published decoded on.
        self._decoded: dict[str, str] = {}
        if decompress:
            self._decoded = decoded_topics(
                {t: bag_topics[t].msgtype for t in self._playback.topics if t in self._topic_pubs},
                depth_images,
            )
        for topic, raw_topic in self._decoded.items():
            self._topic_pubs[raw_topic] = (
                self.create_publisher(Image, self._graph_topic(raw_topic), qos.SENSOR_PUB), Image
            )
            self.published[raw_topic] = 0
            self.get_logger().info(f"publishing {topic} decoded, as an Image on {raw_topic}")
        self._clock_pub = self.create_publisher(ClockMsg, "/clock", 10) if publish_clock else None
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._start_at_ns = self._now_ns() + int(float(delay) * 1e9)
        self._wait_until_ns = self._start_at_ns + int(max(float(wait_s), 0.0) * 1e9)
        self._settle_until_ns: int | None = None
        self._loops_seen = 0
        self._end_logged = False
        self._wall_start = time.monotonic()
        self._tick_timer = self.create_timer(TICK_S, self._tick, clock=self._steady)
        if self._clock_pub is not None:
            self.create_timer(float(clock_period), self._publish_clock, clock=self._steady)
        self.create_timer(period, self._publish_diagnostics, clock=self._steady)
        self.get_logger().info(
            f"playing {self.bag_path}: {self._reader.message_count} messages, "
            f"{self._reader.duration_ns / 1e9:.2f} s at rate {config.rate:g}"
            + (" (looping)" if config.loop else "")
        )

    def _declare_names(self, name: str, description: str) -> list[str]:
        """Declare a read-only list-of-strings parameter (default empty) and return it."""
        # Dynamically typed: an empty list from a parameters file arrives as a byte array.
        self.declare_parameter(
            name,
            [],
            ParameterDescriptor(description=description, dynamic_typing=True, read_only=True),
        )
        return name_list(self.get_parameter(name).value, name)

    # -- playback ------------------------------------------------------------------------------

    def _now_ns(self) -> int:
        return self._steady.now().nanoseconds

    def _resolved(self, name: str) -> str | None:
        """``name`` as this node resolves it; None for a name rclpy refuses."""
        try:
            return str(self.resolve_topic_name(name))
        except Exception:  # rclpy's name errors differ by version: a bad name matches none
            return None

    def _graph_topic(self, topic: str) -> str:
        """The name a recorded topic is published on.

        As recorded, except where the player runs in a namespace, the graph waits for the
        topic inside it (``wait_for_subscribers``: what the launch file and ``iphd-run`` set
        from the nodes' inputs) and the bag holds it outside, by its absolute name (``ros2 bag
        record`` stores names absolute: a robot recorded without the namespace the replay
        runs in). It is then published inside the namespace, and the log says so.
        """
        namespace = self.get_namespace().rstrip("/")
        if not namespace or not topic.startswith("/") or topic.startswith(namespace + "/"):
            return topic
        waited = {self._resolved(name) for name in self._wait_for}
        inside = namespace + topic
        if inside not in waited or topic in waited:
            return topic
        self.get_logger().info(
            f"publishing the bag's {topic} as {inside}: the graph in namespace {namespace} "
            "reads it there"
        )
        return inside

    def _excluded(self, names: list[str]) -> list[str]:
        """The bag's topics that resolve, as this node's, to one of ``names``."""
        own = {self._resolved(name) for name in names} - {None}
        return sorted(t for t in self._reader.topics if self._resolved(t) in own)

    @property
    def finished(self) -> bool:
        """True once the whole bag was played (never with ``loop``)."""
        return self._playback.finished

    @property
    def started(self) -> bool:
        """True once playing began (after ``start_delay_s`` and ``wait_for_subscribers``)."""
        return self._playback.started

    @property
    def loops(self) -> int:
        """How many times the bag started again (``loop``)."""
        return self._playback.loops

    def bag_time_ns(self) -> int:
        """The playback position: the bag time published on ``/clock``."""
        return self._playback.bag_time_ns(self._now_ns())

    def _tick(self) -> None:
        now = self._now_ns()
        if not self._playback.started:
            if now < self._start_at_ns or (self._wait_for and not self._subscribed(now)):
                return
            self._publish_clock()
            for raw in self._playback.start(now):
                self._publish_guarded(raw)
        for raw in self._playback.due(now):
            self._publish_guarded(raw)
        if self._playback.loops != self._loops_seen:
            self._loops_seen = self._playback.loops
            self.get_logger().warning(
                f"end of bag, playing it again (loop {self._loops_seen}): /clock jumps back from "
                f"{self._playback.end_ns / 1e9:.3f} s to {self._playback.start_ns / 1e9:.3f} s; "
                "nodes on sim time see time go backwards"
            )
        if self._playback.finished and not self._end_logged:
            self._end_logged = True
            self._tick_timer.cancel()
            self._publish_clock()
            self.get_logger().info(f"end of bag {self.bag_path}: {self._summary()}")

    def _subscribed(self, now_ns: int) -> bool:
        """Whether every ``wait_for_subscribers`` topic has its subscribers (or time is up)."""
        have = {topic: self._subscribers(topic) for topic in self._wait_for}
        missing = {
            topic: f"{have[topic]} of {count}"
            for topic, count in self._wait_for.items()
            if have[topic] < count
        }
        if missing and now_ns < self._wait_until_ns:
            return False
        if not missing:
            # Our publisher has matched every subscription; give the subscriptions the same
            # moment to match our publisher (discovery runs both ways, asynchronously), or a
            # best-effort reader drops the first messages.
            if self._settle_until_ns is None:
                self._settle_until_ns = now_ns + int(SUBSCRIBER_SETTLE_S * 1e9)
            if now_ns < self._settle_until_ns:
                return False
        if missing:
            self.get_logger().warning(
                f"starting without all subscribers connected ({missing}): the first messages "
                "may not reach every node"
            )
        self._wait_for = {}
        return True

    def _subscribers(self, topic: str) -> int:
        """Subscriptions matched with our publisher of ``topic`` (graph count if we have none)."""
        entry = self._topic_pubs.get(topic)
        if entry is not None:
            return int(entry[0].get_subscription_count())
        return int(self.count_subscribers(topic))

    def _publish_guarded(self, raw: RawMessage) -> None:
        """``_publish``, so that a message that fails in a way not foreseen costs only itself.

        The other messages due in the same tick are still published, and the replay goes on.
        """
        try:
            self._publish(raw)
        except Exception as exc:  # noqa: BLE001 - the bag's bytes are untrusted
            self.corrupt[raw.topic] = self.corrupt.get(raw.topic, 0) + 1
            self.get_logger().error(
                f"skipped a {raw.msgtype} message on '{raw.topic}' at log time {raw.log_ns} ns "
                f"that failed to play ({type(exc).__name__}: {exc})",
                throttle_duration_sec=5.0,
            )

    def _publish(self, raw: RawMessage) -> None:
        entry = self._topic_pubs.get(raw.topic)
        if entry is None:
            self.skipped[raw.topic] = self.skipped.get(raw.topic, 0) + 1
            return
        publisher, cls = entry
        try:
            msg: Any = deserialize_message(raw.data, cls)
        except Exception as exc:  # rclpy raises its own RMWError; the bag's bytes are untrusted
            self.corrupt[raw.topic] = self.corrupt.get(raw.topic, 0) + 1
            self.get_logger().warning(
                f"skipped a corrupt {raw.msgtype} message on '{raw.topic}' at log time "
                f"{raw.log_ns} ns ({exc})",
                throttle_duration_sec=5.0,
            )
            return
        if raw.topic in self._tf_topics:
            msg = self._transforms_to_play(raw.topic, msg)
            if msg is None:
                return
        publisher.publish(msg)
        self.published[raw.topic] += 1
        raw_topic = self._decoded.get(raw.topic)
        if raw_topic is not None:
            self._publish_decoded(raw.topic, raw_topic, msg)

    def _transforms_to_play(self, topic: str, msg: Any) -> Any | None:
        """A TF message as played: without the excluded frames, a static one with all before.

        None when nothing is left to publish.
        """
        kept = []
        for transform in msg.transforms:
            child = str(transform.child_frame_id).strip("/")
            if child in self.excluded_frames:
                self.transforms_not_played[child] = self.transforms_not_played.get(child, 0) + 1
            else:
                kept.append(transform)
        if self._tf_topics[topic]:
            played = self._static_tf.setdefault(topic, {})
            played.update((str(t.child_frame_id).strip("/"), t) for t in kept)
            kept = list(played.values())
        if not kept:
            return None
        msg.transforms = kept
        return msg

    def _publish_decoded(self, topic: str, raw_topic: str, msg: CompressedImage) -> None:
        try:
            pixels, encoding = decode_compressed(msg.format, bytes(msg.data))
            image = array_to_image(
                pixels, encoding, stamp_to_ns(msg.header.stamp), msg.header.frame_id
            )
        except IphdError as exc:
            self.undecodable[topic] = self.undecodable.get(topic, 0) + 1
            self.get_logger().warning(
                f"cannot decode a compressed image of '{topic}', so {raw_topic} misses it: "
                f"{exc}",
                throttle_duration_sec=5.0,
            )
            return
        self._topic_pubs[raw_topic][0].publish(image)
        self.published[raw_topic] += 1

    def _publish_clock(self) -> None:
        if self._clock_pub is not None:
            self._clock_pub.publish(ClockMsg(clock=ns_to_stamp(self.bag_time_ns())))

    # -- reporting -----------------------------------------------------------------------------

    def _summary(self) -> str:
        total = sum(self.published.values())
        text = f"published {total} messages in {time.monotonic() - self._wall_start:.1f} s"
        skipped = {t: n for t, n in self.skipped.items() if n}
        corrupt = {t: n for t, n in self.all_corrupt().items() if n}
        if skipped:
            text += f", skipped (type not installed) {skipped}"
        if corrupt:
            text += f", corrupt {corrupt}"
        if self.undecodable:
            text += f", compressed images that did not decode {self.undecodable}"
        return text

    def all_corrupt(self) -> dict[str, int]:
        """Messages lost per topic.

        Those that did not deserialize (``corrupt``) and those of damaged storage chunks (the
        bag reader's count).
        """
        merged = dict(self.corrupt)
        for topic, count in self._reader.corrupt.items():
            merged[topic] = merged.get(topic, 0) + count
        return merged

    def stats(self) -> dict[str, Any]:
        """Counters for diagnostics and the runner's summary."""
        duration_s = self._reader.duration_ns / 1e9
        position_s = (self.bag_time_ns() - self._playback.start_ns) / 1e9
        values: dict[str, Any] = {
            "bag": self.bag_path,
            "position_s": position_s,
            "duration_s": duration_s,
            "loops": self.loops,
            "started": self.started,
            "finished": self.finished,
            "published": sum(self.published.values()),
        }
        values.update({f"published_{t}": n for t, n in self.published.items()})
        if self.excluded:
            values["not_played"] = ", ".join(self.excluded)
        if self.transforms_not_played:
            values["transforms_not_played"] = ", ".join(
                f"{frame} ({n})" for frame, n in sorted(self.transforms_not_played.items())
            )
        values.update({f"skipped_{t}": n for t, n in self.skipped.items()})
        values.update({f"corrupt_{t}": n for t, n in self.all_corrupt().items()})
        values.update({f"undecodable_{t}": n for t, n in self.undecodable.items()})
        for name, cut in self._reader.cut_off:
            values[f"cut_off_{name}"] = cut.describe()
        for name, why in self._reader.unreadable_files:
            values[f"left_out_{name}"] = why
        for i, gap in enumerate(self._reader.gaps):
            values[f"storage_gap_{i}"] = gap.describe()
        for log in self._reader.wal_logs:
            values[f"write_ahead_log_{log.file}"] = wal_text(log)
        for rebuilt in self._reader.rebuilt:
            values[f"rebuilt_{rebuilt.file}"] = rebuilt.describe()
        return values

    def _publish_diagnostics(self) -> None:
        level, message = "OK", "playing"
        if self.finished:
            message = "end of bag"
        elif not self._playback.started:
            message = "waiting to start"
        if any(self.all_corrupt().values()) or self.undecodable:
            level, message = "WARN", f"{message}; corrupt messages skipped"
        elif self.skipped:
            level = "WARN"
            message = f"{message}; topics of types not installed are skipped"
        if self._reader.cut_off:
            level = "WARN"
            message = f"{message}; the recording was cut off, its end is lost"
        if self._reader.unreadable_files:
            level = "WARN"
            message = f"{message}; files of the recording that do not open are left out"
        if self._reader.gaps:
            level = "WARN"
            message = f"{message}; parts of the storage that fail were skipped"
        if self._reader.rebuilt:
            level = "WARN"
            message = f"{message}; a damaged file was read from the rows that still read"
        if any(log.error for log in self._reader.wal_logs):
            level = "WARN"
            message = f"{message}; messages left in a write-ahead log are not read"
        self._diag_pub.publish(diagnostic_array(self, "bag_player", level, message, self.stats()))

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
        """Wait until every matched reliable subscriber acknowledged what was published.

        A player that exits right after its last publish loses the messages other processes
        have not acknowledged yet (the bag's last frames). Returns False when ``timeout_s``
        (for all topics together) ran out first.
        """
        deadline = time.monotonic() + float(timeout_s)
        pubs = [pub for pub, _ in self._topic_pubs.values()]
        for pub in [*pubs, *([self._clock_pub] if self._clock_pub is not None else [])]:
            left = deadline - time.monotonic()
            if left <= 0.0 or not pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))):
                return False
        return True

    def close(self) -> None:
        """Close the bag (idempotent)."""
        self._reader.close()
        self._undo_logs()


def decoded_topics(
    msgtypes: dict[str, str], depth_images: Sequence[str] = ()
) -> dict[str, str]:
    """Compressed image topics -> the raw topic to publish them decoded on.

    ``msgtypes`` maps a bag's topics to their types. A ``sensor_msgs/msg/CompressedImage`` on
    ``<image>/compressed`` or ``<image>/compressedDepth`` is decoded onto ``<image>`` unless
    the bag has ``<image>`` itself; of two transports of one image, a depth image (one of
    ``depth_images``, as the offline tools take ``--depth-topic``, or ``depth`` in its name)
    takes ``compressedDepth``, any other ``compressed`` (``iphd.transports.transport_topics``).
    """
    depth_names = {name.strip("/") for name in depth_images}
    decoded: dict[str, str] = {}
    for topic, msgtype in sorted(msgtypes.items()):
        raw_topic = base_topic(topic)
        if msgtype != COMPRESSED_IMAGE or raw_topic == topic or raw_topic in msgtypes:
            continue
        if raw_topic in decoded.values():
            continue
        depth = raw_topic.strip("/") in depth_names or "depth" in raw_topic.lower()
        preferred = transport_topics(raw_topic, depth=depth)
        chosen = next(t for t in preferred if msgtypes.get(t) == COMPRESSED_IMAGE)
        decoded[chosen] = raw_topic
    return decoded


def name_list(value: Any, parameter: str) -> list[str]:
    """A list-of-strings parameter's value (an empty one may arrive as an empty byte array).

    Raises:
        ConfigError: a single string or anything else than a list of strings.
    """
    if value is None or (isinstance(value, bytes | bytearray | list | tuple) and not value):
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"'{parameter}' must be a list of strings, got {value!r} (in a parameters file: "
            f"{parameter}: [\"a\", \"b\"]; on the command line: -p {parameter}:=\"['a']\")"
        )
    return list(value)


def parse_subscriber_counts(entries: list[Any]) -> dict[str, int]:
    """``["topic:count", ...]`` -> ``{topic: count}`` (the ``wait_for_subscribers`` parameter).

    Raises:
        ConfigError: an entry that is not ``topic:count`` with a count >= 1.
    """
    counts: dict[str, int] = {}
    for entry in entries:
        topic, _, count = str(entry).rpartition(":")
        if not topic or not count.isdigit() or int(count) < 1:
            raise ConfigError(
                f"wait_for_subscribers entries must be 'topic:count' with a count >= 1, got "
                f"{entry!r}"
            )
        counts[topic] = int(count)
    return counts


def main(args: list[str] | None = None) -> None:
    """Play a bag until its end (or Ctrl-C with ``loop``), then wait for its last deliveries."""

    def done(node: Node) -> bool:
        if not getattr(node, "finished", False):
            return False
        if not node.drain():  # type: ignore[attr-defined]
            node.get_logger().warning(
                f"end of bag: a subscriber did not acknowledge the last messages within "
                f"{DRAIN_TIMEOUT_S:g} s; it may miss them"
            )
        return True

    spin_node(BagPlayerNode, args, done=done)
