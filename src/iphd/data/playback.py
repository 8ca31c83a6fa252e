"""Paces a bag's messages at their recorded rhythm against a wall clock (the bag player's core)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from iphd.errors import ConfigError, DatasetError

from .rosbag import BagReader, RawMessage, tf_topics


@dataclass(frozen=True)
class PlaybackConfig:
    """How a bag is played.

    Attributes:
        rate: playback speed relative to the recording (2.0 = twice as fast).
        loop: start again from ``start_offset_s`` at the end of the bag.
        start_offset_s: seconds of the bag skipped at the start (latched topics such as
            ``/tf_static`` recorded before that point are still released first).
        topics: topics to play; empty = every topic of the bag.
        max_per_step: most messages one ``due`` call releases, so that a caller that fell
            behind catches up over several steps instead of blocking in one.
    """

    rate: float = 1.0
    loop: bool = False
    start_offset_s: float = 0.0
    topics: tuple[str, ...] = ()
    max_per_step: int = 50

    def __post_init__(self) -> None:
        """Reject values that cannot be played."""
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ConfigError(f"playback rate must be a positive number, got {self.rate}")
        if not (math.isfinite(self.start_offset_s) and self.start_offset_s >= 0):
            raise ConfigError(
                f"start_offset_s must be a number >= 0 seconds, got {self.start_offset_s}"
            )
        if self.max_per_step < 1:
            raise ConfigError(f"max_per_step must be >= 1, got {self.max_per_step}")


class BagPlayback:
    """Releases a bag's raw messages when their log time is due on a caller-supplied clock.

    Bag time ``start_ns`` (the bag's first log time plus the offset) is anchored to the wall
    time given to ``start``; a message with log time ``t`` is due at wall time
    ``anchor + (t - start_ns) / rate``. ``bag_time_ns`` is the playback position, the time a
    player publishes on ``/clock`` so that recorded stamps and sim time agree. At most one
    message is read ahead of the position.

    Raises:
        DatasetError: the bag is empty, the offset is past its end, or a requested topic is
            not in it.
    """

    def __init__(self, reader: BagReader, config: PlaybackConfig | None = None) -> None:
        self.reader = reader
        self.config = config or PlaybackConfig()
        if reader.message_count == 0:
            raise DatasetError(f"bag {reader.path} has no messages to play")
        offset_ns = int(round(self.config.start_offset_s * 1e9))
        if offset_ns > reader.duration_ns:
            raise DatasetError(
                f"start_offset_s {self.config.start_offset_s} is past the end of {reader.path} "
                f"({reader.duration_ns / 1e9:.3f} s long)"
            )
        bag_topics = reader.topics
        self.topics = self.config.topics or tuple(sorted(bag_topics))
        missing = sorted(set(self.topics) - set(bag_topics))
        if missing:
            raise DatasetError(
                f"{reader.path} has no topic {', '.join(missing)}; it has "
                f"{', '.join(sorted(bag_topics))}"
            )
        # A static TF topic counts as latched even where the bag stored no QoS, as the bag
        # player node publishes it: tf2's static broadcaster always latches it.
        static_tf = tf_topics(bag_topics)
        self._latched = tuple(
            t for t in self.topics if bag_topics[t].latched or static_tf.get(t, False)
        )
        self.start_ns = reader.start_ns + offset_ns
        self.end_ns = reader.end_ns
        self.loops = 0
        self.finished = False
        self._anchor_ns: int | None = None
        self._messages: Iterator[RawMessage] = iter(())
        self._next: RawMessage | None = None

    @property
    def started(self) -> bool:
        """True once ``start`` was called."""
        return self._anchor_ns is not None

    def start(self, now_ns: int) -> list[RawMessage]:
        """Anchor the start of the bag to wall time ``now_ns``.

        Returns:
            Messages of latched topics logged before the start offset, to publish first.
        """
        self._anchor_ns = int(now_ns)
        early: list[RawMessage] = []
        if self._latched and self.start_ns > self.reader.start_ns:
            early = list(self.reader.raw_messages(self._latched, stop_ns=self.start_ns))
        self._open()
        return early

    def _open(self) -> None:
        self._messages = self.reader.raw_messages(self.topics, start_ns=self.start_ns)
        self._next = next(self._messages, None)

    def bag_time_ns(self, now_ns: int) -> int:
        """Playback position at wall time ``now_ns``: a bag time in [start_ns, end_ns]."""
        if self._anchor_ns is None:
            return self.start_ns
        if self.finished:
            return self.end_ns
        position = self.start_ns + int((now_ns - self._anchor_ns) * self.config.rate)
        return min(max(position, self.start_ns), self.end_ns)

    def due(self, now_ns: int) -> list[RawMessage]:
        """Return the messages due by wall time ``now_ns`` (at most ``max_per_step``).

        At the end of the bag ``finished`` becomes true, or, with ``loop``, playback starts
        again from ``start_ns`` anchored at ``now_ns`` and ``loops`` counts up.
        """
        if self._anchor_ns is None or self.finished:
            return []
        out: list[RawMessage] = []
        position = self.start_ns + (now_ns - self._anchor_ns) * self.config.rate
        while self._next is not None and len(out) < self.config.max_per_step:
            if self._next.log_ns > position:
                return out
            out.append(self._next)
            self._next = next(self._messages, None)
        if self._next is None:
            if self.config.loop:
                self.loops += 1
                self._anchor_ns = int(now_ns)
                self._open()
            else:
                self.finished = True
        return out
