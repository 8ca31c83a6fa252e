"""Dataset, bag and recording generation from the rig simulator, streamed and parallel.

Every output is cut into sequences planned up front from the master seed; each sequence gets its
own seed (``numpy.random.SeedSequence``), so what a sequence contains does not depend on which
worker renders it or in what order: the same seed gives byte-identical output for any
``--workers``. Workers render one frame at a time and write it straight to disk, so memory stays
at a few frames whatever the dataset size. Everything is written into a staging folder that is
renamed into place only when complete (``iphd.data.output.StagedOutput``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml

from iphd.calibration import RigCalibration
from iphd.data import iphd as iphd_io
from iphd.data import reid as reid_io
from iphd.data.output import StagedOutput, check_count, check_file_output
from iphd.registration import Registrar
from iphd.sim.body import Identity, make_identity
from iphd.sim.labels import (
    LabelConfig,
    WeakLabelConfig,
    clean_boxes,
    label_people,
    weak_boxes,
)
from iphd.sim.rig import RigSimulator, SensorConfig, warm_object_boxes
from iphd.sim.scene import SceneConfig

IPHD_OUT_SIZE = (213, 120)
# Workers are spawned, not forked: a process that already runs threads (rclpy / Fast DDS in the
# same process, a test session) can deadlock a forked child on a lock held at fork time.
START_METHOD = "spawn"
T = TypeVar("T")
R = TypeVar("R")


def sequence_seeds(seed: int, n: int, stream: int) -> list[int]:
    """``n`` independent 63-bit seeds for sequences of output ``stream`` under ``seed``."""
    children = np.random.SeedSequence([seed, stream]).spawn(n)
    return [int(c.generate_state(2, dtype=np.uint64)[0] >> np.uint64(1)) for c in children]


def people_count(rng: np.random.Generator, weights: tuple[float, ...]) -> int:
    """Number of people in a sequence, drawn from ``weights`` (P of 0, 1, 2, ...)."""
    p = np.asarray(weights, dtype=np.float64)
    return int(rng.choice(len(p), p=p / p.sum()))


def run_parallel(
    fn: Callable[[T], R], jobs: list[T], workers: int, progress: Callable[[R], None] | None = None
) -> list[R]:
    """``[fn(job) for job in jobs]`` over ``workers`` processes, results in job order."""
    results: list[R] = []
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            result = fn(job)
            results.append(result)
            if progress:
                progress(result)
        return results
    ctx = multiprocessing.get_context(START_METHOD)
    with ctx.Pool(min(workers, len(jobs))) as pool:
        for result in pool.imap(fn, jobs):
            results.append(result)
            if progress:
                progress(result)
    return results


def imap_bounded(
    fn: Callable[[T], R], jobs: list[T], workers: int, max_pending: int | None = None
) -> Iterator[R]:
    """Yield ``fn(job)`` in job order, with at most ``max_pending`` results in flight.

    Unlike ``Pool.imap`` this never queues more finished results than ``max_pending``, so a
    slow consumer (a bag writer) keeps memory bounded.
    """
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield fn(job)
        return
    max_pending = max_pending or 2 * workers
    ctx = multiprocessing.get_context(START_METHOD)
    with ctx.Pool(min(workers, len(jobs))) as pool:
        pending: list[Any] = []
        it = iter(jobs)
        for job in it:
            pending.append(pool.apply_async(fn, (job,)))
            if len(pending) >= max_pending:
                break
        while pending:
            result = pending.pop(0).get()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.apply_async(fn, (nxt,)))
            yield result


def write_manifest(root: Path, what: str, settings: dict[str, Any]) -> None:
    """Write ``simulator.yaml``: how a generated dataset was made, enough to make it again."""
    plain = json.loads(json.dumps(settings, default=_plain))
    text = yaml.safe_dump({"generator": f"iphd-sim {what}", **plain}, sort_keys=True)
    (root / "simulator.yaml").write_text(text)


def _plain(value: Any) -> Any:
    if isinstance(value, RigCalibration):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot record {type(value).__name__} in simulator.yaml")


# ------------------------------------------------------------------------------------- IPHD


@dataclass(frozen=True)
class IphdPlan:
    """What one IPHD sequence renders.

    Attributes:
        seq: sequence number (the ``vidNNNNN`` of the file names).
        split: train, valid or test.
        seed: the sequence's seed.
        frames: number of depth/thermal pairs to write.
        stride: thermal frames between two written pairs.
        people_seed: population seed the identities are drawn from.
    """

    seq: int
    split: str
    seed: int
    frames: int
    stride: int
    people_seed: int


@dataclass(frozen=True)
class IphdJob:
    """A plan plus everything a worker needs to render it."""

    plan: IphdPlan
    root: Path
    calibration: RigCalibration
    sensors: SensorConfig
    scene: SceneConfig
    labels: LabelConfig
    weak: WeakLabelConfig
    population: int


@dataclass
class IphdSequenceResult:
    """What a worker reports back: names, meta records and statistics of one sequence."""

    split: str
    names: list[str] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)
    zero_thermal: float = 0.0
    invalid_depth: float = 0.0
    people: list[int] = field(default_factory=list)
    distances_m: list[float] = field(default_factory=list)


def split_sequences(n: int, fractions: tuple[float, float, float]) -> list[str]:
    """Assign ``n`` sequences to train/valid/test by ``fractions`` (each split >= 1 if n >= 3)."""
    if n == 0:
        return []
    counts = [int(math.floor(f * n)) for f in fractions]
    if n >= 3:
        counts = [max(c, 1) for c in counts]
    while sum(counts) > n:
        counts[int(np.argmax(counts))] -= 1
    counts[0] += n - sum(counts)
    return [s for s, c in zip(iphd_io.IPHD_SPLITS, counts, strict=True) for _ in range(c)]


def plan_iphd(
    seed: int, frames: int, frames_per_sequence: int, stride: int,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> list[IphdPlan]:
    """Cut ``frames`` pairs into sequences of ``frames_per_sequence`` and assign splits."""
    check_count("--seed", seed)
    check_count("--frames", frames)
    check_count("--frames-per-sequence", frames_per_sequence, 1)
    check_count("--stride", stride, 1)
    n_seq = math.ceil(frames / frames_per_sequence)
    splits = split_sequences(n_seq, fractions)
    seeds = sequence_seeds(seed, n_seq, 1)
    plans = []
    left = frames
    for i in range(n_seq):
        k = min(frames_per_sequence, left)
        left -= k
        plans.append(IphdPlan(i + 1, splits[i], seeds[i], k, stride, seed))
    return plans


def _population(seed: int, size: int, rng: np.random.Generator, n: int) -> list[Identity]:
    pids = rng.choice(size, size=min(n, size), replace=False)
    return [make_identity(int(p), seed) for p in sorted(pids)]


def render_iphd_sequence(job: IphdJob) -> IphdSequenceResult:
    """Render and write one IPHD sequence (runs in a worker)."""
    plan = job.plan
    rng = np.random.default_rng([plan.seed, 0x9E0])
    n_people = people_count(rng, job.scene.people_weights)
    identities = _population(plan.people_seed, job.population, rng, n_people)
    period = 1.0 / job.sensors.thermal_rate_hz
    # Thermal frames frozen by flat-field corrections are skipped: budget for one FFC at start
    # and one per shortest FFC period, each costing its duration plus a stride.
    base = (plan.frames * plan.stride + 2 * job.sensors.thermal_rate_hz) * period + 2.0
    ffc_count = math.ceil(base / job.sensors.ffc_period_s[0]) + 1
    duration = base + ffc_count * (job.sensors.ffc_duration_s + 2 * plan.stride * period)
    sim = RigSimulator(job.calibration, identities, duration, plan.seed, job.sensors, job.scene)
    registrar = Registrar(sim.depth_intrinsics, job.calibration, IPHD_OUT_SIZE)
    di = sim.depth_intrinsics
    seq_shift = rng.normal(0.0, job.weak.sequence_offset, 2)
    warm = warm_object_boxes(sim)
    result = IphdSequenceResult(plan.split)
    k = int(math.ceil((job.sensors.ffc_duration_s + 0.1) * job.sensors.thermal_rate_hz))
    zero = invalid = 0.0
    written = 0
    while written < plan.frames:
        if k >= sim.n_thermal:
            raise RuntimeError(f"sequence {plan.seq} ran out of thermal frames")
        thermal = sim.render_thermal(k)
        k += plan.stride
        if thermal.frozen:  # the driver drops frames frozen by a flat-field correction
            continue
        depth = sim.render_depth(sim.nearest_depth_index(thermal.t_s))
        registered = registrar.register(depth.depth_mm, thermal.thermal_ck)
        clean = clean_boxes(depth.people, di.height, job.labels)
        frng = np.random.default_rng([plan.seed, 0x3EA, depth.index])
        weak = weak_boxes(frng, clean, seq_shift, warm, (di.width, di.height), job.weak)
        name = iphd_io.frame_name(plan.seq, depth.index)
        iphd_io.write_frame(job.root, plan.split, name, depth.depth_mm, registered, weak, clean)
        result.names.append(name)
        result.meta.append(
            iphd_io.frame_meta(name, plan.seq, depth.index, depth.stamp_ns, depth.people)
        )
        zero += float((registered == 0).mean())
        invalid += float((depth.depth_mm == 0).mean())
        result.people.append(len(clean))
        result.distances_m.extend(
            float(np.hypot(p.position_m[0], p.position_m[2]))
            for p in label_people(depth.people, di.height, job.labels)
        )
        written += 1
    if written:
        result.zero_thermal = zero / written
        result.invalid_depth = invalid / written
    return result


@dataclass(frozen=True)
class IphdSummary:
    """Statistics of a generated IPHD dataset (what the CLI prints and the tests check)."""

    frames: dict[str, int]
    zero_thermal: float
    invalid_depth: float
    people_per_frame: tuple[int, int, float]
    distance_m: tuple[float, float]


def generate_iphd(
    out: Path, *, seed: int, frames: int, frames_per_sequence: int = 50, stride: int = 3,
    workers: int = 1, overwrite: bool = False, calibration: RigCalibration,
    sensors: SensorConfig | None = None, scene: SceneConfig | None = None,
    labels: LabelConfig | None = None, weak: WeakLabelConfig | None = None,
    population: int = 500, progress: Callable[[int], None] | None = None,
) -> IphdSummary:
    """Write an IPHD-format dataset of ``frames`` pairs to ``out``.

    Splits are by sequence (70/15/15). ``labels/`` holds the weak labels (as the real IPHD),
    ``labels_clean/`` the exact ones, ``meta.jsonl`` the full ground truth.
    """
    check_count("--workers", workers, 1)
    sensors = sensors or SensorConfig()
    if sensors.depth_profile != "aligned_1280x720":
        sensors = replace(sensors, depth_profile="aligned_1280x720")
    plans = plan_iphd(seed, frames, frames_per_sequence, stride)
    with StagedOutput(Path(out), overwrite) as staged:
        jobs = [
            IphdJob(p, staged.path, calibration, sensors, scene or SceneConfig(),
                    labels or LabelConfig(), weak or WeakLabelConfig(), population)
            for p in plans
        ]
        _warm_up(calibration)
        results = run_parallel(
            render_iphd_sequence, jobs, workers,
            (lambda r: progress(len(r.names))) if progress else None,
        )
        counts = {}
        for split in iphd_io.IPHD_SPLITS:
            names = [n for r in results if r.split == split for n in r.names]
            meta = [m for r in results if r.split == split for m in r.meta]
            iphd_io.finalize_split(staged.path, split, names, meta)
            counts[split] = len(names)
        write_manifest(staged.path, "iphd", {
            "seed": seed, "frames": frames, "frames_per_sequence": frames_per_sequence,
            "stride": stride, "population": population, "sensors": jobs[0].sensors if jobs else
            sensors, "scene": scene or SceneConfig(), "labels": labels or LabelConfig(),
            "weak_labels": weak or WeakLabelConfig(), "calibration": calibration,
            "frames_per_split": counts,
        })
        staged.commit()
    weights = [len(r.names) for r in results]
    total = max(sum(weights), 1)
    people = [n for r in results for n in r.people]
    dist = [d for r in results for d in r.distances_m]
    return IphdSummary(
        frames=counts,
        zero_thermal=sum(r.zero_thermal * w for r, w in zip(results, weights, strict=True)) / total,
        invalid_depth=sum(r.invalid_depth * w for r, w in zip(results, weights, strict=True))
        / total,
        people_per_frame=(min(people, default=0), max(people, default=0),
                          float(np.mean(people)) if people else 0.0),
        distance_m=(min(dist, default=0.0), max(dist, default=0.0)),
    )


def _warm_up(calibration: RigCalibration) -> None:
    """Compile the numba kernels once in the parent; workers load them from numba's cache."""
    sim = RigSimulator(calibration, [make_identity(0, 0)], 1.0, 0,
                       SensorConfig(depth_profile="aligned_848x480", rgb_scale=0.25))
    sim.render_depth(0, rgb=True)
    sim.render_thermal(0)


# ------------------------------------------------------------------------------------- re-ID


@dataclass(frozen=True)
class ReidJob:
    """One re-ID session: a group of identities filmed in one room from one viewpoint."""

    root: Path
    split: str
    session: int
    seed: int
    pids: tuple[int, ...]
    people_seed: int
    crops: int
    calibration: RigCalibration
    sensors: SensorConfig
    scene: SceneConfig
    min_visibility: float = 0.7
    min_height_px: float = 120.0
    depth_crop: str = "metric"


def plan_reid(
    root: Path, seed: int, identities: int, sessions: int, crops: int, test_fraction: float,
    calibration: RigCalibration, sensors: SensorConfig, scene: SceneConfig,
    depth_crop: str = "metric",
) -> list[ReidJob]:
    """Sessions that film every identity ``sessions`` times, in groups of 1-3, train/test apart."""
    check_count("--seed", seed)
    check_count("--identities", identities, 2)
    check_count("--sessions", sessions, 1)
    check_count("--crops", crops, 1)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    if depth_crop not in reid_io.DEPTH_CROPS:
        raise ValueError(
            f"--depth-crop must be one of {', '.join(reid_io.DEPTH_CROPS)}, got {depth_crop!r}"
        )
    n_test = min(max(1, int(round(identities * test_fraction))), identities - 1)
    rng = np.random.default_rng([seed, 0x4E1D])
    jobs: list[ReidJob] = []
    pid_groups: list[tuple[str, tuple[int, ...]]] = []
    for split, pids in (("train", list(range(identities - n_test))),
                        ("test", list(range(identities - n_test, identities)))):
        for _ in range(sessions):
            order = [int(p) for p in rng.permutation(pids)]
            while order:
                size = int(rng.integers(1, 4))
                pid_groups.append((split, tuple(sorted(order[:size]))))
                order = order[size:]
    seeds = sequence_seeds(seed, len(pid_groups), 2)
    for i, (split, group) in enumerate(pid_groups):
        jobs.append(ReidJob(root, split, i, seeds[i], group, seed, crops, calibration, sensors,
                            scene, depth_crop=depth_crop))
    return jobs


def render_reid_session(job: ReidJob) -> list[reid_io.ReidRecord]:
    """Render one session and write its time-paired depth and RGB crops (runs in a worker)."""
    identities = [make_identity(p, job.people_seed) for p in job.pids]
    # Long enough for everyone to be seen well several times; rendering stops once they are.
    duration = 8.0 * job.crops + 30.0
    sim = RigSimulator(job.calibration, identities, duration, job.seed, job.sensors, job.scene)
    di = sim.depth_intrinsics
    scale = sim.rgb_intrinsics.width / di.width
    records: list[reid_io.ReidRecord] = []
    got = dict.fromkeys(job.pids, 0)
    session = f"s{job.session:05d}"
    # Sample a frame every second, keep people seen well enough, until every pid has its crops.
    step = max(1, int(round(1.0 * job.sensors.depth_rate_hz)))
    for index in range(0, sim.n_depth, step):
        if all(v >= job.crops for v in got.values()):
            break
        sample = sim.render_depth(index, rgb=True)
        assert sample.rgb is not None
        for person in sample.people:
            x1, y1, x2, y2 = person.box_xyxy
            # Visibility counts only the in-image silhouette, so people cut by the left or right
            # border are left out explicitly, as are slivers (feet or head cut off by the top or
            # bottom border are kept: close people look like that in re-ID data too).
            cut = x1 <= 0 or x2 >= di.width
            if (got[person.pid] >= job.crops or person.visibility < job.min_visibility or cut
                    or y2 - y1 < job.min_height_px * di.height / 720.0
                    or x2 - x1 < 0.2 * (y2 - y1)):
                continue
            if job.depth_crop == "metric":
                try:
                    depth_crop = reid_io.metric_crop(
                        sample.depth_mm, (x1, y1, x2, y2), di.fx, di.fy
                    )
                except ValueError:  # no valid depth on the person: no distance, no crop
                    continue
            else:
                depth_crop = reid_io.crop_person(sample.depth_mm, (x1, y1, x2, y2))
            rgb_crop = reid_io.crop_person(sample.rgb, (x1 * scale, y1 * scale, x2 * scale,
                                                        y2 * scale))
            pair_id = job.session * 100_000 + index * 16 + len(records) % 16
            for modality, crop, camid in (
                ("depth", depth_crop, 2 * job.session),
                ("rgb", rgb_crop, 2 * job.session + 1),
            ):
                records.append(reid_io.write_crop(
                    job.root, job.split, crop, pid=person.pid, camid=camid, modality=modality,
                    session=session, stamp_ns=sample.stamp_ns, pair_id=pair_id,
                ))
            got[person.pid] += 1
    return records


def _write_reid_splits(
    root: Path, jobs: Sequence[ReidJob | WalkJob],
    render: Callable[[Any], list[reid_io.ReidRecord]], workers: int,
    calibration: RigCalibration, progress: Callable[[int], None] | None,
) -> dict[str, int]:
    """Render ``jobs`` in parallel, write each split's records.csv; returns records per split.

    Raises:
        DatasetError: an identity is in both splits.
    """
    _warm_up(calibration)
    results = run_parallel(render, list(jobs), workers,
                           (lambda r: progress(1)) if progress else None)
    counts = {}
    split_records: dict[str, list[reid_io.ReidRecord]] = {}
    for split in reid_io.REID_SPLITS:
        recs = [r for res, job in zip(results, jobs, strict=True) if job.split == split
                for r in res]
        split_records[split] = recs
        reid_io.finalize_split(root, split, recs)
        counts[split] = len(recs)
    reid_io.check_disjoint(split_records["train"], split_records["test"])
    return counts


def generate_reid(
    out: Path, *, seed: int, identities: int = 40, sessions: int = 3, crops: int = 6,
    test_fraction: float = 0.3, workers: int = 1, overwrite: bool = False,
    calibration: RigCalibration, sensors: SensorConfig | None = None,
    scene: SceneConfig | None = None, progress: Callable[[int], None] | None = None,
    depth_crop: str = "metric",
) -> dict[str, int]:
    """Write a re-ID dataset of time-paired depth and RGB crops; returns records per split.

    ``depth_crop`` (``iphd.data.reid.DEPTH_CROPS``) is how depth crops are cut; RGB crops are
    always letterboxed boxes. The manifest records it, and training checks it.
    """
    check_count("--workers", workers, 1)
    sensors = sensors or SensorConfig(depth_profile="aligned_848x480", rgb_scale=1.0)
    scene = scene or SceneConfig(people_in_view_deg=25.0)
    with StagedOutput(Path(out), overwrite) as staged:
        jobs = plan_reid(staged.path, seed, identities, sessions, crops, test_fraction,
                         calibration, sensors, scene, depth_crop)
        counts = _write_reid_splits(staged.path, jobs, render_reid_session, workers,
                                    calibration, progress)
        write_manifest(staged.path, "reid", {
            "seed": seed, "identities": identities, "sessions": sessions, "crops": crops,
            "test_fraction": test_fraction, "depth_crop": depth_crop, "sensors": sensors,
            "scene": scene, "calibration": calibration, "records_per_split": counts,
        })
        staged.commit()
    return counts


@dataclass(frozen=True)
class WalkJob:
    """One tracking-style sequence cut into re-ID crops: people walking in and out of view."""

    root: Path
    split: str
    index: int  # sequence number within the dataset
    seed: int
    people: int
    duration_s: float
    rate_hz: float
    gap_s: float
    calibration: RigCalibration
    sensors: SensorConfig
    scene: SceneConfig


#: Largest sequence count of a walks dataset: pids are ``index * people + person`` and
#: sessions ``index * 1000 + person * 100 + visit`` must stay in range.
MAX_WALK_SEQUENCES = 10_000


def plan_walks(
    root: Path, seed: int, sequences: int, people: int, duration_s: float, rate_hz: float,
    gap_s: float, test_fraction: float, calibration: RigCalibration, sensors: SensorConfig,
    scene: SceneConfig,
) -> list[WalkJob]:
    """Sequences of the walks layout; the last ``test_fraction`` of them are the test split."""
    check_count("--seed", seed)
    check_count("--sequences", sequences, 2)
    check_count("--people", people, 1)
    if sequences * people > reid_io.MAX_PID + 1 or sequences > MAX_WALK_SEQUENCES:
        raise ValueError(
            f"--sequences {sequences} x --people {people} is more identities than the dataset "
            f"format holds ({reid_io.MAX_PID + 1}, at most {MAX_WALK_SEQUENCES} sequences)"
        )
    if people > 9:
        raise ValueError(f"--people must be 1..9 for the walks layout, got {people}")
    if not duration_s > 0 or not rate_hz > 0 or not gap_s >= 0:
        raise ValueError(
            f"--duration and --rate must be > 0 and --gap >= 0, got {duration_s}, {rate_hz}, "
            f"{gap_s}"
        )
    if duration_s * sensors.depth_rate_hz >= 100_000:
        raise ValueError(f"--duration {duration_s} s is too long for the walks layout's pair "
                         f"ids (under {100_000 / sensors.depth_rate_hz:.0f} s)")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    n_test = min(max(1, int(round(sequences * test_fraction))), sequences - 1)
    seeds = sequence_seeds(seed, sequences, 3)
    return [
        WalkJob(root, "test" if i >= sequences - n_test else "train", i, seeds[i], people,
                duration_s, rate_hz, gap_s, calibration, sensors, scene)
        for i in range(sequences)
    ]


def render_walk_sequence(job: WalkJob) -> list[reid_io.ReidRecord]:
    """Render one walking sequence and write its labelled people's crops (runs in a worker).

    Crops are cut as the tracker cuts them: every person the IPHD label rule counts (people cut
    off by the image's side edges and partly hidden ones too), a metric depth window centred on
    the visible box. A person's session is one visit: it ends when they were not labelled for
    more than ``gap_s``, so matching across sessions is recognising someone who came back.
    """
    identities = [make_identity(p, job.seed) for p in range(job.people)]
    sim = RigSimulator(job.calibration, identities, job.duration_s, job.seed, job.sensors,
                       job.scene)
    di = sim.depth_intrinsics
    scale = sim.rgb_intrinsics.width / di.width
    step = max(1, int(round(job.sensors.depth_rate_hz / job.rate_hz)))
    visit = dict.fromkeys(range(job.people), -1)
    last_seen = dict.fromkeys(range(job.people), -math.inf)
    records: list[reid_io.ReidRecord] = []
    for index in range(0, sim.n_depth, step):
        sample = sim.render_depth(index, rgb=True)
        assert sample.rgb is not None
        t = sim.depth_time(index)
        for person in label_people(sample.people, di.height):
            local = person.pid
            box = person.box_xyxy
            try:
                depth_crop = reid_io.metric_crop(sample.depth_mm, box, di.fx, di.fy)
            except ValueError:  # no valid depth on the person: no distance, no crop
                continue
            if t - last_seen[local] > job.gap_s:
                visit[local] += 1
            last_seen[local] = t
            if visit[local] >= 100:
                continue
            session_id = job.index * 1000 + local * 100 + visit[local]
            x1, y1, x2, y2 = box
            rgb_crop = reid_io.crop_person(sample.rgb, (x1 * scale, y1 * scale, x2 * scale,
                                                        y2 * scale))
            pair_id = (job.index * 100_000 + index) * 10 + local
            for modality, crop, camid in (
                ("depth", depth_crop, 2 * session_id),
                ("rgb", rgb_crop, 2 * session_id + 1),
            ):
                records.append(reid_io.write_crop(
                    job.root, job.split, crop, pid=job.index * job.people + local, camid=camid,
                    modality=modality, session=f"w{session_id:07d}", stamp_ns=sample.stamp_ns,
                    pair_id=pair_id,
                ))
    return records


def generate_reid_walks(
    out: Path, *, seed: int, sequences: int = 20, people: int = 4, duration_s: float = 60.0,
    rate_hz: float = 2.0, gap_s: float = 1.0, test_fraction: float = 0.1, workers: int = 1,
    overwrite: bool = False, calibration: RigCalibration, sensors: SensorConfig | None = None,
    scene: SceneConfig | None = None, progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Write a re-ID dataset cut from tracking-style sequences; returns records per split.

    Where :func:`generate_reid` films small groups posing in sessions chosen to show everyone
    well, this renders what ``iphd-sim bag`` records (the same scene and sensor defaults:
    ``people`` walking in and out of a room for ``duration_s``) and keeps a time-paired depth
    (metric window) and RGB crop of every labelled person ``rate_hz`` times a second, people at
    the image's edges and partly hidden ones included: the crops the tracker embeds. Identities
    are the sequences' people (``sequence * people + person``); whole sequences are held out
    for the test split.
    """
    check_count("--workers", workers, 1)
    sensors = sensors or SensorConfig(depth_profile="aligned_848x480")
    scene = scene or SceneConfig()
    with StagedOutput(Path(out), overwrite) as staged:
        jobs = plan_walks(staged.path, seed, sequences, people, duration_s, rate_hz, gap_s,
                          test_fraction, calibration, sensors, scene)
        counts = _write_reid_splits(staged.path, jobs, render_walk_sequence, workers,
                                    calibration, progress)
        write_manifest(staged.path, "reid", {
            "layout": "walks", "seed": seed, "sequences": sequences, "people": people,
            "duration_s": duration_s, "rate_hz": rate_hz, "gap_s": gap_s,
            "test_fraction": test_fraction, "depth_crop": "metric", "sensors": sensors,
            "scene": scene, "calibration": calibration, "records_per_split": counts,
        })
        staged.commit()
    return counts


# ------------------------------------------------------------------------------------- streams


# ------------------------------------------------------------------------------------- bags


@dataclass(frozen=True)
class StreamJob:
    """A slice of one sequence's event list, rendered by a worker."""

    seed: int
    duration_s: float
    people: int | None
    calibration: RigCalibration
    sensors: SensorConfig
    scene: SceneConfig
    events: tuple[tuple[int, str, int], ...]  # (log_ns, kind, frame index)
    rgb: bool = False


_SIMS: dict[tuple[Any, ...], RigSimulator] = {}


def stream_simulator(
    seed: int, duration_s: float, people: int | None, calibration: RigCalibration,
    sensors: SensorConfig, scene: SceneConfig,
) -> RigSimulator:
    """The simulator of a streamed sequence (one per process, reused across its slices)."""
    key = (seed, duration_s, people, repr(calibration.to_dict()), sensors, scene)
    sim = _SIMS.get(key)
    if sim is None:
        rng = np.random.default_rng([seed, 0x9E0])
        n = people_count(rng, scene.people_weights) if people is None else people
        identities = [make_identity(p, seed) for p in range(n)]
        sim = RigSimulator(calibration, identities, duration_s, seed, sensors, scene)
        _SIMS.clear()
        _SIMS[key] = sim
    return sim


def event_list(
    sim: RigSimulator, depth_latency_s: float = 0.008, thermal_latency_s: float = 0.03
) -> list[tuple[int, str, int]]:
    """``(log_ns, kind, index)`` of every frame a recording would hold, in receive order.

    Thermal frames frozen by a flat-field correction are left out: the Lepton driver drops them.
    """
    events = [
        (sim.start_ns + int(round((sim.depth_time(j) + depth_latency_s) * 1e9)), "depth", j)
        for j in range(sim.n_depth)
    ]
    events += [
        (sim.start_ns + int(round((sim.thermal_time(k) + thermal_latency_s) * 1e9)), "thermal", k)
        for k in range(sim.n_thermal)
        if not sim.ffc_active(sim.thermal_time(k))
    ]
    return sorted(events)


def render_stream_slice(job: StreamJob) -> list[tuple[int, str, Any]]:
    """Render the frames of one slice (runs in a worker)."""
    sim = stream_simulator(job.seed, job.duration_s, job.people, job.calibration, job.sensors,
                           job.scene)
    out: list[tuple[int, str, Any]] = []
    for log_ns, kind, index in job.events:
        if kind == "depth":
            out.append((log_ns, kind, sim.render_depth(index, rgb=job.rgb)))
        else:
            out.append((log_ns, kind, sim.render_thermal(index)))
    return out


#: Longest scene a bag or a recording is simulated for, s (an hour of 848x480 is ~60 GB).
MAX_DURATION_S = 3600.0


def check_duration(duration_s: float) -> float:
    """``--duration`` checked: a finite number of seconds above 0, at most ``MAX_DURATION_S``.

    Raises:
        ValueError: with the option's name and the limits.
    """
    if not (0 < duration_s <= MAX_DURATION_S):
        raise ValueError(
            f"--duration must be above 0 and at most {MAX_DURATION_S:g} seconds, got {duration_s}"
        )
    return float(duration_s)


def generate_bag(
    out: Path, *, seed: int, duration_s: float, calibration: RigCalibration,
    sensors: SensorConfig | None = None, scene: SceneConfig | None = None,
    people: int | None = None, rgb: bool = False, compression: str = "zstd", workers: int = 1,
    overwrite: bool = False, progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Write a ROS 2 bag of one simulated sequence: what the drivers would publish, plus truth.

    Topics (see ``iphd.data.rosbag``): depth image + camera info at 30 Hz, thermal image + camera
    info (< 9 Hz, FFC frames dropped, stamps on the thermal clock), ``/tf_static``, the
    ground-truth topic per depth frame, and ``color/image_raw`` + ``color/camera_info`` (a
    depth-aligned view, ``/tf_static`` holding the identity depth -> colour) only with ``rgb``.
    A turning rig (``sensors.pan_deg``) also has ``/tf``: ``odom`` -> the calibration's base
    frame at each depth stamp (``RigSimulator.odom_transform``).
    Message log times are receive times (capture + sensor latency).

    Returns:
        messages written per topic.
    """
    from iphd.data.rosbag import RigBagWriter  # rosbags is only needed here

    check_count("--workers", workers, 1)
    check_count("--seed", seed)
    check_duration(duration_s)
    if people is not None:
        check_count("--people", people)
    sensors = sensors or SensorConfig(depth_profile="aligned_848x480")
    scene = scene or SceneConfig()
    sim = stream_simulator(seed, duration_s, people, calibration, sensors, scene)
    events = event_list(sim)
    if workers > 1:
        _warm_up(calibration)
    chunk = 30
    jobs = [
        StreamJob(seed, duration_s, people, calibration, sensors, scene,
                  tuple(events[i : i + chunk]), rgb)
        for i in range(0, len(events), chunk)
    ]
    name = Path(out).name
    with StagedOutput(Path(out), overwrite) as staged:
        # rosbags names the storage file after the bag folder and records that name inside it,
        # so the bag is written under its final name, then lifted out of the staging folder.
        inner = staged.path / name
        with RigBagWriter(inner, calibration, sim.depth_intrinsics,
                          color_intrinsics=sim.rgb_intrinsics if rgb else None,
                          compression=compression) as writer:  # type: ignore[arg-type]
            for rendered in imap_bounded(render_stream_slice, jobs, workers):
                for log_ns, kind, sample in rendered:
                    if kind == "depth":
                        if sim.moving:  # the robot's odometry, as its base driver publishes it
                            writer.write_tf(sample.stamp_ns, [sim.odom_transform(sample.t_s)],
                                            log_ns)
                        writer.write_depth(sample.stamp_ns, sample.depth_mm, log_ns)
                        writer.write_ground_truth(sample.stamp_ns, sample.people, log_ns)
                        if sample.rgb is not None:
                            writer.write_color(sample.stamp_ns, sample.rgb, log_ns)
                    else:
                        writer.write_thermal(sample.stamp_ns, sample.thermal_ck, log_ns)
                if progress:
                    progress(len(rendered))
            counts = dict(writer.counts)
        for file in sorted(inner.iterdir()):
            file.rename(staged.path / file.name)
        inner.rmdir()
        staged.commit()
    return counts


def generate_rs_recording(
    out: Path, *, seed: int, duration_s: float, calibration: RigCalibration,
    sensors: SensorConfig | None = None, scene: SceneConfig | None = None,
    people: int | None = None, overwrite: bool = False,
    progress: Callable[[int], None] | None = None, rgb: bool = False,
) -> Path:
    """Write a librealsense recording (``.db3``) of the simulated depth stream.

    With ``rgb`` the recording also holds the RGB camera's stream (the simulator's colour view,
    ``sensors.rgb_scale`` of the depth size, seen from the depth camera), for the D435 driver's
    ``enable_color``.

    The file is what ``rs.recorder`` writes (see ``iphd.sensors.rs_recording``), so the D435
    driver plays it back like a camera. librealsense takes the frames in one call, so the
    recording is held in memory while it is written: keep it to seconds, not minutes.
    """
    from iphd.sensors.rs_recording import write_depth_recording

    out = Path(out)
    if out.suffix != ".db3":
        raise ValueError(f"a librealsense recording must end in .db3, got {out}")
    check_duration(duration_s)
    check_file_output(out, overwrite)
    check_count("--seed", seed)
    if people is not None:
        check_count("--people", people)
    sensors = sensors or SensorConfig(depth_profile="depth_848x480")
    sim = stream_simulator(seed, duration_s, people, calibration, sensors,
                           scene or SceneConfig())
    frames, stamps, colors = [], [], []
    for j in range(sim.n_depth):
        sample = sim.render_depth(j, rgb=rgb)
        frames.append(sample.depth_mm)
        stamps.append((sample.stamp_ns - sim.start_ns) / 1e6)
        if sample.rgb is not None:
            colors.append(sample.rgb)
        if progress:
            progress(1)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.partial-{os.getpid()}.db3")
    try:
        write_depth_recording(
            tmp, frames, stamps, sim.depth_intrinsics, fps=int(round(sensors.depth_rate_hz)),
            color_frames=colors if rgb else None,
            color_intrinsics=sim.rgb_intrinsics if rgb else None, color_delay_ms=0.0,
            depth_to_color=(np.eye(3), np.zeros(3)),  # the simulated RGB view is the depth's
        )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
