"""LiveRecorder: first pass of a looping bag only, delays on a clock that jumps back."""

import numpy as np

from iphd.eval.bag_eval import LIVE_STAGES
from iphd.eval.live import LiveRecorder

MS = 1_000_000


def _play(recorder, stamps_ms, receipts_ms):
    for stamp, now in zip(stamps_ms, receipts_ms, strict=True):
        rows = np.array([[10.0, 10.0, 20.0, 40.0, 0.9]])
        recorder.on_detections(stamp * MS, rows, 96, now * MS, now / 1e3)
        recorder.on_tracks(stamp * MS, [(1, "confirmed", (10.0, 10.0, 20.0, 40.0))], now * MS,
                           now / 1e3)


def test_a_looping_bag_is_scored_on_its_first_pass_without_negative_delays():
    recorder = LiveRecorder()
    # Pass 0: stamps 100..400 ms received 50 ms later; then /clock jumps back to 100 ms and a
    # late first-pass message (stamp 500) arrives at 110 ms; then pass 1 replays the stamps.
    _play(recorder, [100, 200, 300, 400], [150, 250, 350, 450])
    _play(recorder, [500], [110])
    _play(recorder, [100, 200], [160, 260])
    frames = recorder.frames
    assert [s for s, _ in frames.tracks] == [t * MS for t in (100, 200, 300, 400, 500)]
    assert sorted(frames.detections) == [t * MS for t in (100, 200, 300, 400, 500)]
    assert frames.image_height == 96
    assert frames.latency_ms[LIVE_STAGES[1]] == [50.0] * 4  # the late message gives no delay
    assert recorder.latency_all_ms["tracks"] == [50.0] * 4 + [60.0] * 2
    assert frames.skipped == {"detections_after_first_pass": 2, "tracks_after_first_pass": 2}
    assert recorder.clock_jumps == 1
    assert recorder.received["tracks"] == 7


def test_no_delay_without_a_comparable_clock():
    recorder = LiveRecorder()
    recorder.on_tracks(100 * MS, [], None, 0.0)
    recorder.on_tracks(200 * MS, [], 0, 0.1)  # sim time before the first /clock reads 0
    assert recorder.frames.latency_ms == {} and len(recorder.frames.tracks) == 2
    assert recorder.rate_hz("tracks") == 10.0
