"""Multi-person tracker: ground-plane Kalman filters, Hungarian assignment, appearance re-ID."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from iphd.errors import ConfigError, IphdError
from iphd.tracking.kalman import ConstantVelocityKalman

TENTATIVE, CONFIRMED, LOST = "tentative", "confirmed", "lost"
TRACK_STATES = (TENTATIVE, CONFIRMED, LOST)
#: Accepted ``TrackerConfig.up_axis`` values: the tracking-frame axis that points up.
UP_AXES = ("-y", "y", "z", "-z", "x", "-x")
#: Variance given to a track's height in ``TrackState.position_cov_m2``, m²: the height is the
#: mean of its boxes' centres, which move with how much of the person is seen (0.3 m std).
UP_VARIANCE_M2 = 0.09

# Cost of a pair that failed a gate; far above any feasible cost (feasible costs are <= ~5).
_INFEASIBLE = 1e6
_NS_PER_S = 1e-9


class TimeOrderError(IphdError):
    """An update's stamp is not later than the previous update's stamp."""


def _check_finite(name: str, value: float, low: float, high: float = math.inf) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        rng = f">= {low}" if math.isinf(high) else f"in [{low}, {high}]"
        raise ConfigError(f"{name} must be a finite number {rng}, got {value}")


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker parameters; distances are on the ground plane of the tracking frame.

    Attributes:
        up_axis: tracking-frame axis that points up: ``-y`` for a camera optical frame (x right,
            y down, z forward), ``z`` for odom/map; also ``y``, ``-z``, ``x``, ``-x``. The
            Kalman filter runs on the two other axes; the up coordinate is an EMA of the
            detections (``up_ema_alpha``).
        gate_distance_m: largest ground-plane distance between a track's predicted position and
            a detection it may take.
        min_iou: least IoU between a detection and the track's last box; only checked when the
            track was updated on the previous frame and both have boxes; 0 disables. From one
            frame to the next a person's box keeps overlapping its last one; a box that does
            not is someone else, however near their ground positions read (a person entering
            beside a person near the camera, or next to one whose depth reads wrong).
        appearance_weight: weight of the cosine distance in the association cost (the rest is
            the gate-normalised distance); 0 ignores embeddings during association (re-ID of
            lost tracks still uses them).
        max_appearance_distance: cosine distance (1 - cos) gate when a track and a detection
            both have embeddings. The defaults (weight 0.5, gates 1.3) suit the shipped depth
            embedder, which tells the people in view apart from one frame to the next (the
            same person at median cosine distance 0.16 from their gallery, the others in view
            at 0.86) but a returning person from the others only weakly (after more than 1 s
            unseen, about 0.6 to their own gallery): its distance weighs as much as position
            and box overlap in the assignment, and only clear mismatches are refused; tighter
            gates cut the tracks that position alone keeps (tuned on the simulator's tuning
            bags, see the README).
        confirm_hits: consecutive hits that confirm a tentative track (the first detection is
            hit 1).
        max_tentative_misses: consecutive misses a tentative track survives; one more deletes it.
        lost_timeout_s: a lost track is deleted once it has gone longer than this without a
            detection (people hidden behind others for several seconds come back under their
            own id).
        reid_max_distance: cosine distance at or below which an unmatched detection revives a
            lost track (second stage, appearance only, within ``lost_gate_speed_mps`` times the
            time lost plus ``gate_distance_m`` of where the track was last seen). While a lost
            track takes part in the first stage it must meet this appearance gate too.
        max_speed_mps: fastest plausible walking speed: grows the gate within which a newly
            confirmed track continues a lost one (``adopt_lost``; three hits are evidence
            enough), caps the velocity a lost track's prediction moves on with and sets the
            velocity uncertainty of a new track's filter.
        lost_gate_speed_mps: how fast the gates in which a single detection revives a lost
            track grow with the time lost (first and second stage): a slow walk, not the
            fastest one. A lost person is mostly hidden or just out of view near where they
            were lost; gates growing at ``max_speed_mps`` let the next person to appear metres
            away take the lost identity (tuned on 32 simulated bags, see the README).
        min_score_new: detections scoring below this do not start tracks (they may update
            tracks).
        process_accel_std_mps2: Kalman white-noise acceleration standard deviation.
        measurement_std_m: Kalman position measurement standard deviation.
        ema_alpha: appearance gallery update ``g <- normalise(alpha * g + (1 - alpha) * e)``.
        lost_score_decay_per_s: a lost track's score is its last score times
            ``exp(-decay * time lost)``.
        up_ema_alpha: up-coordinate smoothing ``u <- alpha * u + (1 - alpha) * measured``.
        nan_position_min_iou: least IoU with which a detection without a valid depth (NaN
            position) keeps a track updated on the previous frame alive (box, score and gallery
            are updated, the Kalman state is not).
        max_lost_gate_growth_m: cap of the growth of a lost track's first-stage and adoption
            gates (``lost_gate_speed_mps``, and ``max_speed_mps`` for adoption, times the time
            lost).
        outlier_min_iou: least IoU with which a detection whose position lies outside the
            distance gate still follows a confirmed track updated on the previous frame, as a depth
            outlier (box, score and gallery are updated, the Kalman state is not). Such a pair
            costs ``2 - IoU`` in the distance term, more than any in-gate pair, blended with
            appearance like the others in the same assignment. 0 disables.
        max_coast_s: longest a track followed by detections without a usable position (no
            valid depth, or depth outliers) keeps predicting at its velocity; after it, the
            filter restarts at the detection's position (an outlier: the box stayed on the
            person, so the depth is theirs) or, without valid depth, where it is with no
            velocity. Without it a person who stopped while their depth was unreadable would
            be predicted on, out of the gate, and every later detection of them would be an
            outlier that never corrects the filter. 0 disables.
        duplicate_iou: a detection whose box overlaps a higher-scoring detection's by this IoU
            or more, within ``duplicate_distance_m`` on the ground, is a repeat of it: it starts
            no track and revives no lost or tentative track (it may still update a confirmed
            track seen on the previous frame that no other detection suits). 1 disables.
        duplicate_distance_m: ground distance within which overlapping detections are repeats.
        iou_weight: for a track seen on the previous frame, the share of ``1 - IoU`` (with the
            track's last box) in the geometric cost; the rest is the gate-normalised distance.
            The box tells apart people whose measured ground positions are alike (the depth of a
            partly hidden person read from the one in front). 0 = distance only.
        lost_velocity_decay_s: time constant of the velocity decay of a lost track's
            prediction: it moves ``v * tau * (1 - exp(-t / tau))`` from where it was last seen
            (``v``, the velocity at its last detection capped at ``max_speed_mps``), at most
            ``v * tau``, so a stale velocity does not carry it away. 0 = stays where last seen.
        adopt_lost: a tentative track confirmed near where a lost track is predicted (within
            ``gate_distance_m`` plus ``max_speed_mps`` times the time lost, capped by
            ``max_lost_gate_growth_m``, and its appearance gate when both have galleries)
            continues the lost track, under the lost track's id.
        memory_s: how long, counted from its last detection, the appearance gallery of a track
            deleted after ``lost_timeout_s`` is remembered; 0 disables. A newly confirmed track
            that continues no lost track takes a remembered id when its gallery is within
            ``memory_max_distance`` of that id's and nearer to it than to any other remembered
            gallery by ``memory_margin``: a person who was away longer than ``lost_timeout_s``
            comes back under their id. Position plays no part (the person may come back
            anywhere), so the appearance gates are tighter than a lost track's.
        memory_max_distance: cosine distance gate of a remembered id.
        memory_margin: least cosine distance by which the nearest remembered gallery must beat
            the next one (with a single remembered id, only ``memory_max_distance`` applies).
        memory_size: most remembered ids; the oldest is forgotten first.

    A lost track that takes a detection (either stage) restarts its Kalman filter there.

    Association runs as a cascade: confirmed tracks seen on the previous frame take their
    detections first, then the other live (tentative) tracks, then lost tracks, each with the
    detections left over; costs are distances over ``gate_distance_m`` for every track (a lost
    track's wider gate does not make it look nearer).
    """

    up_axis: str = "-y"
    gate_distance_m: float = 1.0
    min_iou: float = 0.1
    appearance_weight: float = 0.5
    max_appearance_distance: float = 1.3
    confirm_hits: int = 3
    max_tentative_misses: int = 1
    lost_timeout_s: float = 8.0
    reid_max_distance: float = 1.3
    max_speed_mps: float = 2.0
    lost_gate_speed_mps: float = 0.75
    min_score_new: float = 0.8
    process_accel_std_mps2: float = 0.5
    measurement_std_m: float = 0.15
    ema_alpha: float = 0.9
    lost_score_decay_per_s: float = 0.5
    up_ema_alpha: float = 0.8
    nan_position_min_iou: float = 0.3
    max_lost_gate_growth_m: float = 3.0
    outlier_min_iou: float = 0.7
    max_coast_s: float = 0.5
    duplicate_iou: float = 0.3
    duplicate_distance_m: float = 0.5
    iou_weight: float = 0.3
    lost_velocity_decay_s: float = 0.5
    adopt_lost: bool = True
    memory_s: float = 60.0
    memory_max_distance: float = 0.8
    memory_margin: float = 0.3
    memory_size: int = 32

    def __post_init__(self) -> None:
        """Reject values the tracker cannot run with."""
        if self.up_axis not in UP_AXES:
            raise ConfigError(
                f"up_axis must be one of {', '.join(UP_AXES)} (-y for a camera optical frame, "
                f"z for odom/map), got {self.up_axis!r}"
            )
        if not (math.isfinite(self.gate_distance_m) and self.gate_distance_m > 0.0):
            raise ConfigError(f"gate_distance_m must be > 0 metres, got {self.gate_distance_m}")
        _check_finite("min_iou", self.min_iou, 0.0, 1.0)
        _check_finite("appearance_weight", self.appearance_weight, 0.0, 1.0)
        _check_finite("max_appearance_distance", self.max_appearance_distance, 0.0, 2.0)
        if self.confirm_hits < 1:
            raise ConfigError(f"confirm_hits must be >= 1, got {self.confirm_hits}")
        if self.max_tentative_misses < 0:
            raise ConfigError(f"max_tentative_misses must be >= 0, got {self.max_tentative_misses}")
        _check_finite("lost_timeout_s", self.lost_timeout_s, 0.0)
        _check_finite("reid_max_distance", self.reid_max_distance, 0.0, 2.0)
        _check_finite("max_speed_mps", self.max_speed_mps, 0.0)
        _check_finite("lost_gate_speed_mps", self.lost_gate_speed_mps, 0.0)
        _check_finite("min_score_new", self.min_score_new, 0.0, 1.0)
        for name in ("process_accel_std_mps2", "measurement_std_m"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ConfigError(f"{name} must be a positive finite number, got {value}")
        _check_finite("ema_alpha", self.ema_alpha, 0.0, 1.0)
        _check_finite("lost_score_decay_per_s", self.lost_score_decay_per_s, 0.0)
        _check_finite("up_ema_alpha", self.up_ema_alpha, 0.0, 1.0)
        _check_finite("nan_position_min_iou", self.nan_position_min_iou, 0.0, 1.0)
        _check_finite("max_lost_gate_growth_m", self.max_lost_gate_growth_m, 0.0)
        _check_finite("outlier_min_iou", self.outlier_min_iou, 0.0, 1.0)
        _check_finite("max_coast_s", self.max_coast_s, 0.0)
        _check_finite("duplicate_iou", self.duplicate_iou, 0.0, 1.0)
        _check_finite("duplicate_distance_m", self.duplicate_distance_m, 0.0)
        _check_finite("iou_weight", self.iou_weight, 0.0, 1.0)
        _check_finite("lost_velocity_decay_s", self.lost_velocity_decay_s, 0.0)
        _check_finite("memory_s", self.memory_s, 0.0)
        _check_finite("memory_max_distance", self.memory_max_distance, 0.0, 2.0)
        _check_finite("memory_margin", self.memory_margin, 0.0, 2.0)
        if self.memory_size < 1:
            raise ConfigError(
                f"memory_size must be >= 1, got {self.memory_size}; use memory_s 0 to turn "
                "the memory off"
            )

    @property
    def up_index(self) -> int:
        """Index (0, 1, 2) of the up axis in a tracking-frame position."""
        return "xyz".index(self.up_axis[-1])

    @property
    def ground_indices(self) -> tuple[int, int]:
        """Indices of the two ground-plane axes, ascending."""
        first, second = (i for i in range(3) if i != self.up_index)
        return first, second


def box_far_outside(box_xyxy: Sequence[float], width: int, height: int) -> bool:
    """Whether a box reaches more than the image's own width or height beyond a side of it.

    No detector draws such a box, and cropping it would take memory in proportion.
    """
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return x1 < -width or y1 < -height or x2 > 2 * width or y2 > 2 * height


def detection_problem(
    box_xyxy: Sequence[float], score: float, width: int, height: int
) -> str:
    """Why a detection cannot be tracked in a ``width`` x ``height`` image; "" when it can.

    A box that is not finite, empty (x2 <= x1 or y2 <= y1), entirely outside the image or
    reaching far beyond it (``box_far_outside``), or a score outside [0, 1], is unusable. A
    NaN position is not a problem (the tracker then relies on the box). The tracker node and
    the offline evaluation pipeline share this rule.
    """
    box = tuple(float(v) for v in box_xyxy)
    if not all(map(math.isfinite, box)):
        return f"box {box} is not finite"
    if box[2] <= box[0] or box[3] <= box[1]:
        return f"box {box} is empty (needs x2 > x1 and y2 > y1)"
    if box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height:
        return f"box {box} lies outside the {width}x{height} image"
    if box_far_outside(box, width, height):
        return (f"box {box} reaches more than the image's own size beyond the {width}x{height} "
                "image")
    if not 0.0 <= float(score) <= 1.0:
        return f"score {score} is not in [0, 1]"
    return ""


@dataclass(frozen=True, eq=False)
class TrackInput:
    """One detection handed to the tracker.

    Attributes:
        box_xyxy: box in depth-image pixels ``(x1, y1, x2, y2)``.
        score: detector confidence in [0, 1].
        position_m: position in the tracking frame, metres; all NaN when the detector had no
            valid depth (any non-finite coordinate counts as no position).
        embedding: (D,) appearance embedding (L2-normalised float32), or None.
    """

    box_xyxy: tuple[float, float, float, float]
    score: float
    position_m: tuple[float, float, float]
    embedding: np.ndarray | None = None

    def __post_init__(self) -> None:
        """Reject malformed detections before they reach the tracker's state."""
        if len(self.box_xyxy) != 4:
            raise ValueError(f"box_xyxy must have 4 values (x1, y1, x2, y2), got {self.box_xyxy}")
        if len(self.position_m) != 3:
            raise ValueError(f"position_m must have 3 values (x, y, z), got {self.position_m}")
        if not math.isfinite(self.score):
            raise ValueError(f"score must be finite, got {self.score}")
        if self.embedding is not None and np.ndim(self.embedding) != 1:
            raise ValueError(
                f"embedding must be a (D,) vector, got shape {np.shape(self.embedding)}"
            )


@dataclass(frozen=True, eq=False)
class TrackState:
    """Snapshot of one track (arrays are copies, never views of the tracker's state).

    Attributes:
        track_id: id, starting at 1; never given to another track, except that a person who
            comes back after their track was deleted may get their remembered id again
            (``TrackerConfig.memory_s``).
        state: ``tentative``, ``confirmed`` or ``lost``.
        score: last detection score; while lost it decays with ``lost_score_decay_per_s``.
        position_m: (3,) position in the tracking frame, metres (predicted while lost).
        velocity_mps: (3,) velocity in the tracking frame, m/s; the up component is 0.
        box_xyxy: (4,) last associated box in depth pixels; None while lost.
        age_s: time since the track's first detection, seconds.
        time_since_update_s: time since the track's last detection, seconds.
        embedding: (D,) float32 L2-normalised appearance gallery (EMA), or None.
        position_cov_m2: (3, 3) covariance of ``position_m`` in the tracking frame, m²: the
            Kalman filter's on the ground plane and ``UP_VARIANCE_M2`` along the up axis (the
            height is the mean of the boxes' centres, not filtered); None while lost, when the
            position is only extrapolated.
    """

    track_id: int
    state: str
    score: float
    position_m: np.ndarray
    velocity_mps: np.ndarray
    box_xyxy: np.ndarray | None
    age_s: float
    time_since_update_s: float
    embedding: np.ndarray | None
    position_cov_m2: np.ndarray | None = None


@dataclass(frozen=True)
class TrackerStats:
    """Counters since the tracker was constructed.

    Attributes:
        created: tracks started (tentative).
        deleted: tracks deleted (timed out, missed while tentative, continued by a lost track
            on confirmation, or forgotten by reset()).
        reidentified: lost tracks revived by a detection (first or second stage) or continued
            by a newly confirmed track (``adopt_lost``).
        confirmed: tentative tracks that became confirmed.
        recalled: newly confirmed tracks that took the remembered id of a deleted track
            (``memory_s``).
    """

    created: int = 0
    deleted: int = 0
    reidentified: int = 0
    confirmed: int = 0
    recalled: int = 0


class _Track:
    """Mutable state of one live track."""

    __slots__ = (
        "track_id",
        "state",
        "kf",
        "up_m",
        "score",
        "box_xyxy",
        "gallery",
        "first_ns",
        "last_update_ns",
        "filter_ns",
        "last_seen_ground_m",
        "last_velocity_mps",
        "hits",
        "misses",
    )

    def __init__(
        self,
        track_id: int,
        kf: ConstantVelocityKalman,
        up_m: float,
        det: TrackInput,
        gallery: np.ndarray | None,
        stamp_ns: int,
    ) -> None:
        self.track_id = track_id
        self.state = TENTATIVE
        self.kf = kf
        self.up_m = up_m
        self.score = float(det.score)
        self.box_xyxy = np.asarray(det.box_xyxy, dtype=np.float64)
        self.gallery = gallery
        self.first_ns = stamp_ns
        self.last_update_ns = stamp_ns
        #: Stamp of the filter's last measurement (or restart).
        self.filter_ns = stamp_ns
        self.last_seen_ground_m = kf.position
        self.last_velocity_mps = kf.velocity
        self.hits = 1
        self.misses = 0


class Tracker:
    """Tracks people from per-frame detections with 3D positions and optional embeddings.

    Each ``update`` predicts every track to the new stamp, associates in two stages (all tracks
    by gated distance + appearance with the Hungarian method, in a cascade that serves tracks
    seen on the previous frame first; then re-identification of lost tracks by appearance),
    runs the life cycles and returns the live tracks.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        """Create an empty tracker; ids start at 1."""
        self.config = config or TrackerConfig()
        self._up = self.config.up_index
        self._ground = list(self.config.ground_indices)
        self._tracks: dict[int, _Track] = {}
        self._next_id = 1
        self._stamp_ns: int | None = None
        self._dim: int | None = None
        self._assignment: dict[int, int] = {}
        self._new_confirmed: list[_Track] = []
        # Deleted tracks' galleries: id -> (gallery, stamp of the track's last detection), oldest
        # first.
        self._memory: dict[int, tuple[np.ndarray, int]] = {}
        self._created = self._deleted = self._reidentified = self._confirmed = 0
        self._recalled = 0

    @property
    def stamp_ns(self) -> int | None:
        """Stamp of the last update, or None before the first one (and after reset())."""
        return self._stamp_ns

    @property
    def last_assignment(self) -> dict[int, int]:
        """Detection index -> track id for the last update, new tentative tracks included."""
        return dict(self._assignment)

    @property
    def stats(self) -> TrackerStats:
        """Counters since construction."""
        return TrackerStats(self._created, self._deleted, self._reidentified, self._confirmed,
                            self._recalled)

    @property
    def tracks(self) -> list[TrackState]:
        """The live tracks as of the last update, ascending id (what update() returned)."""
        return self._snapshot()

    def reconfigure(self, config: TrackerConfig) -> None:
        """Use ``config`` from the next update on, keeping the tracks, their ids and galleries.

        Every gate, weight and time applies at once; the live tracks' Kalman filters take the
        new noise levels, and the memory of deleted tracks is cut to ``memory_size`` (oldest
        forgotten first). The up axis cannot change: the tracks' positions are in its frame.

        Raises:
            ConfigError: ``config.up_axis`` differs from the current one.
        """
        if config.up_axis != self.config.up_axis:
            raise ConfigError(
                f"up_axis cannot change while tracking (it is {self.config.up_axis!r}, asked "
                f"{config.up_axis!r}): the tracks' positions are in that frame; restart the "
                "tracker with the new up_axis"
            )
        for track in self._tracks.values():
            track.kf.set_noise(
                process_accel_std_mps2=config.process_accel_std_mps2,
                measurement_std_m=config.measurement_std_m,
            )
        self.config = config
        self._trim_memory()

    def reset(self) -> None:
        """Forget all tracks and the last stamp (after a clock jump or a bag loop).

        Ids keep increasing: a track created after reset() never reuses an earlier id (the
        remembered ids are forgotten too).
        """
        self._deleted += len(self._tracks)
        self._tracks.clear()
        self._memory.clear()
        self._stamp_ns = None
        self._dim = None
        self._assignment = {}

    def update(self, stamp_ns: int, detections: Sequence[TrackInput]) -> list[TrackState]:
        """Predict to ``stamp_ns``, associate, update life cycles; return the live tracks.

        Args:
            stamp_ns: stamp of the detections, nanoseconds; must increase from call to call.
            detections: this frame's detections, positions in the tracking frame.

        Returns:
            Live (not deleted) tracks in ascending id order.

        Raises:
            TimeOrderError: ``stamp_ns`` is not later than the previous update's stamp; the
                tracker is left unchanged.
            ConfigError: an embedding's dimension differs from the other embeddings'.
        """
        stamp_ns = int(stamp_ns)
        prev_ns = self._stamp_ns
        if prev_ns is not None and stamp_ns <= prev_ns:
            raise TimeOrderError(
                f"update stamps must increase: got {stamp_ns} ns after {prev_ns} ns; call "
                "reset() after a clock jump or when a bag loops"
            )
        dets = list(detections)
        embeddings = self._embeddings(dets)
        ground = np.full((len(dets), 2), np.nan)
        up = np.full(len(dets), np.nan)
        for j, det in enumerate(dets):
            p = np.asarray(det.position_m, dtype=np.float64)
            if np.all(np.isfinite(p)):
                ground[j] = p[self._ground]
                up[j] = p[self._up]
        valid = np.isfinite(up)

        if prev_ns is not None:
            dt_s = (stamp_ns - prev_ns) * _NS_PER_S
            for track in self._tracks.values():
                track.kf.predict(dt_s)
        self._stamp_ns = stamp_ns
        self._assignment = {}
        self._new_confirmed = []

        tracks = list(self._tracks.values())
        matched_tracks: set[int] = set()
        duplicates = self._duplicates(dets, ground, valid)
        for ti, j, outlier in self._associate(
            tracks, dets, ground, valid, embeddings, prev_ns, stamp_ns, duplicates
        ):
            track = tracks[ti]
            use = valid[j] and not outlier
            if track.state == LOST:
                track.state = CONFIRMED
                self._reidentified += 1
                if use:
                    # The filter's constant-velocity prediction has run on while lost: restart
                    # it at the detection.
                    self._restart(track, ground[j], float(up[j]))
                    use = False
            elif not use and self._coasted_too_long(track, stamp_ns):
                if valid[j]:  # a depth outlier for max_coast_s: the position is the person's
                    self._restart(track, ground[j], float(up[j]))
                else:  # no depth for max_coast_s: stop where the prediction got to
                    self._restart(track, track.kf.position, track.up_m)
            self._hit(track, dets[j], ground[j] if use else None, up[j], embeddings[j])
            matched_tracks.add(track.track_id)
            self._assignment[j] = track.track_id

        for track, j in self._reidentify(dets, ground, valid, embeddings, stamp_ns, duplicates):
            self._restart(track, ground[j], float(up[j]))
            track.state = CONFIRMED
            self._reidentified += 1
            self._hit(track, dets[j], None, up[j], embeddings[j])
            matched_tracks.add(track.track_id)
            self._assignment[j] = track.track_id

        for track in tracks:
            if track.track_id not in matched_tracks:
                self._miss(track, stamp_ns)
        self._adopt(stamp_ns)
        self._recall(stamp_ns)

        born_confirmed: list[_Track] = []
        for j, det in enumerate(dets):
            if j in self._assignment or not valid[j] or det.score < self.config.min_score_new:
                continue
            if j in duplicates:
                continue
            track = _Track(
                self._next_id,
                self._new_filter(ground[j]),
                float(up[j]),
                det,
                embeddings[j],
                stamp_ns,
            )
            self._next_id += 1
            self._created += 1
            self._tracks[track.track_id] = track
            self._assignment[j] = track.track_id
            if self.config.confirm_hits <= 1:
                track.state = CONFIRMED
                self._confirmed += 1
                born_confirmed.append(track)
        if born_confirmed:
            # Confirmed at birth, so adoption and the memory see them now (they ran above for
            # the tracks confirmed by this frame's hits).
            self._new_confirmed = born_confirmed
            self._adopt(stamp_ns)
            self._recall(stamp_ns)
        return self._snapshot()

    def query(
        self, embedding: np.ndarray, top_k: int = 5, max_distance: float | None = None
    ) -> list[tuple[int, float]]:
        """Rank confirmed and lost tracks by the cosine distance of their gallery to a query.

        Args:
            embedding: (D,) query embedding (for example an RGB crop's), normalised here.
            top_k: most results returned.
            max_distance: when given, only tracks at or below this cosine distance.

        Returns:
            ``(track_id, cosine distance)`` pairs, ascending distance (ties by id).

        Raises:
            ConfigError: the query is not a finite non-zero (D,) vector, its D differs from the
                galleries', or ``top_k`` < 1.
        """
        if top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {top_k}")
        q = np.asarray(embedding, dtype=np.float64)
        if q.ndim != 1:
            raise ConfigError(f"query embedding must be a (D,) vector, got shape {q.shape}")
        if self._dim is not None and q.shape[0] != self._dim:
            raise ConfigError(
                f"query embedding has dimension {q.shape[0]} but the track galleries have "
                f"dimension {self._dim}; embed the query with the same re-ID model"
            )
        norm = float(np.linalg.norm(q)) if np.all(np.isfinite(q)) else math.nan
        if not (math.isfinite(norm) and norm > 0.0):
            raise ConfigError("query embedding must be finite and non-zero")
        q = q / norm
        results = [
            (track.track_id, float(1.0 - track.gallery @ q))
            for track in self._tracks.values()
            if track.state in (CONFIRMED, LOST) and track.gallery is not None
        ]
        if max_distance is not None:
            results = [r for r in results if r[1] <= max_distance]
        results.sort(key=lambda r: (r[1], r[0]))
        return results[:top_k]

    def _embeddings(self, detections: Sequence[TrackInput]) -> list[np.ndarray | None]:
        """Normalised float64 embeddings per detection (None when absent or unusable).

        A non-finite or zero embedding is treated as absent: one bad crop must not stop the
        tracker. A dimension that differs from the galleries' is a set-up error and raises.
        """
        dim = self._dim
        out: list[np.ndarray | None] = []
        for j, det in enumerate(detections):
            if det.embedding is None:
                out.append(None)
                continue
            e = np.asarray(det.embedding, dtype=np.float64).reshape(-1)
            if dim is None:
                dim = e.shape[0]
            elif e.shape[0] != dim:
                raise ConfigError(
                    f"detection {j} has an embedding of dimension {e.shape[0]} but the tracker "
                    f"holds dimension {dim}; use one re-ID model per tracker (or reset())"
                )
            norm = float(np.linalg.norm(e)) if np.all(np.isfinite(e)) else math.nan
            out.append(e / norm if math.isfinite(norm) and norm > 0.0 else None)
        self._dim = dim
        return out

    def _duplicates(
        self, dets: list[TrackInput], ground: np.ndarray, valid: np.ndarray
    ) -> set[int]:
        """Detections that repeat a better one: they must not start a track of their own.

        Detection ``j`` repeats detection ``k`` when their boxes overlap by ``duplicate_iou``
        or more, their ground positions are within ``duplicate_distance_m``, and ``k`` scores
        higher (ties: the earlier one).
        """
        cfg = self.config
        if cfg.duplicate_iou >= 1.0 or len(dets) < 2:
            return set()
        boxes = np.array([d.box_xyxy for d in dets], dtype=np.float64)
        iou = _iou_matrix(boxes, boxes)
        dist = np.linalg.norm(ground[:, None, :] - ground[None, :, :], axis=2)
        near = (
            valid[:, None]
            & valid[None, :]
            & (np.nan_to_num(dist, nan=np.inf) <= cfg.duplicate_distance_m)
        )
        out: set[int] = set()
        for j in range(len(dets)):
            for k in range(len(dets)):
                if k == j or iou[j, k] < cfg.duplicate_iou or not near[j, k]:
                    continue
                if (dets[k].score, -k) > (dets[j].score, -j):
                    out.add(j)
                    break
        return out

    def _lost_velocity(self, track: _Track) -> np.ndarray:
        """Velocity at the last detection, its speed capped at ``max_speed_mps``."""
        v = track.last_velocity_mps
        speed = float(np.linalg.norm(v))
        cap = self.config.max_speed_mps
        return v * (cap / speed) if speed > cap else v

    def _ground_position(self, track: _Track, stamp_ns: int) -> np.ndarray:
        """Predicted ground position; a lost track's velocity decays from its last detection.

        A lost track moves on from where it was last seen at its last velocity decaying as
        ``exp(-t / lost_velocity_decay_s)``: it travels at most that velocity times the decay
        time, so a stale velocity cannot carry it across the scene.
        """
        if track.state != LOST:
            return track.kf.position
        tau = self.config.lost_velocity_decay_s
        lost_s = (stamp_ns - track.last_update_ns) * _NS_PER_S
        reach = tau * -math.expm1(-lost_s / tau) if tau > 0.0 else 0.0
        return track.last_seen_ground_m + self._lost_velocity(track) * reach

    def _ground_velocity(self, track: _Track, stamp_ns: int) -> np.ndarray:
        """Ground velocity of ``_ground_position``."""
        if track.state != LOST:
            return track.kf.velocity
        tau = self.config.lost_velocity_decay_s
        lost_s = (stamp_ns - track.last_update_ns) * _NS_PER_S
        decay = math.exp(-lost_s / tau) if tau > 0.0 else 0.0
        return self._lost_velocity(track) * decay

    def _restart(self, track: _Track, ground_m: np.ndarray, up_m: float) -> None:
        """Restart ``track``'s filter at ``ground_m`` with no velocity."""
        track.kf = self._new_filter(ground_m)
        track.up_m = up_m
        assert self._stamp_ns is not None
        track.filter_ns = self._stamp_ns

    def _coasted_too_long(self, track: _Track, stamp_ns: int) -> bool:
        """Whether the track's filter has gone ``max_coast_s`` without a measurement."""
        limit = self.config.max_coast_s
        return limit > 0.0 and (stamp_ns - track.filter_ns) * _NS_PER_S > limit

    def _new_filter(self, ground_m: np.ndarray) -> ConstantVelocityKalman:
        return ConstantVelocityKalman(
            ground_m,
            process_accel_std_mps2=self.config.process_accel_std_mps2,
            measurement_std_m=self.config.measurement_std_m,
            initial_velocity_std_mps=max(self.config.max_speed_mps, 0.1),
        )

    def _associate(
        self,
        tracks: list[_Track],
        dets: list[TrackInput],
        ground: np.ndarray,
        valid: np.ndarray,
        embeddings: list[np.ndarray | None],
        prev_ns: int | None,
        stamp_ns: int,
        duplicates: set[int],
    ) -> list[tuple[int, int, bool]]:
        """Stage 1: gated distance + appearance cost, Hungarian assignment in a cascade.

        Returns (track index, detection index, depth outlier) triples.
        """
        cfg = self.config
        if not tracks or not dets:
            return []
        pred = np.stack([self._ground_position(t, stamp_ns) for t in tracks])
        lost = np.array([t.state == LOST for t in tracks])
        tentative = np.array([t.state == TENTATIVE for t in tracks])
        lost_s = np.array([(stamp_ns - t.last_update_ns) * _NS_PER_S for t in tracks])
        gate = cfg.gate_distance_m + np.where(
            lost, np.minimum(cfg.lost_gate_speed_mps * lost_s, cfg.max_lost_gate_growth_m), 0.0
        )
        dist = np.linalg.norm(pred[:, None, :] - ground[None, :, :], axis=2)
        dist_ok = valid[None, :] & (np.nan_to_num(dist, nan=np.inf) <= gate[:, None])
        # One scale for every track: dividing by each track's own gate would make a lost
        # track (wider gate) look nearer than a live one at the same distance.
        norm_dist = np.nan_to_num(dist / cfg.gate_distance_m, nan=0.0)

        # IoU gates apply to tracks seen on the previous frame: older boxes are stale.
        recent = np.array(
            [t.last_update_ns == prev_ns and t.state != LOST for t in tracks], dtype=bool
        )
        iou = _iou_matrix(
            np.stack([t.box_xyxy for t in tracks]),
            np.array([d.box_xyxy for d in dets], dtype=np.float64),
        )
        iou_ok = ~recent[:, None] | (iou >= cfg.min_iou) | (cfg.min_iou <= 0.0)
        nan_ok = ~valid[None, :] & recent[:, None] & (iou >= cfg.nan_position_min_iou)
        # Box continuity: for a track seen on the previous frame, the IoU with its last box
        # tells apart people whose ground positions read alike (a partly hidden person's depth
        # taken from the one in front).
        box_dist = np.where(
            recent[:, None], (1.0 - cfg.iou_weight) * norm_dist + cfg.iou_weight * (1.0 - iou),
            norm_dist,
        )
        geo = np.where(valid[None, :], box_dist, 1.0 - iou)
        feasible = (dist_ok & iou_ok) | nan_ok
        # A depth outlier: the box still overlaps the track's last box well but the position
        # jumped out of the gate (background or a partly seen body in the depth statistics).
        # It may follow the track without moving the filter; its distance term (above 1) is
        # higher than any in-gate pair's, but blended with appearance in the same assignment.
        outlier = np.zeros_like(feasible)
        if cfg.outlier_min_iou > 0.0:
            followed = recent & ~tentative
            outlier = (
                valid[None, :] & followed[:, None] & ~dist_ok & (iou >= cfg.outlier_min_iou)
            )
            geo = np.where(outlier, 2.0 - iou, geo)
            feasible |= outlier

        w = cfg.appearance_weight
        cost = geo
        if w > 0.0:
            app, both = self._appearance(tracks, embeddings)
            lost_limit = min(cfg.max_appearance_distance, cfg.reid_max_distance)
            limit = np.where(lost, lost_limit, cfg.max_appearance_distance)
            feasible &= ~both | (app <= limit[:, None])
            cost = np.where(both, (1.0 - w) * geo + w * app, geo)
        cost = np.where(feasible, cost, _INFEASIBLE)
        # Matching cascade: confirmed tracks seen on the previous frame first, then the other
        # live tracks, then lost tracks, each with the detections left over. A track that has
        # missed frames (or a young tentative one) cannot take a detection from a track that
        # was following it, which would swap or duplicate identities.
        tiers = np.where(lost, 2, np.where(recent & ~tentative, 0, 1))
        # A repeat of a better detection (``duplicates``) only goes to a track seen on the
        # previous frame that no other detection suits (two people close together): it must
        # neither start, revive nor keep a second track on one person.
        repeat = np.zeros(len(dets), dtype=bool)
        repeat[list(duplicates)] = True
        pairs: list[tuple[int, int, bool]] = []
        free = np.ones(len(dets), dtype=bool)
        matched = np.zeros(len(tracks), dtype=bool)
        for tier, allow_repeats in ((0, False), (0, True), (1, False), (2, False)):
            rows_t = np.flatnonzero((tiers == tier) & ~matched)
            cols_t = np.flatnonzero(free & (allow_repeats | ~repeat))
            if not len(rows_t) or not len(cols_t):
                continue
            sub = cost[np.ix_(rows_t, cols_t)]
            rows, cols = linear_sum_assignment(sub)
            for r, c in zip(rows, cols, strict=True):
                ti, j = int(rows_t[r]), int(cols_t[c])
                if feasible[ti, j]:
                    pairs.append((ti, j, bool(outlier[ti, j])))
                    free[j] = False
                    matched[ti] = True
        return pairs

    def _appearance(
        self, tracks: list[_Track], embeddings: list[np.ndarray | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cosine distances (T, N) and the mask of pairs where both sides have an embedding."""
        n_t, n_d = len(tracks), len(embeddings)
        app = np.ones((n_t, n_d))
        has_t = np.array([t.gallery is not None for t in tracks])
        has_d = np.array([e is not None for e in embeddings])
        if has_t.any() and has_d.any():
            g = np.stack([t.gallery for t in tracks if t.gallery is not None])
            e = np.stack([x for x in embeddings if x is not None])
            app[np.ix_(has_t, has_d)] = 1.0 - g @ e.T
        return app, has_t[:, None] & has_d[None, :]

    def _reidentify(
        self,
        dets: list[TrackInput],
        ground: np.ndarray,
        valid: np.ndarray,
        embeddings: list[np.ndarray | None],
        stamp_ns: int,
        duplicates: set[int],
    ) -> list[tuple[_Track, int]]:
        """Stage 2: unmatched detections with embeddings vs lost tracks with galleries."""
        cfg = self.config
        cand_d = [
            j
            for j in range(len(dets))
            if j not in self._assignment
            and j not in duplicates
            and valid[j]
            and embeddings[j] is not None
        ]
        taken = set(self._assignment.values())
        cand_t = [
            t
            for t in self._tracks.values()
            if t.state == LOST and t.gallery is not None and t.track_id not in taken
        ]
        if not cand_d or not cand_t:
            return []
        g = np.stack([t.gallery for t in cand_t if t.gallery is not None])
        e = np.stack([e for e in (embeddings[j] for j in cand_d) if e is not None])
        app = 1.0 - g @ e.T
        seen = np.stack([t.last_seen_ground_m for t in cand_t])
        lost_s = np.array([(stamp_ns - t.last_update_ns) * _NS_PER_S for t in cand_t])
        radius = cfg.lost_gate_speed_mps * lost_s + cfg.gate_distance_m
        dist = np.linalg.norm(seen[:, None, :] - ground[cand_d][None, :, :], axis=2)
        feasible = (app <= cfg.reid_max_distance) & (dist <= radius[:, None])
        cost = np.where(feasible, app, _INFEASIBLE)
        rows, cols = linear_sum_assignment(cost)
        return [(cand_t[r], cand_d[c]) for r, c in zip(rows, cols, strict=True) if feasible[r, c]]

    def _adopt(self, stamp_ns: int) -> None:
        """A track confirmed this frame continues a lost track that it may be the return of.

        A person whose lost track was not revived (their detections fell just outside its gate,
        or a second track started on them while the first still followed a part of them) gets a
        new tentative track. Tentative tracks are not published, so when one is confirmed near
        where a lost track is predicted (within ``gate_distance_m`` plus ``max_speed_mps`` times
        the time lost, capped by ``max_lost_gate_growth_m``: wider than a single detection's
        revival gate, as three hits are better evidence; and within ``reid_max_distance`` in
        appearance when both have galleries), the lost track takes it over and keeps its id;
        the nearest such lost track wins.
        """
        cfg = self.config
        if not cfg.adopt_lost:
            return
        for new in self._new_confirmed:
            if new.track_id not in self._tracks or new.state != CONFIRMED:
                continue
            best: tuple[float, _Track] | None = None
            pos = new.kf.position
            for old in self._tracks.values():
                if old.state != LOST or old.first_ns >= new.first_ns:
                    continue
                lost_s = (stamp_ns - old.last_update_ns) * _NS_PER_S
                gate = cfg.gate_distance_m + min(
                    cfg.max_speed_mps * lost_s, cfg.max_lost_gate_growth_m
                )
                dist = float(np.linalg.norm(self._ground_position(old, stamp_ns) - pos))
                if dist > gate:
                    continue
                cost = dist / cfg.gate_distance_m
                if old.gallery is not None and new.gallery is not None:
                    app = float(1.0 - old.gallery @ new.gallery)
                    if app > cfg.reid_max_distance:
                        continue
                    cost = (1.0 - cfg.appearance_weight) * cost + cfg.appearance_weight * app
                if best is None or cost < best[0]:
                    best = (cost, old)
            if best is not None:
                self._take_over(best[1], new)

    def _recall(self, stamp_ns: int) -> None:
        """A track confirmed this frame that continues no lost track takes a remembered id.

        A person away longer than ``lost_timeout_s`` had their track deleted; their gallery is
        kept for ``memory_s``. A newly confirmed track (not yet published under its own id,
        unless tentative tracks are published) whose gallery is within
        ``memory_max_distance`` of a remembered one, and nearer to it than to any other by
        ``memory_margin``, takes that id, which is then forgotten.
        """
        cfg = self.config
        if cfg.memory_s <= 0.0 or not self._memory:
            return
        for key in [k for k, (_, seen) in self._memory.items()
                    if (stamp_ns - seen) * _NS_PER_S > cfg.memory_s]:
            del self._memory[key]
        for new in self._new_confirmed:
            if (not self._memory or new.gallery is None or new.state != CONFIRMED
                    or self._tracks.get(new.track_id) is not new):
                continue
            ids = list(self._memory)
            galleries = np.stack([self._memory[k][0] for k in ids])
            app = 1.0 - galleries @ new.gallery
            order = np.argsort(app, kind="stable")
            best = float(app[order[0]])
            if best > cfg.memory_max_distance:
                continue
            if len(ids) > 1 and float(app[order[1]]) - best < cfg.memory_margin:
                continue
            old_id = ids[int(order[0])]
            del self._memory[old_id]
            del self._tracks[new.track_id]
            self._rename_assigned(new.track_id, old_id)
            new.track_id = old_id
            self._tracks[old_id] = new
            self._recalled += 1

    def _take_over(self, old: _Track, new: _Track) -> None:
        """``old`` (lost) continues with ``new``'s state; ``new`` is deleted."""
        old.kf = new.kf
        old.filter_ns = new.filter_ns
        old.up_m = new.up_m
        old.score = new.score
        old.box_xyxy = new.box_xyxy
        if old.gallery is None or new.gallery is None:
            old.gallery = new.gallery if old.gallery is None else old.gallery
        else:
            alpha = self.config.ema_alpha
            g = alpha * old.gallery + (1.0 - alpha) * new.gallery
            norm = float(np.linalg.norm(g))
            old.gallery = g / norm if norm > 0.0 else new.gallery
        old.last_update_ns = new.last_update_ns
        old.last_seen_ground_m = new.last_seen_ground_m
        old.last_velocity_mps = new.last_velocity_mps
        old.hits = new.hits
        old.misses = 0
        old.state = CONFIRMED
        self._reidentified += 1
        self._delete(new)
        self._rename_assigned(new.track_id, old.track_id)

    def _rename_assigned(self, from_id: int, to_id: int) -> None:
        """This frame's detections assigned to track ``from_id`` are reported under ``to_id``."""
        for j, track_id in self._assignment.items():
            if track_id == from_id:
                self._assignment[j] = to_id

    def _hit(
        self,
        track: _Track,
        det: TrackInput,
        ground_m: np.ndarray | None,
        up_m: float,
        embedding: np.ndarray | None,
    ) -> None:
        """Apply a matched detection; ``ground_m`` None = no Kalman update (no valid depth)."""
        cfg = self.config
        stamp_ns = self._stamp_ns
        assert stamp_ns is not None
        if ground_m is not None:
            track.kf.update(ground_m)
            track.filter_ns = stamp_ns
            track.up_m = cfg.up_ema_alpha * track.up_m + (1.0 - cfg.up_ema_alpha) * float(up_m)
        track.last_seen_ground_m = track.kf.position
        track.last_velocity_mps = track.kf.velocity
        track.score = float(det.score)
        track.box_xyxy = np.asarray(det.box_xyxy, dtype=np.float64)
        if embedding is not None:
            if track.gallery is None:
                track.gallery = embedding.copy()
            else:
                g = cfg.ema_alpha * track.gallery + (1.0 - cfg.ema_alpha) * embedding
                norm = float(np.linalg.norm(g))
                track.gallery = g / norm if norm > 0.0 else embedding.copy()
        track.last_update_ns = stamp_ns
        track.misses = 0
        track.hits += 1
        if track.state == TENTATIVE and track.hits >= cfg.confirm_hits:
            track.state = CONFIRMED
            self._confirmed += 1
            self._new_confirmed.append(track)

    def _miss(self, track: _Track, stamp_ns: int) -> None:
        """Run the life cycle of a track no detection took this frame."""
        cfg = self.config
        track.hits = 0
        track.misses += 1
        if track.state == TENTATIVE:
            if track.misses > cfg.max_tentative_misses:
                self._delete(track)
            return
        track.state = LOST
        if (stamp_ns - track.last_update_ns) * _NS_PER_S > cfg.lost_timeout_s:
            self._delete(track)
            if cfg.memory_s > 0.0 and track.gallery is not None:
                self._memory[track.track_id] = (track.gallery.copy(), track.last_update_ns)
                self._trim_memory()

    def _trim_memory(self) -> None:
        """Forget the oldest remembered galleries beyond ``memory_size``."""
        while len(self._memory) > self.config.memory_size:
            del self._memory[next(iter(self._memory))]

    def _delete(self, track: _Track) -> None:
        del self._tracks[track.track_id]
        self._deleted += 1

    def _snapshot(self) -> list[TrackState]:
        stamp_ns = self._stamp_ns
        if stamp_ns is None:
            return []
        out = []
        for track_id in sorted(self._tracks):
            track = self._tracks[track_id]
            since_s = (stamp_ns - track.last_update_ns) * _NS_PER_S
            position = np.zeros(3)
            velocity = np.zeros(3)
            lost = track.state == LOST
            position[self._ground] = self._ground_position(track, stamp_ns)
            position[self._up] = track.up_m
            velocity[self._ground] = self._ground_velocity(track, stamp_ns)
            score = track.score
            covariance = None
            if lost:
                score *= math.exp(-self.config.lost_score_decay_per_s * since_s)
            else:
                covariance = np.zeros((3, 3))
                covariance[np.ix_(self._ground, self._ground)] = track.kf.covariance[:2, :2]
                covariance[self._up, self._up] = UP_VARIANCE_M2
            out.append(
                TrackState(
                    track_id=track_id,
                    state=track.state,
                    score=score,
                    position_m=position,
                    velocity_mps=velocity,
                    box_xyxy=None if lost else track.box_xyxy.copy(),
                    age_s=(stamp_ns - track.first_ns) * _NS_PER_S,
                    time_since_update_s=since_s,
                    embedding=None if track.gallery is None else track.gallery.astype(np.float32),
                    position_cov_m2=covariance,
                )
            )
        return out


def _iou_matrix(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """IoU (A, B) between (A, 4) and (B, 4) boxes; 0 where a union is empty."""
    x1 = np.maximum(a_xyxy[:, None, 0], b_xyxy[None, :, 0])
    y1 = np.maximum(a_xyxy[:, None, 1], b_xyxy[None, :, 1])
    x2 = np.minimum(a_xyxy[:, None, 2], b_xyxy[None, :, 2])
    y2 = np.minimum(a_xyxy[:, None, 3], b_xyxy[None, :, 3])
    inter = np.clip(x2 - x1, 0.0, None) * np.clip(y2 - y1, 0.0, None)
    area_a = np.clip(a_xyxy[:, 2] - a_xyxy[:, 0], 0.0, None) * np.clip(
        a_xyxy[:, 3] - a_xyxy[:, 1], 0.0, None
    )
    area_b = np.clip(b_xyxy[:, 2] - b_xyxy[:, 0], 0.0, None) * np.clip(
        b_xyxy[:, 3] - b_xyxy[:, 1], 0.0, None
    )
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0.0, inter / union, 0.0)
    return np.nan_to_num(iou, nan=0.0)
