"""Detector-node library: stamp pairing, 3D position and temperature per box, debug picture."""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

import cv2
import numpy as np

from iphd.errors import CheckpointError, ConfigError, DatasetError, FrameError
from iphd.registration import block_starts, undistort_normalized
from iphd.sensors.frames import CameraIntrinsics

if TYPE_CHECKING:
    from iphd.detection.detector import Detections, Detector
    from iphd.detection.verifier import BoxVerifier

LOG = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("float32", "float16")  # of torch on CUDA; float16 = autocast
#: ``DetectionConfig.backend`` values.
BACKENDS = ("auto", "torch", "onnxruntime", "onnxruntime-int8")
#: What ``backend: auto`` runs off CUDA: the int8 model, as it is at least 1.3x faster per
#: frame than float32 onnxruntime at 1 and 2 threads (measured 1.49x and 1.43x, interleaved,
#: ``benchmarks/bench_detector.py --ab``) with AP@0.5 within 0.001 of float32 on the
#: simulator's held-out bag (0.9195 vs 0.9185). Falls back to float32 onnxruntime, with a
#: warning, when quantization fails.
CPU_DEFAULT_BACKEND = "onnxruntime-int8"

D = TypeVar("D")
R = TypeVar("R")

#: Reasons a registered thermal frame can leave the pairer without its depth frame.
REGISTERED_DROP_REASONS = ("no_depth", "duplicate", "buffer_overflow", "reset")

# The depth statistic looks at the central part of the box: box edges hold background (between
# the arms, beside the head, between the legs), while the middle of a person box is torso.
CENTRE_FRACTION_X = 0.5
CENTRE_Y_RANGE = (0.2, 0.7)  # from the top of the box: chest to hips, below the head
# The person is the nearest large surface in the box; the background lies behind it. A low
# percentile of the valid depths lands on the person whenever the person covers more than
# that share of the central region, and flying pixels or a thin occluder below it are ignored.
ANCHOR_PERCENTILE = 30.0
# Depths within this band around the anchor are taken as the person (a body is ~0.3 m deep;
# the D435's depth noise grows with Z², so the band widens with distance); the median of that
# cluster is the person's depth.
CLUSTER_HALF_WIDTH_M = 0.3
CLUSTER_HALF_WIDTH_FRACTION = 0.1
# Where another detection's pixels are taken out of a box, the rest is the box's own person only
# if at least this share of the region's valid pixels is left; otherwise the person is hidden
# there and the depth is left unknown (NaN) rather than taken from whoever hides them.
MIN_OWN_FRACTION = 0.5
# Boxes overlapping by this IoU or more are taken as two boxes on one person, not as one person
# hiding another.
REPEAT_IOU = 0.3
# The thermal evidence of a box is read from the registered thermal pixels whose depth lies
# within this band of the box's position (the object itself, not what is behind it).
THERMAL_BAND_M = 0.4
# Fewer such pixels than this and the box has no thermal evidence either way.
THERMAL_MIN_PIXELS = 5
# The warm end of the object's own pixels: a face, hands or a thin shirt are enough, so a
# person in a coat with their back turned still reads warm.
THERMAL_PERCENTILE = 90.0
# The fusion node's zero-patch fixing copies the nearest reading into the band beyond the
# thermal view's edge (up to its search range) and across holes: runs of identical values, which
# a real (noisy) reading does not make. Pixels in a run this long, along a row or a column, are
# not evidence.
FILLED_RUN_PX = 4


@dataclass(frozen=True)
class DetectionConfig:
    """What the detector node runs.

    Attributes:
        checkpoint: detector checkpoint file (.pt, or .onnx for onnxruntime); empty = the model
            shipped with the package.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        precision: what torch computes the network in on CUDA: ``float32`` (the default) or
            ``float16`` (autocast); the CPU backends always run float32 (or int8). On an H200
            (``benchmarks/bench_gpu.py``, README) the shipped model ran 7.1 ms a pair in float32
            and 8.3 ms in float16, and float16 changed one of 24 boxes (IoU 0.63 to its CPU
            float32 counterpart) where float32 matched the CPU; float16 may still pay on GPUs
            without fast float32 (embedded ones): measure it there first.
        backend: what runs a .pt checkpoint: ``torch``; ``onnxruntime`` (the checkpoint is
            exported to ONNX once and cached, see ``onnx_export.cached_onnx``);
            ``onnxruntime-int8`` (that export statically quantized to int8 once and cached,
            see ``quantize.cached_int8_onnx``; CPU only); ``auto`` = torch on CUDA,
            ``CPU_DEFAULT_BACKEND`` on the CPU, where onnxruntime is 2x faster than torch and
            releases the GIL (falling back, with a warning, to float32 onnxruntime when
            quantization fails and to torch when the export fails). An .onnx checkpoint
            always runs on onnxruntime as it is.
        score_threshold: lowest score published (the model's own threshold applies first).
        threads: CPU threads of the inference (torch's are process-wide; onnxruntime's per
            session); 0 = the library's default.
        max_queue: pairs waiting for inference; beyond it the oldest is dropped, so a slow
            model skips frames instead of falling further and further behind.
        int8_calibration: calibration pairs (.npz) for ``onnxruntime-int8``; empty = the
            shipped ones (simulator frames, see ``iphd.detection.quantize``).
        min_thermal_contrast_k: a detection whose thermal contrast (``thermal_contrast_k``:
            the warm end of the object's own pixels above the scene's median) is below this
            is not a person (a mannequin, a coat on a stand, furniture: people are warmer than
            the room) and is not published; 0 (the default) disables the check: on the
            simulator's bags it found no cold false positives inside the thermal view (README).
            Only boxes the registered thermal covers enough (``thermal_min_coverage``, pixels
            filled in by the zero-patch fixing not counted) are checked: outside the Lepton's
            narrower view there is no evidence either way.
        thermal_min_coverage: least fraction of a box's thermal pixels with a reading for the
            thermal check to apply.
        verifier: the box verifier (``iphd.detection.verifier``) that checks each detection
            against its depth, thermal and the frame's other detections: empty = the one shipped
            with the package, a path = your own (``training/train_verifier.py``), ``none`` = no
            verifier.
        min_verifier_probability: a detection the verifier gives less than this probability of
            being a person of its own is not published; negative (the default) = the threshold
            stored in the verifier file, chosen when it was trained; 0 publishes every one.
    """

    checkpoint: str = ""
    device: str = "auto"
    score_threshold: float = 0.5
    threads: int = 2
    max_queue: int = 2
    backend: str = "auto"
    int8_calibration: str = ""
    min_thermal_contrast_k: float = 0.0
    thermal_min_coverage: float = 0.9
    precision: str = "float32"
    verifier: str = ""
    min_verifier_probability: float = -1.0

    def __post_init__(self) -> None:
        """Reject values the node cannot run with."""
        if not (np.isfinite(self.min_thermal_contrast_k) and self.min_thermal_contrast_k >= 0.0):
            raise ConfigError(
                "min_thermal_contrast_k must be a finite number >= 0 kelvin (0 = no thermal "
                f"check), got {self.min_thermal_contrast_k}"
            )
        if not (np.isfinite(self.min_verifier_probability)
                and self.min_verifier_probability <= 1.0):
            raise ConfigError(
                "min_verifier_probability must be at most 1 (0 = publish every detection, "
                f"negative = the verifier file's own threshold), got "
                f"{self.min_verifier_probability}"
            )
        if not 0.0 <= self.thermal_min_coverage <= 1.0:
            raise ConfigError(
                f"thermal_min_coverage must be in [0, 1], got {self.thermal_min_coverage}"
            )
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.backend == "torch" and self.checkpoint.endswith(".onnx"):
            raise ConfigError(
                f"{self.checkpoint} is an ONNX model: it runs on onnxruntime (backend auto or "
                "onnxruntime), or pass the .pt checkpoint it was exported from"
            )
        if self.backend == "onnxruntime-int8" and self.checkpoint.endswith(".onnx"):
            raise ConfigError(
                f"{self.checkpoint} is an ONNX model: it runs as it is (backend auto or "
                "onnxruntime); pass the .pt checkpoint to quantize, or quantize it with "
                "python -m iphd.detection.quantize quantize"
            )
        if self.backend == "onnxruntime-int8" and self.device == "cuda":
            raise ConfigError(
                "backend onnxruntime-int8 runs on the CPU; with device cuda use backend auto, "
                "torch or onnxruntime"
            )
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0, got {self.threads}")
        if self.max_queue < 1:
            raise ConfigError(f"max_queue must be >= 1, got {self.max_queue}")

    @property
    def checkpoint_path(self) -> str:
        """The checkpoint file this config loads."""
        from iphd.detection.detector import SHIPPED_CHECKPOINT

        return self.checkpoint or str(SHIPPED_CHECKPOINT)


def load_detector(config: DetectionConfig) -> Detector:
    """Load the checkpoint of ``config`` on its device, backend and precision.

    Raises:
        CheckpointError: the file is missing or not a usable detector checkpoint.
        ConfigError: ``cuda`` asked for without a CUDA device.
        DatasetError: ``onnxruntime-int8`` asked for and its calibration file is unusable.
    """
    import torch

    from iphd.detection.detector import Detector

    if config.threads:
        torch.set_num_threads(config.threads)
    path = config.checkpoint_path
    on_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    backend = config.backend
    if path.endswith(".onnx"):
        backend = "onnxruntime"
    elif backend == "auto":
        backend = "torch" if on_cuda else CPU_DEFAULT_BACKEND
    device = config.device
    if backend == "onnxruntime-int8":
        try:
            from iphd.detection.quantize import QuantizeConfig, cached_int8_onnx

            path = str(cached_int8_onnx(path, QuantizeConfig(calibration=config.int8_calibration)))
            device = "cpu"  # ``auto`` on a CUDA machine: the int8 kernels are the CPU's
        except CheckpointError:
            raise
        except Exception as exc:  # a missing calibration file, a failed quantization
            # A calibration file asked for by name that does not load is an error, not a
            # reason to run another model than the one asked for.
            if config.backend != "auto" or (
                config.int8_calibration and isinstance(exc, DatasetError)
            ):
                raise
            LOG.warning("no int8 model of %s (%s): running it in float32", path, exc)
            backend = "onnxruntime"
    if backend == "onnxruntime" and not path.endswith(".onnx"):
        try:
            from iphd.detection.onnx_export import cached_onnx

            path = str(cached_onnx(path))
        except CheckpointError:
            raise
        except Exception as exc:  # onnx or onnxruntime missing, a failed export: torch runs it
            if config.backend != "auto":
                raise
            LOG.warning("no ONNX export of %s (%s): running it on torch", path, exc)
            backend = "torch"
    if backend == "torch":
        return Detector.from_checkpoint(config.checkpoint or None, config.device,
                                        half=config.precision == "float16")
    # onnxruntime runs the whole network without the GIL and, on the CPU, in about half the
    # time of torch's per-layer calls.
    from iphd.detection.onnx_export import OnnxDetector

    return OnnxDetector(  # type: ignore[return-value]
        path, device=device, intra_op_threads=config.threads or 0
    )


@dataclass(frozen=True)
class StampPair(Generic[D, R]):
    """A depth frame and the registered thermal frame that carries the same stamp."""

    stamp_ns: int
    depth: D
    registered: R


@dataclass
class PairerStats:
    """What the pairer did.

    Attributes:
        pairs: pairs emitted.
        depth_frames: depth frames pushed.
        registered_frames: registered frames pushed.
        depth_unpaired: depth frames discarded without a partner (normal: depth runs at 30 Hz,
            registered thermal at the thermal rate).
        registered_dropped: registered frames that left without their depth frame, by reason
            (``REGISTERED_DROP_REASONS``).
        resets: backward stamp jumps (a looping bag, a restarted driver) that cleared the
            buffers.
        no_depth_run: registered frames given up (``no_depth``) since the last pair: a long
            run means the depth frames are not the ones fusion registered into.
        no_depth_nearest_ns: for the last of them, the distance to the nearest of the recent
            depth stamps (None when there was none).
    """

    pairs: int = 0
    depth_frames: int = 0
    registered_frames: int = 0
    depth_unpaired: int = 0
    registered_dropped: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(REGISTERED_DROP_REASONS, 0)
    )
    resets: int = 0
    no_depth_run: int = 0
    no_depth_nearest_ns: int | None = None


class StampPairer(Generic[D, R]):
    """Pairs depth frames with the registered thermal frames that carry exactly their stamp.

    The fusion node publishes ``thermal/registered`` with the stamp of the depth frame it was
    registered into, so pairing is an exact stamp match; the two topics may still arrive in
    either order. Pairing is monotonic: once a pair at stamp S is emitted, buffered frames older
    than S are discarded (depth silently, registered thermal counted as ``no_depth``).

    Args:
        depth_buffer: depth frames kept while their registered partner may still come
            (30 = 1 s at 30 Hz, longer than fusion's pairing latency).
        registered_buffer: registered frames kept while their depth frame may still come.
        max_wait_ns: a registered frame is given up (``no_depth``) once a depth frame this much
            newer than it has arrived without its own depth frame showing up.
        clock_jump_ns: a stamp this far behind the newest stamp of its stream resets the
            buffers (``stats.resets``).

    Raises:
        ValueError: a buffer size below 1 or a non-positive time.
    """

    def __init__(
        self,
        depth_buffer: int = 30,
        registered_buffer: int = 10,
        max_wait_ns: int = 1_000_000_000,
        clock_jump_ns: int = 1_000_000_000,
    ) -> None:
        if depth_buffer < 1 or registered_buffer < 1:
            raise ValueError(
                f"buffer sizes must be >= 1, got depth_buffer={depth_buffer}, "
                f"registered_buffer={registered_buffer}"
            )
        if max_wait_ns <= 0 or clock_jump_ns <= 0:
            raise ValueError(
                f"times must be > 0 ns, got max_wait_ns={max_wait_ns}, "
                f"clock_jump_ns={clock_jump_ns}"
            )
        self.depth_buffer = depth_buffer
        self.registered_buffer = registered_buffer
        self.max_wait_ns = max_wait_ns
        self.clock_jump_ns = clock_jump_ns
        self.stats = PairerStats()
        self._depth: OrderedDict[int, D] = OrderedDict()
        # Stamps of the depth frames pushed lately, paired or not: how near a registered frame
        # given up came to one (a frame is given up after max_wait_ns, its buffer may be gone).
        self._recent_depth: deque[int] = deque(maxlen=2 * depth_buffer)
        self._registered: OrderedDict[int, R] = OrderedDict()
        self._newest_depth: int | None = None
        self._newest_registered: int | None = None
        self._last_pair: int | None = None

    @property
    def pending_depth(self) -> int:
        """Depth frames buffered while their registered partner may still come."""
        return len(self._depth)

    @property
    def pending_registered(self) -> int:
        """Registered frames buffered while their depth frame may still come."""
        return len(self._registered)

    def push_depth(self, stamp_ns: int, frame: D) -> list[StampPair[D, R]]:
        """Add a depth frame; return the pair it completes (zero or one)."""
        self.stats.depth_frames += 1
        self._check_jump(stamp_ns, self._newest_depth)
        self._newest_depth = max(stamp_ns, self._newest_depth or stamp_ns)
        self._recent_depth.append(stamp_ns)
        if stamp_ns in self._registered:
            return [self._pair(stamp_ns, frame, self._registered.pop(stamp_ns))]
        if (self._last_pair is not None and stamp_ns <= self._last_pair) or (
            stamp_ns in self._depth
        ):
            self.stats.depth_unpaired += 1
            return []
        self._depth[stamp_ns] = frame
        while len(self._depth) > self.depth_buffer:
            self._depth.popitem(last=False)
            self.stats.depth_unpaired += 1
        # Registered frames whose depth frame is long overdue will not find it any more.
        for stamp in [s for s in self._registered if s + self.max_wait_ns < stamp_ns]:
            del self._registered[stamp]
            self._no_depth(stamp)
        return []

    def push_registered(self, stamp_ns: int, frame: R) -> list[StampPair[D, R]]:
        """Add a registered thermal frame; return the pair it completes (zero or one)."""
        self.stats.registered_frames += 1
        self._check_jump(stamp_ns, self._newest_registered)
        self._newest_registered = max(stamp_ns, self._newest_registered or stamp_ns)
        if (self._last_pair is not None and stamp_ns <= self._last_pair) or (
            stamp_ns in self._registered
        ):
            self.stats.registered_dropped["duplicate"] += 1
            return []
        if stamp_ns in self._depth:
            return [self._pair(stamp_ns, self._depth.pop(stamp_ns), frame)]
        self._registered[stamp_ns] = frame
        self._registered = OrderedDict(sorted(self._registered.items()))
        while len(self._registered) > self.registered_buffer:
            self._registered.popitem(last=False)
            self.stats.registered_dropped["buffer_overflow"] += 1
        return []

    def reset(self) -> None:
        """Forget every buffered frame (counted as a reset)."""
        self.stats.depth_unpaired += len(self._depth)
        self.stats.registered_dropped["reset"] += len(self._registered)
        self.stats.resets += 1
        self._depth.clear()
        self._registered.clear()
        self._recent_depth.clear()
        self._newest_depth = self._newest_registered = self._last_pair = None

    def _check_jump(self, stamp_ns: int, newest_ns: int | None) -> None:
        if newest_ns is not None and stamp_ns < newest_ns - self.clock_jump_ns:
            self.reset()

    def _pair(self, stamp_ns: int, depth: D, registered: R) -> StampPair[D, R]:
        self._last_pair = stamp_ns
        for stamp in [s for s in self._depth if s < stamp_ns]:
            del self._depth[stamp]
            self.stats.depth_unpaired += 1
        for stamp in [s for s in self._registered if s < stamp_ns]:
            del self._registered[stamp]
            self._no_depth(stamp)
        self.stats.pairs += 1
        self.stats.no_depth_run = 0
        return StampPair(stamp_ns, depth, registered)

    def _no_depth(self, stamp_ns: int) -> None:
        """Count a registered frame given up, and how near a depth stamp came to it."""
        stats = self.stats
        stats.registered_dropped["no_depth"] += 1
        stats.no_depth_run += 1
        stats.no_depth_nearest_ns = min(
            (abs(s - stamp_ns) for s in self._recent_depth), default=None
        )


def _box_slices(
    box_xyxy: Sequence[float] | np.ndarray, width: int, height: int
) -> tuple[slice, slice]:
    """Rows and columns of the pixels a box (pixel-edge coordinates) overlaps, clipped."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    c0 = min(max(int(np.floor(x1)), 0), width)
    c1 = min(max(int(np.ceil(x2)), 0), width)
    r0 = min(max(int(np.floor(y1)), 0), height)
    r1 = min(max(int(np.ceil(y2)), 0), height)
    return slice(r0, r1), slice(c0, c1)


def _centre_region(box_xyxy: Sequence[float] | np.ndarray) -> tuple[float, float, float, float]:
    """The part of a person box that is torso: the middle columns, chest to hips."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    w, h = x2 - x1, y2 - y1
    half = 0.5 * CENTRE_FRACTION_X * w
    return (
        0.5 * (x1 + x2) - half,
        y1 + CENTRE_Y_RANGE[0] * h,
        0.5 * (x1 + x2) + half,
        y1 + CENTRE_Y_RANGE[1] * h,
    )


def _band_m(anchor_m: float) -> float:
    """Half width of the depth band around ``anchor_m`` taken as one person."""
    return max(CLUSTER_HALF_WIDTH_M, CLUSTER_HALF_WIDTH_FRACTION * anchor_m)


def _cluster_depth_m(values_m: np.ndarray) -> float:
    """Median of the depths clustered around a low percentile of ``values_m`` (non-empty)."""
    # The anchor is one of the values (not an interpolation between two far apart), so its
    # cluster is never empty.
    k = int(ANCHOR_PERCENTILE / 100.0 * (values_m.size - 1))
    anchor = float(np.partition(values_m, k)[k])
    cluster = values_m[np.abs(values_m - anchor) <= _band_m(anchor)]
    return float(np.median(cluster))


def _box_depth_m(
    depth_mm: np.ndarray,
    box_xyxy: Sequence[float] | np.ndarray,
    in_front: np.ndarray | None = None,
) -> float:
    """Person depth in one box, leaving out the pixels of the people ``in_front`` of it.

    ``in_front`` is a (K, 5) array of other detections that overlap this box, rows
    ``(x1, y1, x2, y2, depth_m)``: inside their box, a pixel within their depth band is theirs.
    The centre region is tried first, then the whole box; a region counts when at least
    ``MIN_OWN_FRACTION`` of its valid pixels are left (NaN when neither is).
    """
    height, width = depth_mm.shape
    for region in (_centre_region(box_xyxy), box_xyxy):
        rows, cols = _box_slices(region, width, height)
        patch = depth_mm[rows, cols].astype(np.float32) / 1000.0
        own = patch > 0.0
        valid = int(own.sum())
        if not valid:
            continue
        if in_front is not None and len(in_front):
            r = np.arange(rows.start, rows.stop)
            c = np.arange(cols.start, cols.stop)
            # Pixel-edge boxes: a pixel belongs to a box it overlaps (as in _box_slices).
            r0, r1 = np.floor(in_front[:, 1]), np.ceil(in_front[:, 3])
            c0, c1 = np.floor(in_front[:, 0]), np.ceil(in_front[:, 2])
            in_rows = (r[None, :] >= r0[:, None]) & (r[None, :] < r1[:, None])  # (K, h)
            in_cols = (c[None, :] >= c0[:, None]) & (c[None, :] < c1[:, None])  # (K, w)
            z = in_front[:, 4].astype(np.float32)
            band = np.maximum(CLUSTER_HALF_WIDTH_M, CLUSTER_HALF_WIDTH_FRACTION * z)
            near = np.abs(patch[None] - z[:, None, None]) <= band[:, None, None]  # (K, h, w)
            own &= ~np.any(in_rows[:, :, None] & in_cols[:, None, :] & near, axis=0)
        kept = int(own.sum())
        if kept and kept >= MIN_OWN_FRACTION * valid:
            return _cluster_depth_m(patch[own])
    return float("nan")


def people_depths_m(
    depth_mm: np.ndarray, boxes_xyxy: Sequence[Sequence[float]] | np.ndarray
) -> np.ndarray:
    """Depth of the person in each box, metres; NaN where a box holds no usable depth.

    Each box's depth is first estimated alone: the valid depths of its central region (the
    whole box when that region has none), anchored on a low percentile (the person is in front
    of the background), and the median of the depths clustered around that anchor. A partly
    hidden person's box usually lies over the person in front of them, whose depth that first
    estimate then returns; so where boxes overlap, each box is estimated again without the
    pixels that fall inside another box and within that box's depth band. When too little is
    left (the person is hidden in that region), the depth is NaN rather than someone else's.

    Args:
        depth_mm: (H, W) uint16 depth in millimetres, 0 = invalid.
        boxes_xyxy: (N, 4) boxes (x1, y1, x2, y2) in depth pixels, pixel (0, 0) spanning
            [0, 1) x [0, 1).

    Returns:
        (N,) float64 depths in metres.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    alone = np.array([_box_depth_m(depth_mm, box) for box in boxes], dtype=np.float64)
    if len(boxes) < 2:
        return alone
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    overlap = (
        np.minimum(boxes[:, None, 2], boxes[None, :, 2])
        > np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    ) & (
        np.minimum(boxes[:, None, 3], boxes[None, :, 3])
        > np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    )
    finite = np.isfinite(alone)
    z = np.where(finite, alone, 0.0)
    band = np.maximum(CLUSTER_HALF_WIDTH_M, CLUSTER_HALF_WIDTH_FRACTION * z)
    same = np.abs(z[:, None] - z[None, :]) <= band[:, None]
    # front[j, i]: box i hides part of box j. Nearer, or at the same depth with the larger
    # box: the front person's box holds the hidden one's, whose first estimate then reads the
    # front person's depth.
    front = (
        overlap
        & finite[:, None]
        & finite[None, :]
        & ((~same & (z[None, :] < z[:, None])) | (same & (area[None, :] > area[:, None])))
    )
    # Two boxes on one person (a repeat the detector's NMS let through) overlap a lot; the
    # hidden person's box lies inside the front person's and overlaps it little.
    inter = np.clip(
        np.minimum(boxes[:, None, 2], boxes[None, :, 2])
        - np.maximum(boxes[:, None, 0], boxes[None, :, 0]), 0.0, None
    ) * np.clip(
        np.minimum(boxes[:, None, 3], boxes[None, :, 3])
        - np.maximum(boxes[:, None, 1], boxes[None, :, 1]), 0.0, None
    )
    iou = inter / np.maximum(area[:, None] + area[None, :] - inter, 1e-9)
    front &= iou < REPEAT_IOU
    np.fill_diagonal(front, False)
    depths = alone.copy()
    rows = np.column_stack([boxes, z])
    for j in np.flatnonzero(front.any(axis=1)):
        depths[j] = _box_depth_m(depth_mm, boxes[j], rows[front[j]])
    return depths


def robust_depth_m(depth_mm: np.ndarray, box_xyxy: Sequence[float]) -> float:
    """Depth of the person in one box on its own, metres (see :func:`people_depths_m`)."""
    return float(people_depths_m(depth_mm, [box_xyxy])[0])


def people_positions_m(
    depth_mm: np.ndarray,
    boxes_xyxy: Sequence[Sequence[float]] | np.ndarray,
    intrinsics: CameraIntrinsics,
) -> np.ndarray:
    """3D position of the person in each box: (N, 3) metres in the depth optical frame.

    Each box centre is back-projected through the depth camera at its
    :func:`people_depths_m` depth (x right, y down, z forward); NaN rows where a box has no
    usable depth.

    Args:
        depth_mm: (H, W) uint16 depth in millimetres, 0 = invalid.
        boxes_xyxy: (N, 4) boxes in depth pixels (pixel-edge coordinates, as the detector's).
        intrinsics: the depth camera, of the same size as ``depth_mm``.

    Raises:
        FrameError: ``depth_mm`` is not the size of ``intrinsics``.
    """
    if depth_mm.ndim != 2 or depth_mm.shape != (intrinsics.height, intrinsics.width):
        raise FrameError(
            f"depth image {depth_mm.shape} does not match its camera info "
            f"{intrinsics.width}x{intrinsics.height}"
        )
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    z = people_depths_m(depth_mm, boxes)
    # Intrinsics put pixel centres at integer coordinates; box corners are pixel edges.
    u = 0.5 * (boxes[:, 0] + boxes[:, 2]) - 0.5
    v = 0.5 * (boxes[:, 1] + boxes[:, 3]) - 0.5
    xn = (u - intrinsics.cx) / intrinsics.fx
    yn = (v - intrinsics.cy) / intrinsics.fy
    if intrinsics.has_distortion and len(boxes):
        xn, yn = undistort_normalized(xn, yn, intrinsics.distortion)
    return np.stack([xn * z, yn * z, z], axis=1).reshape(-1, 3)


def person_position_m(
    depth_mm: np.ndarray, box_xyxy: Sequence[float], intrinsics: CameraIntrinsics
) -> tuple[float, float, float]:
    """3D position of the person in one box on its own (see :func:`people_positions_m`).

    Returns:
        (x right, y down, z forward) in metres; NaN x 3 when the box has no valid depth.

    Raises:
        FrameError: ``depth_mm`` is not the size of ``intrinsics``.
    """
    x, y, z = people_positions_m(depth_mm, [box_xyxy], intrinsics)[0]
    return (float(x), float(y), float(z))


def box_temperature_k(
    thermal_ck: np.ndarray, box_xyxy: Sequence[float], depth_size: tuple[int, int]
) -> float:
    """Median registered thermal reading inside a depth-pixel box, kelvin; NaN without coverage.

    Args:
        thermal_ck: (h, w) uint16 registered thermal in centi-kelvin, 0 = no coverage; it
            covers the depth image at its own (usually lower) resolution.
        box_xyxy: (x1, y1, x2, y2) in depth pixels.
        depth_size: (width, height) of the depth image the box refers to.
    """
    height, width = thermal_ck.shape
    sx, sy = width / depth_size[0], height / depth_size[1]
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    rows, cols = _box_slices((x1 * sx, y1 * sy, x2 * sx, y2 * sy), width, height)
    patch = thermal_ck[rows, cols]
    values = patch[patch > 0]
    return float(np.median(values)) / 100.0 if values.size else float("nan")


@dataclass(frozen=True)
class PersonDetection:
    """One detected person, ready for a message.

    Attributes:
        box_xyxy: (x1, y1, x2, y2) in depth pixels.
        score: person probability.
        position_m: (x, y, z) in the depth optical frame, metres; NaN x 3 without valid depth.
        temperature_k: median thermal inside the box, kelvin; NaN without coverage.
        thermal_contrast_k: ``thermal_contrast_k`` of the box, kelvin; NaN when not measured.
        thermal_coverage: fraction of the box's thermal pixels with a reading that the
            zero-patch fixing did not fill in (0..1); 0 when not measured.
    """

    box_xyxy: tuple[float, float, float, float]
    score: float
    position_m: tuple[float, float, float]
    temperature_k: float
    thermal_contrast_k: float = float("nan")
    thermal_coverage: float = 0.0


def scene_temperature_k(thermal_ck: np.ndarray) -> float:
    """Median of the registered thermal readings, kelvin (NaN with none): the room's level.

    People cover a minority of a frame, so the median is the walls, floor and furniture.
    """
    values = thermal_ck[thermal_ck > 0]
    return float(np.median(values)) / 100.0 if values.size else float("nan")


def filled_pixels(patch: np.ndarray, run: int = FILLED_RUN_PX) -> np.ndarray:
    """Mask of the non-zero pixels in a row or column run of ``run`` or more identical values.

    Zero-patch fixing (``iphd.noise.fix_zero_patches``) fills the band outside the thermal view
    and the registration's holes with copies of the nearest reading, while real readings are
    noisy: at the default ``registered_scale`` (0.25), in the first 3 s of two simulator bags,
    this caught 75-78 % of the filled pixels and 2-3 % of the real ones. At much larger
    scales one Lepton pixel covers several output pixels and more readings would be caught.

    Raises:
        ValueError: ``run`` < 2.
    """
    if run < 2:
        raise ValueError(f"run must be >= 2 pixels, got {run}")
    mask = np.zeros(patch.shape, dtype=bool)
    for arr, out in ((patch, mask), (patch.T, mask.T)):
        if arr.shape[1] < run:
            continue
        same = (arr[:, 1:] == arr[:, :-1]) & (arr[:, 1:] > 0)
        starts = np.ones((arr.shape[0], arr.shape[1] - run + 1), dtype=bool)
        for k in range(run - 1):
            starts &= same[:, k : k + starts.shape[1]]
        for k in range(run):
            out[:, k : k + starts.shape[1]] |= starts
    return mask


def thermal_contrast_k(
    depth_mm: np.ndarray,
    thermal_ck: np.ndarray,
    box_xyxy: Sequence[float],
    depth_m: float,
    scene_k: float,
) -> tuple[float, float]:
    """How much warmer than the room the object in a box is, and the box's thermal coverage.

    The object's own pixels are the box's registered thermal pixels whose depth (the depth
    pixel at the thermal pixel's place) lies within ``THERMAL_BAND_M`` of ``depth_m``, the
    box's position; the contrast is their ``THERMAL_PERCENTILE``-th percentile minus
    ``scene_k``. Whatever lies behind the object (a radiator, a screen) does not count, nor do
    pixels the zero-patch fixing filled in (``filled_pixels``): they are not readings of the
    object, and beyond the thermal view's edge they copy whatever the edge shows.

    Args:
        depth_mm: (H, W) depth, millimetres, 0 = invalid.
        thermal_ck: (h, w) registered thermal, centi-kelvin, 0 = no coverage; it covers the
            depth image at its own resolution.
        box_xyxy: (x1, y1, x2, y2) in depth pixels.
        depth_m: the box's depth (its position's z), metres; NaN gives no contrast.
        scene_k: ``scene_temperature_k`` of the frame.

    Returns:
        (contrast in kelvin, NaN when the object has fewer than ``THERMAL_MIN_PIXELS`` pixels
        with a reading or ``depth_m``/``scene_k`` is NaN; fraction of the box's thermal
        pixels with a reading that was not filled in, 0 for an empty box).
    """
    height, width = thermal_ck.shape
    depth_h, depth_w = depth_mm.shape
    sx, sy = width / depth_w, height / depth_h
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    rows, cols = _box_slices((x1 * sx, y1 * sy, x2 * sx, y2 * sy), width, height)
    patch = thermal_ck[rows, cols]
    if patch.size == 0:
        return float("nan"), 0.0
    covered = (patch > 0) & ~filled_pixels(patch)
    coverage = float(covered.mean())
    if not (np.isfinite(depth_m) and np.isfinite(scene_k)):
        return float("nan"), coverage
    # The depth of each registered pixel's own block (as registration gathers it): where the
    # sizes are not whole multiples (1280 -> 213), k * W / w can fall in the block before.
    r = block_starts(depth_h, height)[rows]
    c = block_starts(depth_w, width)[cols]
    depth = depth_mm[np.ix_(r, c)].astype(np.float64) / 1000.0
    own = covered & (depth > 0.0) & (np.abs(depth - depth_m) < THERMAL_BAND_M)
    if int(own.sum()) < THERMAL_MIN_PIXELS:
        return float("nan"), coverage
    warm = float(np.percentile(patch[own], THERMAL_PERCENTILE)) / 100.0
    return warm - scene_k, coverage


def split_cold(
    people: Sequence[PersonDetection], min_contrast_k: float, min_coverage: float
) -> tuple[list[PersonDetection], list[PersonDetection]]:
    """(people, rejected): a detection is rejected when it is measured colder than a person.

    Rejected: ``min_contrast_k`` > 0, the box's thermal coverage is at least ``min_coverage``
    and its ``thermal_contrast_k`` is below ``min_contrast_k``. An unmeasured contrast (NaN:
    no depth, no thermal) keeps the detection.
    """
    if min_contrast_k <= 0.0:
        return list(people), []
    kept: list[PersonDetection] = []
    cold: list[PersonDetection] = []
    for p in people:
        measured = p.thermal_coverage >= min_coverage and np.isfinite(p.thermal_contrast_k)
        (cold if measured and p.thermal_contrast_k < min_contrast_k else kept).append(p)
    return kept, cold


def checked_detections(
    detections: Detections,
    depth_mm: np.ndarray,
    thermal_ck: np.ndarray,
    intrinsics: CameraIntrinsics,
    config: DetectionConfig,
    verifier: BoxVerifier | None = None,
    measure_contrast: bool = False,
) -> tuple[list[PersonDetection], list[PersonDetection], list[PersonDetection]]:
    """(published, left out as cold, left out by the verifier) with ``config``.

    ``describe_detections``, then ``split_cold``, then, with a ``verifier``, the box check of
    ``iphd.detection.verifier`` on what is left (``config.min_verifier_probability``). What the
    detector node publishes; the offline pipeline hands the same to the tracker. The thermal
    contrast is measured when the thermal check or the verifier needs it, or when
    ``measure_contrast`` asks.
    """
    check = config.min_thermal_contrast_k > 0.0
    people = describe_detections(
        detections, depth_mm, thermal_ck, intrinsics, config.score_threshold,
        measure_contrast=check or verifier is not None or measure_contrast,
    )
    people, cold = split_cold(people, config.min_thermal_contrast_k, config.thermal_min_coverage)
    if verifier is None:
        return people, cold, []
    from iphd.detection.verifier import effective_threshold, verify

    kept, left, _ = verify(people, depth_mm, intrinsics, verifier,
                           effective_threshold(verifier, config.min_verifier_probability))
    return [people[i] for i in kept], cold, [people[i] for i in left]


def describe_detections(
    detections: Detections,
    depth_mm: np.ndarray,
    thermal_ck: np.ndarray,
    intrinsics: CameraIntrinsics,
    score_threshold: float = 0.0,
    measure_contrast: bool = True,
) -> list[PersonDetection]:
    """Detections scoring ``score_threshold`` or more, best first, with position and temperature.

    With ``measure_contrast`` each also gets its thermal contrast and coverage
    (``thermal_contrast_k``, about 0.3 ms a box); ``split_cold`` then takes out the ones
    colder than a person. Without it they stay NaN and 0 (the thermal check is off).

    Raises:
        FrameError: ``depth_mm`` does not match ``intrinsics``.
    """
    scores = np.asarray(detections.scores, dtype=np.float64).reshape(-1)
    order = [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] >= score_threshold]
    boxes = np.asarray(detections.boxes_xyxy, dtype=np.float64).reshape(-1, 4)[order]
    # Positions of the kept boxes together: overlapping boxes share out their pixels.
    positions = people_positions_m(depth_mm, boxes, intrinsics)
    size = (depth_mm.shape[1], depth_mm.shape[0])
    scene_k = scene_temperature_k(thermal_ck) if order and measure_contrast else float("nan")
    people = []
    for k, i in enumerate(order):
        box = tuple(float(v) for v in boxes[k])
        contrast, coverage = (
            thermal_contrast_k(depth_mm, thermal_ck, box, float(positions[k][2]), scene_k)
            if measure_contrast
            else (float("nan"), 0.0)
        )
        people.append(
            PersonDetection(
                box_xyxy=box,  # type: ignore[arg-type]
                score=float(scores[i]),
                position_m=tuple(float(v) for v in positions[k]),  # type: ignore[arg-type]
                temperature_k=box_temperature_k(thermal_ck, box, size),
                thermal_contrast_k=contrast,
                thermal_coverage=coverage,
            )
        )
    return people


BOX_COLOUR = (0, 255, 0)  # BGR
COLD_COLOUR = (255, 160, 0)  # BGR: boxes the thermal check left out
UNVERIFIED_COLOUR = (160, 160, 160)  # BGR: boxes the box verifier left out


def render_debug_image(
    depth_mm: np.ndarray,
    thermal_ck: np.ndarray,
    detections: Sequence[PersonDetection],
    max_depth_m: float = 8.0,
    cold: Sequence[PersonDetection] = (),
    unverified: Sequence[PersonDetection] = (),
) -> np.ndarray:
    """Picture of a pair with its detections: thermal in false colour over grey depth.

    Args:
        depth_mm: (H, W) uint16 depth in millimetres, 0 = invalid (black).
        thermal_ck: (h, w) uint16 registered thermal, centi-kelvin, 0 = no coverage (grey
            depth shows through); resized to the depth size.
        detections: boxes in depth pixels, drawn with score and distance.
        max_depth_m: depth shown white; nearer is darker.
        cold: detections the thermal check left out (``split_cold``), drawn in
            ``COLD_COLOUR`` with their thermal contrast, so the threshold can be judged by eye.
        unverified: detections the box verifier left out, drawn in ``UNVERIFIED_COLOUR``.

    Returns:
        (H, W, 3) uint8 BGR image.
    """
    height, width = depth_mm.shape
    grey = (np.clip(depth_mm.astype(np.float32) / (max_depth_m * 1000.0), 0.0, 1.0) * 255).astype(
        np.uint8
    )
    image = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    thermal = cv2.resize(thermal_ck, (width, height), interpolation=cv2.INTER_NEAREST)
    covered = thermal > 0
    if covered.any():
        kelvin = thermal.astype(np.float32) / 100.0
        scaled = (np.clip((kelvin - 290.0) / 20.0, 0.0, 1.0) * 255).astype(np.uint8)
        colour = cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO)
        blend = cv2.addWeighted(image, 0.4, colour, 0.6, 0.0)
        image[covered] = blend[covered]
    scale = max(0.35, min(width, height) / 600.0)
    boxes = [(p, BOX_COLOUR, "") for p in detections]
    boxes += [(p, COLD_COLOUR, f" cold {p.thermal_contrast_k:+.1f}K") for p in cold]
    boxes += [(p, UNVERIFIED_COLOUR, " extra") for p in unverified]
    for person, box_colour, note in boxes:
        x1, y1, x2, y2 = (int(round(v)) for v in person.box_xyxy)
        cv2.rectangle(image, (x1, y1), (max(x2 - 1, x1), max(y2 - 1, y1)), box_colour, 1)
        z = person.position_m[2]
        text = f"{person.score:.2f}" + (f" {z:.1f}m" if np.isfinite(z) else "") + note
        cv2.putText(
            image, text, (x1 + 2, max(y1 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, scale,
            box_colour, 1, cv2.LINE_AA,
        )
    return image
