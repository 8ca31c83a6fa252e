"""Collects what a running graph publishes (detections, tracks) for scoring, first bag pass only."""

from __future__ import annotations

from typing import Any

import numpy as np

from iphd.eval.bag_eval import DETECTIONS, LIVE_STAGES, TRACKS, RecordedFrames

_STAGE = {DETECTIONS: LIVE_STAGES[0], TRACKS: LIVE_STAGES[1]}


class LiveRecorder:
    """Keeps a live graph's ``detections`` and ``tracks`` as plain data, with receipt times.

    A looping bag (``source:=sim``) plays the same stamps again and sends ``/clock`` back, so
    two things are tracked explicitly. A topic's *pass* goes up when its stamp goes backwards;
    only pass 0 (the first play of the bag) is kept for scoring, later messages are counted in
    ``frames.skipped`` as ``<topic>_after_first_pass``. The clock's *epoch* goes up when the
    receipt clock goes backwards; a delay is measured only when the message's pass equals the
    clock's epoch, so a message of the first pass received after ``/clock`` jumped back gives no
    (negative) delay.

    Attributes:
        frames: what is scored: first-pass messages, their delays in ``frames.latency_ms``
            (``LIVE_STAGES``, ms).
        latency_all_ms: topic -> delays of every pass, ms (benchmarks over a looping bag).
        received: topic -> messages received (every pass).
        first_wall_s: topic -> wall time of the first message (``time.monotonic``).
        last_wall_s: topic -> wall time of the last message.
        clock_jumps: times the receipt clock went backwards.
    """

    def __init__(self) -> None:
        self.frames = RecordedFrames()
        self.latency_all_ms: dict[str, list[float]] = {DETECTIONS: [], TRACKS: []}
        self.received: dict[str, int] = {DETECTIONS: 0, TRACKS: 0}
        self.first_wall_s: dict[str, float] = {}
        self.last_wall_s: dict[str, float] = {}
        self.clock_jumps = 0
        self._epoch = 0
        self._last_now_ns: int | None = None
        self._pass: dict[str, int] = {DETECTIONS: 0, TRACKS: 0}
        self._last_stamp: dict[str, int] = {}

    def _observe(self, topic: str, stamp_ns: int, now_ns: int | None, wall_s: float) -> bool:
        """Update passes, epochs and delays; return whether the message is in the first pass."""
        self.received[topic] += 1
        self.first_wall_s.setdefault(topic, wall_s)
        self.last_wall_s[topic] = wall_s
        last = self._last_stamp.get(topic)
        if last is not None and stamp_ns <= last:
            self._pass[topic] += 1
        self._last_stamp[topic] = stamp_ns
        # A clock that has not started (sim time before the first /clock) reads 0: no delay.
        if now_ns is not None and now_ns > 0:
            if self._last_now_ns is not None and now_ns < self._last_now_ns:
                self._epoch += 1
                self.clock_jumps += 1
            self._last_now_ns = now_ns
            if self._pass[topic] == self._epoch:
                delay_ms = (now_ns - stamp_ns) / 1e6
                self.latency_all_ms[topic].append(delay_ms)
                if self._pass[topic] == 0:
                    self.frames.add_latency(_STAGE[topic], delay_ms)
        first = self._pass[topic] == 0
        if not first:
            key = f"{topic}_after_first_pass"
            self.frames.skipped[key] = self.frames.skipped.get(key, 0) + 1
        return first

    def on_detections(
        self, stamp_ns: int, rows: np.ndarray, image_height: int, now_ns: int | None,
        wall_s: float, positions: np.ndarray | None = None,
    ) -> None:
        """One ``detections`` message: (N, 5) rows, the image height, receipt times.

        Args:
            stamp_ns: header stamp.
            rows: ``[x1, y1, x2, y2, score]`` per detection, depth pixels.
            image_height: depth image height, rows.
            now_ns: receipt time on the clock of the stamps (None: not comparable, no delay).
            wall_s: receipt time on ``time.monotonic``, s.
            positions: (N, 3) positions of the detections, metres (NaN where none), or None.
        """
        if self._observe(DETECTIONS, stamp_ns, now_ns, wall_s):
            self.frames.add_detections(stamp_ns, rows, image_height, positions)

    def on_tracks(
        self, stamp_ns: int, tracks: list[tuple[int, str, Any]], now_ns: int | None,
        wall_s: float,
    ) -> None:
        """One ``tracks`` message: (id, state, box or None) per track, receipt times."""
        if self._observe(TRACKS, stamp_ns, now_ns, wall_s):
            self.frames.tracks.append((int(stamp_ns), tracks))

    def rate_hz(self, topic: str) -> float:
        """Messages per second of ``topic`` between its first and last receipt (0 if < 2)."""
        n = self.received[topic]
        span = self.last_wall_s.get(topic, 0.0) - self.first_wall_s.get(topic, 0.0)
        return (n - 1) / span if n > 1 and span > 0 else 0.0
