"""What image_transport's compressed transports save on disk and cost to decode, per frame.

A robot's bag usually holds ``.../compressedDepth`` and ``.../compressed`` images, which the
offline tools and the bag player decode (``iphd.compressed_images``). This takes depth and
thermal frames of a bag, codes them as those transports would, and reports the bytes per
frame against raw and the decode time on one core: what a replay costs the player, and what
a recording saves.

    python benchmarks/bench_compressed.py [--bag BAG] [--frames 60]

Default bag: the simulator's demo bag (``make demo`` writes it; it is made here if missing).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import shlex
import sys
from pathlib import Path

import cv2
import numpy as np
from machine import cpu_model, speed_probe_ms, summary, timed

from iphd.compressed_images import decode_compressed, encode_compressed
from iphd.data.rosbag import DEPTH_IMAGE, THERMAL_IMAGE, BagReader, image_to_array

#: (stream, transport, codec) as a robot would record them; thermal through compressedDepth
#: is left out: that transport zeroes centi-kelvin values (iphd-eval check says so).
CASES = (
    ("depth", "compressedDepth", "png"),
    ("depth", "compressedDepth", "rvl"),
    ("depth", "compressed", "png"),
    ("thermal", "compressed", "png"),
)
#: The streams' rates on the rig, Hz.
RATES_HZ = {"depth": 30.0, "thermal": 8.7}


def read_frames(bag: Path, frames: int) -> dict[str, list[np.ndarray]]:
    """The first ``frames`` depth and thermal images of ``bag``."""
    out: dict[str, list[np.ndarray]] = {"depth": [], "thermal": []}
    names = {DEPTH_IMAGE: "depth", THERMAL_IMAGE: "thermal"}
    with BagReader(bag) as reader:
        for topic, _t, _l, msg in reader.messages(list(names)):
            stream = out[names[topic]]
            if len(stream) < frames:
                stream.append(image_to_array(msg))
            if all(len(v) >= frames for v in out.values()):
                break
    return out


def main(argv: list[str] | None = None) -> int:
    """Code and decode the frames; print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bag", type=Path, default=None,
                        help="bag with depth/image_raw and thermal/image_raw (default: the demo "
                        "bag)")
    parser.add_argument("--frames", type=int, default=60, help="frames of each stream")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be >= 1")
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if args.bag is None:
        from iphd.sim.demo import ensure_demo_bag

        args.bag = ensure_demo_bag(progress=False)
    frames = read_frames(args.bag, args.frames)
    rows = []
    for stream, transport, codec in CASES:
        images = frames[stream]
        if not images:
            print(f"{args.bag} has no {stream} images", file=sys.stderr)
            return 2
        coded = [encode_compressed(i, "16UC1", transport, codec) for i in images]
        for image, (fmt, data) in zip(images, coded, strict=True):
            assert np.array_equal(decode_compressed(fmt, data)[0], image), "not lossless"
        cycle = itertools.cycle(coded)
        ms = timed(lambda c=cycle: decode_compressed(*next(c)), 3, max(len(coded), 30))
        median, p95, _ = summary(ms)
        raw = images[0].nbytes
        size = float(np.mean([len(d) for _f, d in coded]))
        h, w = images[0].shape
        rows.append(f"| {stream} {w}x{h} | {transport} {codec} | {size / 1e3:.0f} kB "
                    f"({raw / size:.1f}x smaller) | {median:.2f} | {p95:.2f} | "
                    f"{median * RATES_HZ[stream] / 10:.1f} % |")
    print()
    print(f"Machine: {cpu_model()}, one core (speed probe {speed_probe_ms():.0f} ms); Python "
          f"{platform.python_version()}, OpenCV {cv2.__version__}")
    print(f"Bag: {args.bag}, the first {args.frames} frames of each stream")
    print(f"Command: `{shlex.join([sys.executable, *sys.argv])}`")
    print()
    print("| stream | transport | size per frame | decode median (ms) | p95 (ms) | "
          "one core at the stream's rate |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
