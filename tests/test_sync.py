"""Tests of the thermal-driven depth/thermal pairing policy."""

from __future__ import annotations

import re

import numpy as np
import pytest

from iphd.calibration import load_calibration
from iphd.sync import Pair, SyncConfig, Synchronizer, unpaired_reason

MS = 1_000_000


def run(
    sync: Synchronizer[int, int], events: list[tuple[str, int]], flush: bool = True
) -> list[Pair[int, int]]:
    """Push ('d'|'t', stamp) events in order; the payload is the stamp itself."""
    pairs: list[Pair[int, int]] = []
    for kind, stamp in events:
        if kind == "d":
            pairs += sync.push_depth(stamp, stamp)
        else:
            pairs += sync.push_thermal(stamp, stamp)
    if flush:
        pairs += sync.flush()
    return pairs


def check_accounting(sync: Synchronizer[int, int]) -> None:
    s = sync.stats
    assert s.depth_in == (
        s.pairs + sum(s.depth_dropped.values()) + s.depth_unused + sync.pending_depth
    )
    assert s.thermal_in == s.pairs + sum(s.thermal_dropped.values()) + sync.pending_thermal


def realistic_stream(
    seconds: float, offset_ns: int, seed: int
) -> tuple[list[tuple[str, int]], list[int], np.ndarray]:
    """30 Hz depth (+-1 ms jitter) and 8.7 Hz thermal (+-3 ms) ordered by arrival time.

    Returns the events, the thermal true capture times (depth clock) and the depth stamps.
    """
    rng = np.random.default_rng(seed)
    depth = np.array(
        [int(k * 1e9 / 30 + rng.uniform(-1, 1) * MS) for k in range(int(seconds * 30))]
    )
    thermal_true = [
        int(7 * MS + k * 1e9 / 8.7 + rng.uniform(-3, 3) * MS) for k in range(int(seconds * 8.7))
    ]
    arrivals = [(int(s + rng.uniform(3, 12) * MS), "d", int(s)) for s in depth]
    arrivals += [(int(t + rng.uniform(20, 70) * MS), "t", t - offset_ns) for t in thermal_true]
    arrivals.sort()
    return [(kind, stamp) for _, kind, stamp in arrivals], thermal_true, depth


def test_pairs_every_thermal_with_nearest_depth_despite_jitter_offset_and_latency() -> None:
    offset = 250 * MS  # the thermal clock runs 250 ms behind the depth clock
    events, thermal_true, depth = realistic_stream(20.0, offset, seed=3)
    sync: Synchronizer[int, int] = Synchronizer(SyncConfig(thermal_offset_ns=offset))
    pairs = run(sync, events)

    assert len(pairs) == len(thermal_true)
    assert sync.stats.pairs == len(thermal_true)
    assert sum(sync.stats.thermal_dropped.values()) == 0
    for pair, true_ns in zip(pairs, thermal_true, strict=True):
        assert pair.thermal_stamp_ns == true_ns - offset
        expected = int(depth[np.argmin(np.abs(depth - true_ns))])
        assert pair.depth_stamp_ns == expected
        assert pair.depth == expected and pair.thermal == true_ns - offset
        assert pair.skew_ns == expected - true_ns
        assert abs(pair.skew_ns) <= 20 * MS
    stamps = [p.depth_stamp_ns for p in pairs]
    assert stamps == sorted(set(stamps)), "depth stamps must be unique and increasing"
    check_accounting(sync)


def test_pairing_waits_until_a_later_depth_frame_arrives() -> None:
    sync: Synchronizer[int, int] = Synchronizer()
    assert sync.push_depth(0, 0) == []
    assert sync.push_thermal(30 * MS, 1) == []  # depth 33 ms may still come and be nearer
    pairs = sync.push_depth(33 * MS, 33)
    assert [(p.depth_stamp_ns, p.thermal_stamp_ns, p.skew_ns) for p in pairs] == [
        (33 * MS, 30 * MS, 3 * MS)
    ]


def test_thermal_without_depth_within_skew_is_dropped_with_reason() -> None:
    sync: Synchronizer[int, int] = Synchronizer()
    pairs = run(sync, [("d", 0), ("d", 100 * MS), ("t", 50 * MS), ("d", 200 * MS)])
    assert pairs == []
    assert sync.stats.thermal_dropped["no_depth_within_skew"] == 1
    check_accounting(sync)


@pytest.mark.parametrize("clock_apart_ns", [3_000_000_000, -3_000_000_000])
def test_thermal_on_another_clock_is_told_by_how_far_its_stamps_are_from_depths(
    clock_apart_ns: int,
) -> None:
    # A Lepton driver on another host (or not on ROS time): its frames arrive with the depth
    # frames but are stamped 3 s before (after) them, so none finds a partner. The stats say
    # how far apart, from the depth frames that arrived with each, whatever was buffered.
    events, thermal_true, _ = realistic_stream(10.0, clock_apart_ns, seed=5)
    sync: Synchronizer[int, int] = Synchronizer(SyncConfig(max_wait_ns=500 * MS))
    assert run(sync, events) == []
    stats = sync.stats
    assert stats.thermal_dropped["no_depth_within_skew"] == stats.unpaired_run > 70
    assert stats.unpaired_skew_ns is not None
    # The thermal frame arrives 20-70 ms after its capture, the depth frames 3-12 ms after.
    assert clock_apart_ns - 20 * MS < stats.unpaired_skew_ns < clock_apart_ns + 70 * MS
    reason = unpaired_reason(stats.unpaired_skew_ns)
    side = "before" if clock_apart_ns > 0 else "after"
    assert re.match(r"the last of them is stamped "
                    rf"(2\.9|3\.0)\d\d s {side} the depth frame that came with it, so the "
                    "drivers stamp on two clocks", reason)
    assert "ROS time" in reason
    check_accounting(sync)


def test_a_pair_ends_a_run_of_unpaired_thermal_frames() -> None:
    sync: Synchronizer[int, int] = Synchronizer()
    run(sync, [("d", 0), ("d", 100 * MS), ("t", 50 * MS), ("d", 200 * MS)], flush=False)
    assert sync.stats.unpaired_run == 1
    assert sync.stats.unpaired_skew_ns == 50 * MS  # depth 100 ms came before it
    run(sync, [("t", 195 * MS), ("d", 233 * MS)], flush=False)
    assert sync.stats.pairs == 1 and sync.stats.unpaired_run == 0
    assert sync.stats.unpaired_skew_ns == 50 * MS  # the last unpaired frame's, kept


def test_thermal_frames_before_the_first_depth_frame_suggest_no_clock_offset() -> None:
    # The PureThermal opens faster than librealsense: thermal frames come 1.5 s before the
    # first depth frame, then both run on one clock. The lost start is no offset to add.
    sync: Synchronizer[int, int] = Synchronizer()
    thermal = [("t", t * MS) for t in range(0, 2900, 115)]  # 13 of them before 1.5 s
    depth = [("d", (1500 + 33 * i) * MS) for i in range(45)]  # stamps agree within 16 ms
    run(sync, sorted(thermal + depth, key=lambda event: event[1]))
    assert sync.stats.thermal_dropped["no_depth_within_skew"] == 13
    assert sync.stats.unpaired_skew_ns is None
    assert unpaired_reason(sync.stats.unpaired_skew_ns) == "no depth frame had come before them"
    assert sync.stats.pairs > 10
    check_accounting(sync)


def test_the_reason_for_a_small_skew_gives_the_clock_offset_to_add() -> None:
    reason = unpaired_reason(150 * MS)
    assert "stamped 150 ms before the depth frame" in reason
    assert "add +0.150 s to clock.thermal_offset_s" in reason and "two clocks" not in reason
    assert unpaired_reason(-60 * MS).count("add -0.060 s") == 1
    assert unpaired_reason(None) == "no depth frame had come before them"


def test_skew_exactly_at_the_limit_is_accepted() -> None:
    sync: Synchronizer[int, int] = Synchronizer(SyncConfig(max_skew_ns=20 * MS))
    pairs = run(sync, [("t", 80 * MS), ("d", 60 * MS), ("d", 100 * MS)])
    assert [p.depth_stamp_ns for p in pairs] == [60 * MS]  # tie at 20 ms -> the earlier depth
    assert pairs[0].skew_ns == -20 * MS


def test_out_of_order_arrivals_are_inserted_sorted() -> None:
    sync: Synchronizer[int, int] = Synchronizer()
    events = [
        ("d", 0), ("d", 66 * MS), ("d", 33 * MS),  # depth out of order
        ("t", 70 * MS), ("t", 36 * MS),  # thermal out of order, both pending
        ("d", 100 * MS),
    ]
    pairs = run(sync, events, flush=False)
    assert [(p.thermal_stamp_ns, p.depth_stamp_ns) for p in pairs] == [
        (36 * MS, 33 * MS), (70 * MS, 66 * MS)
    ]
    check_accounting(sync)


def test_duplicates_are_dropped_and_counted() -> None:
    sync: Synchronizer[int, int] = Synchronizer()
    events = [
        ("d", 0), ("d", 0),  # duplicate depth in the buffer
        ("t", 2 * MS), ("t", 2 * MS),  # duplicate pending thermal
        ("d", 33 * MS),  # decides thermal 2 ms -> depth 0
        ("t", 2 * MS),  # duplicate of an already decided thermal frame
        ("t", 1 * MS),  # older than a decided one
        ("d", 0),  # depth already used
    ]
    pairs = run(sync, events, flush=False)
    assert [(p.thermal_stamp_ns, p.depth_stamp_ns) for p in pairs] == [(2 * MS, 0)]
    assert sync.stats.depth_dropped["duplicate"] == 2
    assert sync.stats.thermal_dropped["duplicate"] == 2
    assert sync.stats.thermal_dropped["late"] == 1
    check_accounting(sync)


def test_each_depth_frame_is_used_at_most_once() -> None:
    sync: Synchronizer[int, int] = Synchronizer()
    pairs = run(sync, [("d", 0), ("d", 33 * MS), ("t", 31 * MS), ("t", 35 * MS), ("d", 66 * MS)])
    assert [p.depth_stamp_ns for p in pairs] == [33 * MS]
    assert sync.stats.thermal_dropped["no_depth_within_skew"] == 1  # 66 ms is 31 ms away
    check_accounting(sync)


def test_depth_older_than_last_pair_is_late() -> None:
    sync: Synchronizer[int, int] = Synchronizer()
    run(sync, [("d", 100 * MS), ("t", 100 * MS), ("d", 133 * MS)], flush=False)
    assert sync.stats.pairs == 1
    assert sync.push_depth(90 * MS, 90) == []
    assert sync.push_depth(50 * MS, 50) == []
    assert sync.stats.depth_dropped["late"] == 2
    check_accounting(sync)


def test_backward_clock_jump_resets_then_pairing_resumes() -> None:
    sync: Synchronizer[int, int] = Synchronizer()
    loop = [("d", k * 33 * MS) for k in range(60)]
    loop += [("t", k * 111 * MS + MS) for k in range(18)]
    loop.sort(key=lambda e: e[1])
    first = run(sync, loop, flush=False)
    assert len(first) == 18
    pending_before = sync.pending_depth + sync.pending_thermal
    second = run(sync, loop, flush=False)  # the bag loops: stamps jump 2 s back
    assert sync.stats.resets == 1
    dropped = sync.stats.depth_dropped["clock_jump"] + sync.stats.thermal_dropped["clock_jump"]
    assert dropped == pending_before
    assert [p.depth_stamp_ns for p in second] == [p.depth_stamp_ns for p in first]
    check_accounting(sync)


def test_a_frame_of_the_old_timeline_after_a_jump_is_dropped_not_a_second_reset() -> None:
    # A bag loops, and the last thermal frame's callback runs after the new pass's first
    # depth frame: it held the old timeline, and the new pass's first thermal frame then reset
    # the buffers again, losing its own partner as well (50 of 52 pairs instead of 51).
    sync: Synchronizer[int, int] = Synchronizer()
    loop = [("d", k * 33 * MS) for k in range(60)]
    loop += [("t", k * 111 * MS + MS) for k in range(18)]
    loop.sort(key=lambda e: e[1])
    last = max(i for i, (kind, _) in enumerate(loop) if kind == "t")
    first = run(sync, loop[:last] + loop[last + 1:], flush=False)  # the last thermal waits
    assert len(first) == 17
    second = run(sync, [loop[0], loop[last], *loop[1:]], flush=False)
    assert sync.stats.resets == 1 and sync.stats.thermal_dropped["clock_jump"] == 1
    assert len(second) == 18  # every thermal frame of the new pass paired
    check_accounting(sync)


def test_thermal_clock_jump_back_resets() -> None:
    sync: Synchronizer[int, int] = Synchronizer()
    run(sync, [("d", 0), ("t", 5 * 10**9), ("t", 1 * MS)], flush=False)
    assert sync.stats.resets == 1
    assert sync.stats.thermal_dropped["clock_jump"] == 1  # the pending 5 s frame
    assert sync.pending_thermal == 1


def test_forward_jump_does_not_wedge_the_state() -> None:
    sync: Synchronizer[int, int] = Synchronizer()
    events = [("d", 0), ("t", 1 * MS), ("d", 33 * MS)]
    events += [("d", 10**10 + k * 33 * MS) for k in range(10)]  # depth jumps 10 s ahead
    events += [("t", 10**10 + 100 * MS), ("t", 10**10 + 200 * MS)]
    events += [("d", 10**10 + k * 33 * MS) for k in range(10, 20)]
    pairs = run(sync, events, flush=False)
    assert [p.depth_stamp_ns - 10**10 for p in pairs[1:]] == [99 * MS, 198 * MS]
    assert sync.stats.resets == 0
    check_accounting(sync)


def test_max_wait_decides_when_depth_stalls() -> None:
    sync: Synchronizer[int, int] = Synchronizer(SyncConfig(max_wait_ns=200 * MS))
    pairs = run(sync, [("d", 0), ("d", 33 * MS), ("t", 40 * MS)], flush=False)
    assert pairs == []  # depth 66 ms might still arrive
    pairs = sync.push_thermal(150 * MS, 150)
    assert pairs == []
    pairs = sync.push_thermal(250 * MS, 250)  # 210 ms after the first: decide with what is there
    assert [(p.thermal_stamp_ns, p.depth_stamp_ns) for p in pairs] == [(40 * MS, 33 * MS)]
    assert sync.pending_thermal == 2


def test_flush_decides_pending_frames() -> None:
    sync: Synchronizer[int, int] = Synchronizer()
    assert run(sync, [("d", 0), ("t", 5 * MS), ("t", 100 * MS)], flush=False) == []
    pairs = sync.flush()
    assert [p.depth_stamp_ns for p in pairs] == [0]
    assert sync.stats.thermal_dropped["no_depth_within_skew"] == 1
    assert sync.pending_thermal == 0


def test_buffers_are_bounded() -> None:
    sync: Synchronizer[int, int] = Synchronizer(SyncConfig(depth_buffer=30, thermal_buffer=10))
    run(sync, [("d", k * 33 * MS) for k in range(100)], flush=False)
    assert sync.pending_depth == 30
    assert sync.stats.depth_dropped["buffer_overflow"] == 70
    # 1 ms apart: all within max_wait, so they pile up until the bound evicts the oldest
    run(sync, [("t", 10**10 + k * MS) for k in range(25)], flush=False)
    assert sync.pending_thermal == 10
    assert sync.stats.thermal_dropped["buffer_overflow"] == 15
    check_accounting(sync)


def test_unused_depth_is_released_in_normal_operation() -> None:
    events, _, _ = realistic_stream(60.0, 0, seed=5)
    sync: Synchronizer[int, int] = Synchronizer()
    run(sync, events, flush=False)
    assert sync.pending_depth <= 10
    assert sync.stats.depth_dropped["buffer_overflow"] == 0
    assert sync.stats.depth_unused > 0
    check_accounting(sync)


def test_same_input_gives_same_output() -> None:
    events, _, _ = realistic_stream(10.0, 12 * MS, seed=7)
    events = events[:40] + [("d", 0), ("t", 10**9)] + events[40:]  # some disorder
    results = []
    for _ in range(2):
        sync: Synchronizer[int, int] = Synchronizer(SyncConfig(thermal_offset_ns=12 * MS))
        results.append((run(sync, events), sync.stats))
    assert results[0] == results[1]


def test_reset_discards_buffers() -> None:
    sync: Synchronizer[int, int] = Synchronizer()
    run(sync, [("d", 0), ("d", 33 * MS), ("t", 100 * MS)], flush=False)
    sync.reset()
    assert sync.pending_depth == 0 and sync.pending_thermal == 0
    assert sync.stats.depth_dropped["reset"] == 2
    assert sync.stats.thermal_dropped["reset"] == 1
    assert sync.stats.resets == 1
    check_accounting(sync)


def test_stats_report_last_skew_and_drop_fraction() -> None:
    sync: Synchronizer[int, int] = Synchronizer()
    assert sync.stats.last_skew_ns is None and sync.stats.thermal_drop_fraction == 0.0
    run(sync, [("d", 0), ("d", 33 * MS), ("t", 30 * MS), ("t", 200 * MS)])
    assert sync.stats.last_skew_ns == 3 * MS
    assert sync.stats.thermal_drop_fraction == 0.5


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_skew_ns": 0}, "max_skew_ns"),
        ({"depth_buffer": 0}, "depth_buffer"),
        ({"thermal_buffer": -1}, "thermal_buffer"),
        ({"max_wait_ns": -5}, "max_wait_ns"),
        ({"clock_jump_ns": 10 * MS}, "clock_jump_ns"),
        ({"max_skew_ns": 2.5}, "max_skew_ns"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        SyncConfig(**kwargs)  # type: ignore[arg-type]


def test_config_takes_offset_from_calibration() -> None:
    calibration = load_calibration()
    config = SyncConfig.from_calibration(calibration, max_skew_ns=10 * MS)
    assert config.thermal_offset_ns == calibration.thermal_clock_offset_ns
    assert config.max_skew_ns == 10 * MS
