"""Thermal-driven depth/thermal pairing policy: pure, deterministic and generic over the payload."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from iphd.calibration import RigCalibration

D = TypeVar("D")
T = TypeVar("T")

#: Reasons a thermal frame can leave the synchronizer without a pair.
THERMAL_DROP_REASONS = (
    "no_depth_within_skew",
    "duplicate",
    "late",
    "buffer_overflow",
    "clock_jump",
    "reset",
)
#: Reasons a depth frame can be rejected or evicted (unpaired depth frames that simply were not
#: the nearest to any thermal frame are counted in ``SyncStats.depth_unused`` instead).
DEPTH_DROP_REASONS = ("duplicate", "late", "buffer_overflow", "clock_jump", "reset")
#: Thermal stamps this far from those of the depth frames that arrive with them are on another
#: clock, not late by a latency to calibrate (a Lepton's is about 0.1 s).
TWO_CLOCKS_NS = 1_000_000_000


@dataclass(frozen=True)
class SyncConfig:
    """Pairing policy parameters; all times in nanoseconds on the depth clock.

    Attributes:
        thermal_offset_ns: added to every thermal stamp to express it on the depth clock
            (``RigCalibration.thermal_clock_offset_ns``).
        max_skew_ns: largest accepted |depth stamp - (thermal stamp + offset)|; a thermal frame
            whose nearest depth frame is farther away is dropped (``no_depth_within_skew``).
        depth_buffer: depth frames kept while waiting for thermal; must cover the thermal
            stream's extra latency (30 frames = 1 s at 30 Hz).
        thermal_buffer: thermal frames kept while waiting for depth.
        max_wait_ns: how long a thermal frame waits for a depth frame at or after its target
            time, measured with the synchronizer's clock (the newest stamp seen on either
            stream, on the depth clock); after that it is decided with the depth frames present.
        clock_jump_ns: a stamp this far behind the newest stamp of its own stream is a backward
            clock jump (a looping bag, a restarted driver): all buffers are reset.
    """

    thermal_offset_ns: int = 0
    max_skew_ns: int = 20_000_000
    depth_buffer: int = 30
    thermal_buffer: int = 10
    max_wait_ns: int = 200_000_000
    clock_jump_ns: int = 1_000_000_000

    def __post_init__(self) -> None:
        """Reject values that cannot give a working policy."""
        for name in ("thermal_offset_ns", "max_skew_ns", "depth_buffer", "thermal_buffer",
                     "max_wait_ns", "clock_jump_ns"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"SyncConfig.{name} must be an integer, got {value!r}")
        if self.max_skew_ns <= 0:
            raise ValueError(f"SyncConfig.max_skew_ns must be > 0 ns, got {self.max_skew_ns}")
        if self.depth_buffer < 1:
            raise ValueError(f"SyncConfig.depth_buffer must be >= 1, got {self.depth_buffer}")
        if self.thermal_buffer < 1:
            raise ValueError(f"SyncConfig.thermal_buffer must be >= 1, got {self.thermal_buffer}")
        if self.max_wait_ns < 0:
            raise ValueError(f"SyncConfig.max_wait_ns must be >= 0 ns, got {self.max_wait_ns}")
        if self.clock_jump_ns <= max(self.max_wait_ns, self.max_skew_ns):
            raise ValueError(
                f"SyncConfig.clock_jump_ns = {self.clock_jump_ns} must exceed max_wait_ns "
                f"({self.max_wait_ns}) and max_skew_ns ({self.max_skew_ns}), otherwise normal "
                "reordering would be taken for a clock jump"
            )

    @classmethod
    def from_calibration(cls, calibration: RigCalibration, **overrides: int) -> SyncConfig:
        """Return a config whose thermal offset comes from the rig calibration."""
        return cls(thermal_offset_ns=calibration.thermal_clock_offset_ns, **overrides)


@dataclass(frozen=True)
class Pair(Generic[D, T]):
    """One depth frame matched with one thermal frame.

    Attributes:
        depth_stamp_ns: stamp of the depth frame; the stamp of everything published for the pair.
        thermal_stamp_ns: stamp of the thermal frame on its own clock (as pushed).
        depth: the depth payload.
        thermal: the thermal payload.
        skew_ns: ``depth_stamp_ns - (thermal_stamp_ns + thermal_offset_ns)``.
    """

    depth_stamp_ns: int
    thermal_stamp_ns: int
    depth: D
    thermal: T
    skew_ns: int


@dataclass
class SyncStats:
    """Running counters of a ``Synchronizer`` (for diagnostics).

    Invariants: ``depth_in = pairs + sum(depth_dropped) + depth_unused + depth buffered`` and
    ``thermal_in = pairs + sum(thermal_dropped) + thermal buffered``.

    Attributes:
        depth_in: depth frames pushed.
        thermal_in: thermal frames pushed.
        pairs: pairs emitted.
        thermal_dropped: thermal frames that left without a pair, by reason.
        depth_dropped: depth frames rejected on arrival or evicted, by reason.
        depth_unused: depth frames discarded because no thermal frame can pick them any more
            (normal: depth runs at 30 Hz, thermal below 9 Hz).
        resets: buffer resets (backward clock jumps and explicit ``reset()`` calls).
        last_skew_ns: skew of the last pair, None before the first pair.
        unpaired_run: thermal frames dropped as ``no_depth_within_skew`` since the last pair
            (or the start): a long run means no pair is being made at all.
        unpaired_skew_ns: for the last of them, the newest depth stamp pushed before it minus
            its target (as ``Pair.skew_ns``): how far apart the two clocks stamp frames that
            arrive together. None before such a drop, or when no depth frame had come.
    """

    depth_in: int = 0
    thermal_in: int = 0
    pairs: int = 0
    thermal_dropped: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(THERMAL_DROP_REASONS, 0)
    )
    depth_dropped: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(DEPTH_DROP_REASONS, 0)
    )
    depth_unused: int = 0
    resets: int = 0
    last_skew_ns: int | None = None
    unpaired_run: int = 0
    unpaired_skew_ns: int | None = None

    @property
    def thermal_drop_fraction(self) -> float:
        """Fraction of pushed thermal frames dropped so far (0 before any thermal frame)."""
        return sum(self.thermal_dropped.values()) / self.thermal_in if self.thermal_in else 0.0


def unpaired_reason(skew_ns: int | None) -> str:
    """Why thermal frames found no depth partner, and what to change (for logs, diagnostics).

    Args:
        skew_ns: ``SyncStats.unpaired_skew_ns`` (newest depth stamp minus thermal target).
    """
    if skew_ns is None:
        return "no depth frame had come before them"
    apart = abs(skew_ns)
    text = (f"the last of them is stamped {_duration(apart)} "
            f"{'before' if skew_ns > 0 else 'after'} the depth frame that came with it")
    if apart >= TWO_CLOCKS_NS:
        return (f"{text}, so the drivers stamp on two clocks: both must stamp in ROS time on "
                "one clock (with use_sim_time, both on /clock)")
    return (f"{text}: if the two drivers' stamps are that far apart all the time, add "
            f"{skew_ns / 1e9:+.3f} s to clock.thermal_offset_s in the rig calibration "
            "(iphd-calibrate measures it); if not, depth frames are missing around it: check "
            "the depth stream's rate and drops")


def _duration(ns: int) -> str:
    return f"{ns / 1e9:.3f} s" if ns >= 1_000_000_000 else f"{ns / 1e6:.0f} ms"


class Synchronizer(Generic[D, T]):
    """Pairs each thermal frame with the nearest unused depth frame, once that choice is final.

    Rules:
        * A thermal frame's target is ``stamp + thermal_offset_ns`` on the depth clock. Its
          choice is final when a depth frame at or after the target is buffered, or when the
          synchronizer clock (newest stamp seen on either stream) is ``max_wait_ns`` past it.
        * Pending thermal frames are decided in target order. The chosen depth frame is the
          nearest buffered one (a tie goes to the earlier depth frame); the pair is emitted if
          |skew| <= ``max_skew_ns``, otherwise the thermal frame is dropped
          (``no_depth_within_skew``).
        * Emitted depth stamps strictly increase: each depth frame is used at most once and
          depth frames older than a used one are discarded, so a stamp is never published twice
          and downstream consumers see time move forward.
        * Thermal frames at or before an already decided target are ``duplicate`` / ``late``;
          a thermal stamp already pending is a ``duplicate``. Depth frames with a stamp already
          buffered or used are ``duplicate``; depth frames that can no longer be chosen (older
          than the last used depth frame, or more than ``max_skew_ns`` before the last decided
          target) are ``late``.
        * Buffers are bounded: the oldest frame is evicted (``buffer_overflow``).
        * A stamp more than ``clock_jump_ns`` behind the newest stamp of its stream resets both
          buffers (``clock_jump``); the frame then starts the new timeline. A frame of the other
          stream that comes just after, stamped more than ``clock_jump_ns`` after that start
          (one of the old timeline whose callback ran late: two streams' callbacks interleave
          at a bag's loop), is dropped as ``clock_jump`` too, until the jumped stream is
          ``max_wait_ns`` into its new timeline; otherwise it would hold the old timeline and
          reset the buffers a second time, losing the new timeline's first pair. Forward jumps
          need no special case: ``max_wait_ns`` decides old pending frames and the skew test
          drops them.

    All methods return the pairs that became final, oldest first. The class keeps no wall-clock
    state, so the same pushes always give the same pairs.
    """

    def __init__(self, config: SyncConfig | None = None) -> None:
        self.config = config if config is not None else SyncConfig()
        self.stats = SyncStats()
        self._depth_stamps: list[int] = []
        self._depth_items: list[D] = []
        self._th_targets: list[int] = []
        self._th_stamps: list[int] = []
        self._th_items: list[T] = []
        # Per pending thermal frame: the newest depth stamp pushed before it minus its target.
        self._th_arrival_skews: list[int | None] = []
        self._clear_state()

    def _clear_state(self) -> None:
        self._depth_stamps.clear()
        self._depth_items.clear()
        self._th_targets.clear()
        self._th_stamps.clear()
        self._th_items.clear()
        self._th_arrival_skews.clear()
        self._newest_depth: int | None = None
        self._latest_depth: int | None = None  # of every depth frame pushed, kept or not
        self._newest_target: int | None = None
        self._last_used_depth: int | None = None
        self._last_decided_target: int | None = None
        # After a backward jump: the stream that jumped and the stamp (target) it jumped to.
        self._jumped: tuple[str, int] | None = None

    @property
    def pending_depth(self) -> int:
        """Number of buffered depth frames."""
        return len(self._depth_stamps)

    @property
    def pending_thermal(self) -> int:
        """Number of thermal frames waiting for a decision."""
        return len(self._th_targets)

    def reset(self) -> None:
        """Discard all buffered frames (counted as ``reset``) and forget the timeline."""
        self._reset("reset")

    def _reset(self, reason: str) -> None:
        self.stats.resets += 1
        self.stats.depth_dropped[reason] += len(self._depth_stamps)
        self.stats.thermal_dropped[reason] += len(self._th_targets)
        self._clear_state()

    def push_depth(self, stamp_ns: int, item: D) -> list[Pair[D, T]]:
        """Add a depth frame stamped ``stamp_ns`` (depth clock); return the pairs now final."""
        cfg = self.config
        stats = self.stats
        stats.depth_in += 1
        if self._newest_depth is not None and stamp_ns < self._newest_depth - cfg.clock_jump_ns:
            self._reset("clock_jump")
            self._jumped = ("depth", stamp_ns)
        elif self._straggler("thermal", stamp_ns, self._newest_target):
            stats.depth_dropped["clock_jump"] += 1
            return []
        self._latest_depth = stamp_ns
        stamps = self._depth_stamps
        last_used = self._last_used_depth
        if last_used is not None and stamp_ns <= last_used:
            stats.depth_dropped["duplicate" if stamp_ns == last_used else "late"] += 1
            return []
        decided = self._last_decided_target
        if decided is not None and stamp_ns < decided - cfg.max_skew_ns:
            stats.depth_dropped["late"] += 1
            return []
        i = bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            stats.depth_dropped["duplicate"] += 1
            return []
        stamps.insert(i, stamp_ns)
        self._depth_items.insert(i, item)
        if len(stamps) > cfg.depth_buffer:
            del stamps[0]
            del self._depth_items[0]
            stats.depth_dropped["buffer_overflow"] += 1
        if self._newest_depth is None or stamp_ns > self._newest_depth:
            self._newest_depth = stamp_ns
        return self._decide(final=False) if self._th_targets else []

    def push_thermal(self, stamp_ns: int, item: T) -> list[Pair[D, T]]:
        """Add a thermal frame stamped ``stamp_ns`` (thermal clock); return the pairs now final."""
        cfg = self.config
        stats = self.stats
        stats.thermal_in += 1
        target = stamp_ns + cfg.thermal_offset_ns
        if self._newest_target is not None and target < self._newest_target - cfg.clock_jump_ns:
            self._reset("clock_jump")
            self._jumped = ("thermal", target)
        elif self._straggler("depth", target, self._newest_depth):
            stats.thermal_dropped["clock_jump"] += 1
            return []
        decided = self._last_decided_target
        if decided is not None and target <= decided:
            stats.thermal_dropped["duplicate" if target == decided else "late"] += 1
            return []
        targets = self._th_targets
        i = bisect_left(targets, target)
        if i < len(targets) and targets[i] == target:
            stats.thermal_dropped["duplicate"] += 1
            return []
        targets.insert(i, target)
        self._th_stamps.insert(i, stamp_ns)
        self._th_items.insert(i, item)
        latest = self._latest_depth
        self._th_arrival_skews.insert(i, None if latest is None else latest - target)
        if self._newest_target is None or target > self._newest_target:
            self._newest_target = target
        if len(targets) > cfg.thermal_buffer:
            self._last_decided_target = targets[0]
            del targets[0]
            del self._th_stamps[0]
            del self._th_items[0]
            del self._th_arrival_skews[0]
            stats.thermal_dropped["buffer_overflow"] += 1
        return self._decide(final=False)

    def _straggler(self, jumped: str, stamp_ns: int, newest_jumped: int | None) -> bool:
        """A frame of the timeline before ``jumped``'s backward jump (see ``push_depth``)."""
        if self._jumped is None or self._jumped[0] != jumped:
            return False
        start = self._jumped[1]
        if newest_jumped is not None and newest_jumped > start + self.config.max_wait_ns:
            self._jumped = None  # the new timeline is under way: no more stragglers
            return False
        return stamp_ns > start + self.config.clock_jump_ns

    def flush(self) -> list[Pair[D, T]]:
        """Decide every pending thermal frame with the depth frames present (end of stream)."""
        return self._decide(final=True)

    def _decide(self, final: bool) -> list[Pair[D, T]]:
        cfg = self.config
        stats = self.stats
        stamps = self._depth_stamps
        targets = self._th_targets
        seen = [t for t in (self._newest_depth, self._newest_target) if t is not None]
        now = max(seen) if seen else 0
        out: list[Pair[D, T]] = []
        while targets:
            target = targets[0]
            i = bisect_left(stamps, target)
            if not final and i == len(stamps) and now - target < cfg.max_wait_ns:
                break
            j = i if i < len(stamps) else -1
            if i > 0 and (j < 0 or target - stamps[i - 1] <= stamps[i] - target):
                j = i - 1
            thermal_stamp = self._th_stamps[0]
            thermal_item = self._th_items[0]
            arrival_skew = self._th_arrival_skews[0]
            del targets[0]
            del self._th_stamps[0]
            del self._th_items[0]
            del self._th_arrival_skews[0]
            self._last_decided_target = target
            if j >= 0 and abs(stamps[j] - target) <= cfg.max_skew_ns:
                skew = stamps[j] - target
                out.append(Pair(stamps[j], thermal_stamp, self._depth_items[j], thermal_item, skew))
                stats.pairs += 1
                stats.last_skew_ns = skew
                stats.unpaired_run = 0
                self._last_used_depth = stamps[j]
                stats.depth_unused += j
                del stamps[: j + 1]
                del self._depth_items[: j + 1]
            else:
                stats.thermal_dropped["no_depth_within_skew"] += 1
                stats.unpaired_run += 1
                # None when it came before any depth frame (a start-up, not two clocks apart:
                # librealsense opens more slowly than a PureThermal).
                stats.unpaired_skew_ns = arrival_skew
            k = bisect_left(stamps, target - cfg.max_skew_ns)
            if k:
                stats.depth_unused += k
                del stamps[:k]
                del self._depth_items[:k]
        return out
