"""Pure helpers for sensor drivers: capture-time mapping into ROS time and reconnect back-off."""

from __future__ import annotations

from collections import deque

HARDWARE_CLOCK = "hardware_clock"
SYSTEM_TIME = "system_time"
GLOBAL_TIME = "global_time"
TIMESTAMP_DOMAINS = (HARDWARE_CLOCK, SYSTEM_TIME, GLOBAL_TIME)


def ms_to_ns(stamp_ms: float) -> int:
    """Convert a millisecond timestamp to integer nanoseconds at microsecond resolution.

    Rounding to whole microseconds first keeps epoch-sized stamps (~1.7e12 ms) exact: a direct
    ``stamp_ms * 1e6`` would exceed the 53-bit float mantissa and jitter by hundreds of ns.
    """
    return int(round(stamp_ms * 1_000.0)) * 1_000


class ClockMapper:
    """Map frame timestamps (milliseconds in a librealsense timestamp domain) to ROS time in ns.

    Rules, applied per frame in this order:

    * ``rebase=True`` (recording playback): the first frame's stamp is mapped to the host time at
      which it was read and every later frame keeps its recorded spacing from that one, whatever
      the recorded domain, so a replay looks like a live camera started now.
    * ``system_time`` and ``global_time``: the stamp already is milliseconds on the host's system
      clock (``global_time`` is librealsense's own device-to-host mapping), and a robot's ROS
      clock is its system clock, so the stamp converts to ns directly.
    * ``hardware_clock``: milliseconds on the device's own free-running clock. The offset added
      to a stamp is the smallest ``host_ns - device_ns`` of the frames of the last ``window_ns``
      of device time: the device-to-host offset plus the lowest transport latency of those
      frames (a bias of about a millisecond, which the rig calibration's clock offset
      absorbs). Taken over a sliding window it follows the drift of the device's crystal
      (50 ppm is 3 ms a minute) instead of letting it grow past the pairing's 20 ms. When a
      mapped stamp is more than ``max_skew_ns`` from the host receive time (device clock wrap
      or reset, a reconnect), the window starts again and ``resyncs`` counts it.

    Args:
        rebase: re-base recorded stamps to the host time of the first frame (playback).
        max_skew_ns: largest tolerated ``|mapped - host|`` in the ``hardware_clock`` domain.
        window_ns: device time over which the ``hardware_clock`` offset is taken.

    Raises:
        ValueError: when ``max_skew_ns`` or ``window_ns`` is not positive.
    """

    def __init__(
        self, *, rebase: bool = False, max_skew_ns: int = 1_000_000_000,
        window_ns: int = 10_000_000_000,
    ) -> None:
        if max_skew_ns <= 0:
            raise ValueError(f"max_skew_ns must be > 0, got {max_skew_ns}")
        if window_ns <= 0:
            raise ValueError(f"window_ns must be > 0, got {window_ns}")
        self.rebase = rebase
        self.max_skew_ns = max_skew_ns
        self.window_ns = window_ns
        self.resyncs = 0
        self._offset_ns: int | None = None
        # (device_ns, host_ns - device_ns) of the window's frames, offsets rising: the first
        # is the window's smallest.
        self._offsets: deque[tuple[int, int]] = deque()

    @property
    def offset_ns(self) -> int | None:
        """Offset added to device stamps in ns, or None before the first frame (or when unused)."""
        return self._offset_ns

    def reset(self) -> None:
        """Forget the learned offset (call after reopening a device or restarting a replay)."""
        self._offset_ns = None
        self._offsets.clear()

    def map(self, stamp_ms: float, domain: str, host_ns: int) -> int:
        """Return the ROS time in ns of a frame.

        Args:
            stamp_ms: the frame's timestamp in milliseconds.
            domain: one of ``hardware_clock``, ``system_time``, ``global_time``.
            host_ns: host system time in ns at which the frame was received.

        Raises:
            ValueError: for an unknown timestamp domain.
        """
        if domain not in TIMESTAMP_DOMAINS:
            raise ValueError(
                f"unknown timestamp domain {domain!r}; "
                f"expected one of {', '.join(TIMESTAMP_DOMAINS)}"
            )
        device_ns = ms_to_ns(stamp_ms)
        if self.rebase:
            if self._offset_ns is None:
                self._offset_ns = host_ns - device_ns
            return device_ns + self._offset_ns
        if domain != HARDWARE_CLOCK:
            return device_ns
        offset = host_ns - device_ns
        offsets = self._offsets
        if self._offset_ns is not None and abs(device_ns + self._offset_ns - host_ns) > (
            self.max_skew_ns
        ):
            offsets.clear()
            self.resyncs += 1
        while offsets and offsets[-1][1] >= offset:
            offsets.pop()
        offsets.append((device_ns, offset))
        while offsets[0][0] < device_ns - self.window_ns:
            offsets.popleft()
        self._offset_ns = offsets[0][1]
        return device_ns + self._offset_ns


class Backoff:
    """Exponential back-off delays for reconnect loops: initial, initial*factor, ... capped at max.

    Args:
        initial_s: first delay in seconds.
        max_s: largest delay in seconds.
        factor: growth factor per attempt (>= 1).

    Raises:
        ValueError: naming the bad value.
    """

    def __init__(self, initial_s: float = 0.5, max_s: float = 8.0, factor: float = 2.0) -> None:
        if not initial_s > 0:
            raise ValueError(f"initial_s must be > 0 seconds, got {initial_s}")
        if not max_s >= initial_s:
            raise ValueError(f"max_s must be >= initial_s ({initial_s}), got {max_s}")
        if not factor >= 1.0:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self.attempts = 0
        self._next_s = initial_s

    def next_delay(self) -> float:
        """Return the delay before the next attempt and advance the schedule."""
        delay = self._next_s
        self._next_s = min(delay * self.factor, self.max_s)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Start over from ``initial_s`` (call after a success)."""
        self.attempts = 0
        self._next_s = self.initial_s
