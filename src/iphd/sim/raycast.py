"""Ray casting of analytic primitives (room, boxes, ellipsoids, capsules) with numba kernels.

Every camera ray is ``(x, y, 1)`` in the camera's optical frame (x right, y down, z forward), so
the ray parameter of a hit *is* its depth along the optical axis in metres. A distorted camera
(the Lepton) simply has a non-uniform grid of ``(x, y)``; the kernels never see intrinsics.

A scene is a ``PrimitiveSet``: packed parameters in the camera frame plus a per-primitive owner
(person slot or -1) and a screen bounding box so each primitive only visits the pixels it can
cover. The room is an axis-aligned box seen from inside and is cast first over the whole image;
its six faces are primitive ids 0..5 (see ``ROOM_FACES``), so materials index one table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

ELLIPSOID, BOX, CAPSULE, HOLED_BOARD = 0, 1, 2, 3
PARAMS = 24
NEAR_M = 0.05
# Face ids of the room box in its own (world, y up) axes: which plane a ray leaves the room by.
ROOM_FACES = ("+x wall", "-x wall", "ceiling", "floor", "+z wall", "-z wall")
N_ROOM_FACES = len(ROOM_FACES)


@dataclass
class PrimitiveSet:
    """Primitives in world coordinates (metres; y up), ready to be moved into a camera frame.

    Attributes:
        kind: (P,) int32 ELLIPSOID, BOX, CAPSULE or HOLED_BOARD.
        params: (P, 24) float64 world parameters; layout per kind:
            ellipsoid: centre(3), M(9, row-major) with ``local = M @ (p - centre)`` on the unit
            sphere; box: centre(3), R(9) world->box rotation, half extents(3); capsule: end a(3),
            end b(3), radius(1); holed board (a thin plate with an asymmetric grid of round
            holes, the calibration target): centre(3), R(9) world->board rotation (board plane
            = local z 0), half width, half height, hole radius, grid spacing d, columns, rows,
            x and y of hole (0, 0) in board coordinates; hole (i, j) is at
            ``(x0 + (2 j + i % 2) d, y0 + i d)``.
        owner: (P,) int32 person slot (0..15) or -1.
        material: (P,) int32 row of the scene's material table.
    """

    kind: np.ndarray
    params: np.ndarray
    owner: np.ndarray
    material: np.ndarray

    @staticmethod
    def empty() -> PrimitiveSet:
        """A set with no primitives."""
        return PrimitiveSet(
            np.zeros(0, np.int32), np.zeros((0, PARAMS)), np.zeros(0, np.int32),
            np.zeros(0, np.int32),
        )

    def __len__(self) -> int:
        return int(self.kind.shape[0])


class PrimitiveBuilder:
    """Collects primitives one by one, then packs them into a ``PrimitiveSet``."""

    def __init__(self) -> None:
        self._kind: list[int] = []
        self._params: list[np.ndarray] = []
        self._owner: list[int] = []
        self._material: list[int] = []

    def _add(self, kind: int, values: list[float] | np.ndarray, owner: int, material: int) -> None:
        row = np.zeros(PARAMS)
        values = np.asarray(values, dtype=np.float64).ravel()
        row[: values.size] = values
        self._kind.append(kind)
        self._params.append(row)
        self._owner.append(owner)
        self._material.append(material)

    def ellipsoid(
        self, centre: np.ndarray, radii: np.ndarray, rotation: np.ndarray | None = None,
        *, owner: int = -1, material: int,
    ) -> None:
        """Ellipsoid with semi-axes ``radii`` along the columns of ``rotation`` (local->world)."""
        rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
        m = np.diag(1.0 / np.asarray(radii, dtype=np.float64)) @ rot.T
        self._add(ELLIPSOID, [*centre, *m.ravel()], owner, material)

    def box(
        self, centre: np.ndarray, half: np.ndarray, yaw: float = 0.0, *, owner: int = -1,
        material: int,
    ) -> None:
        """Box with half extents ``half`` (x, y, z), rotated by ``yaw`` radians about world y."""
        c, s = np.cos(yaw), np.sin(yaw)
        local_to_world = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
        self._add(BOX, [*centre, *local_to_world.T.ravel(), *half], owner, material)

    def capsule(
        self, a: np.ndarray, b: np.ndarray, radius: float, *, owner: int = -1, material: int
    ) -> None:
        """Capsule: all points within ``radius`` of the segment a-b."""
        self._add(CAPSULE, [*a, *b, radius], owner, material)

    def holed_board(
        self, centre: np.ndarray, rotation: np.ndarray, half: tuple[float, float],
        hole_radius: float, spacing: float, grid: tuple[int, int], first_hole: tuple[float, float],
        *, material: int,
    ) -> None:
        """Thin plate with an asymmetric grid of holes (see ``PrimitiveSet``).

        Args:
            centre: board centre in world coordinates.
            rotation: (3, 3) board->world rotation (columns: board x, board y, board normal).
            half: half width and half height of the plate.
            hole_radius: radius of every hole.
            spacing: grid spacing d.
            grid: (columns, rows) of the asymmetric grid.
            first_hole: board coordinates of hole (0, 0).
            material: row of the scene's material table.
        """
        rot = np.asarray(rotation, dtype=np.float64)
        self._add(
            HOLED_BOARD,
            [*centre, *rot.T.ravel(), half[0], half[1], hole_radius, spacing, grid[0], grid[1],
             first_hole[0], first_hole[1]],
            -1, material,
        )

    def build(self) -> PrimitiveSet:
        """Pack what was added."""
        if not self._kind:
            return PrimitiveSet.empty()
        return PrimitiveSet(
            np.asarray(self._kind, np.int32), np.stack(self._params),
            np.asarray(self._owner, np.int32), np.asarray(self._material, np.int32),
        )


def to_camera(prims: PrimitiveSet, world_to_cam: np.ndarray, cam_pos: np.ndarray) -> np.ndarray:
    """Return (P, 16) float64 parameters of ``prims`` in a camera frame.

    Args:
        prims: primitives in world coordinates.
        world_to_cam: (3, 3) rotation taking world vectors into the camera's optical frame.
        cam_pos: (3,) camera position in world coordinates.
    """
    out = prims.params.copy()
    r = world_to_cam
    for i in range(len(prims)):
        p = prims.params[i]
        if prims.kind[i] == ELLIPSOID:
            out[i, 0:3] = r @ (p[0:3] - cam_pos)
            out[i, 3:12] = (p[3:12].reshape(3, 3) @ r.T).ravel()
        elif prims.kind[i] in (BOX, HOLED_BOARD):
            out[i, 0:3] = r @ (p[0:3] - cam_pos)
            out[i, 3:12] = (p[3:12].reshape(3, 3) @ r.T).ravel()
        else:
            out[i, 0:3] = r @ (p[0:3] - cam_pos)
            out[i, 3:6] = r @ (p[3:6] - cam_pos)
    return out


def camera_aabbs(kind: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Return (P, 6) camera-frame axis-aligned bounds (xmin, ymin, zmin, xmax, ymax, zmax)."""
    out = np.zeros((kind.shape[0], 6))
    for i in range(kind.shape[0]):
        p = params[i]
        if kind[i] == ELLIPSOID:
            inv = np.linalg.inv(p[3:12].reshape(3, 3))
            ext = np.sqrt((inv * inv).sum(axis=1))
            lo, hi = p[0:3] - ext, p[0:3] + ext
        elif kind[i] == BOX:
            ext = np.abs(p[3:12].reshape(3, 3).T) @ p[12:15]
            lo, hi = p[0:3] - ext, p[0:3] + ext
        elif kind[i] == HOLED_BOARD:
            ext = np.abs(p[3:12].reshape(3, 3).T) @ np.array([p[12], p[13], 0.0])
            lo, hi = p[0:3] - ext, p[0:3] + ext
        else:
            lo = np.minimum(p[0:3], p[3:6]) - p[6]
            hi = np.maximum(p[0:3], p[3:6]) + p[6]
        out[i, :3], out[i, 3:] = lo, hi
    return out


@dataclass(frozen=True)
class RayGrid:
    """Normalised ray directions of one camera and the per-row/column ranges used for culling.

    Attributes:
        x: (H, W) float64 ray x/z per pixel.
        y: (H, W) float64 ray y/z per pixel.
    """

    x: np.ndarray
    y: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W)."""
        return (int(self.x.shape[0]), int(self.x.shape[1]))

    def pixel_boxes(self, aabbs: np.ndarray) -> np.ndarray:
        """Return (P, 4) int64 pixel bounds (u0, v0, u1, v1), exclusive ends, of camera AABBs.

        Conservative: the image of a box lies inside the x/z, y/z ranges of its corners when it
        is entirely in front of the camera; a box reaching behind the near plane gets the whole
        image. Empty boxes (u0 == u1) are off-screen.
        """
        h, w = self.shape
        col_lo, col_hi = self.x.min(axis=0), self.x.max(axis=0)
        row_lo, row_hi = self.y.min(axis=1), self.y.max(axis=1)
        out = np.zeros((aabbs.shape[0], 4), dtype=np.int64)
        for i, (x0, y0, z0, x1, y1, z1) in enumerate(aabbs):
            if z1 <= NEAR_M:
                continue
            if z0 <= NEAR_M:
                out[i] = (0, 0, w, h)
                continue
            xs = (x0 / z0, x0 / z1, x1 / z0, x1 / z1)
            ys = (y0 / z0, y0 / z1, y1 / z0, y1 / z1)
            cols = np.flatnonzero((col_hi >= min(xs)) & (col_lo <= max(xs)))
            rows = np.flatnonzero((row_hi >= min(ys)) & (row_lo <= max(ys)))
            if cols.size and rows.size:
                out[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        return out


def pinhole_grid(width: int, height: int, fx: float, fy: float, cx: float, cy: float) -> RayGrid:
    """Ray grid of a rectified (distortion-free) camera."""
    u = (np.arange(width, dtype=np.float64) - cx) / fx
    v = (np.arange(height, dtype=np.float64) - cy) / fy
    x, y = np.meshgrid(u, v)
    return RayGrid(np.ascontiguousarray(x), np.ascontiguousarray(y))


@numba.njit(cache=True, fastmath=False)
def _hit(kind: int, p: np.ndarray, x: float, y: float) -> float:  # pragma: no cover - jitted
    """Depth of the nearest hit of ray (x, y, 1) with primitive params ``p``; inf for a miss."""
    if kind == 0:  # ellipsoid: |a s - b|^2 = 1 with a = M r, b = M c
        ax = p[3] * x + p[4] * y + p[5]
        ay = p[6] * x + p[7] * y + p[8]
        az = p[9] * x + p[10] * y + p[11]
        bx = p[3] * p[0] + p[4] * p[1] + p[5] * p[2]
        by = p[6] * p[0] + p[7] * p[1] + p[8] * p[2]
        bz = p[9] * p[0] + p[10] * p[1] + p[11] * p[2]
        aa = ax * ax + ay * ay + az * az
        ab = ax * bx + ay * by + az * bz
        bb = bx * bx + by * by + bz * bz
        disc = ab * ab - aa * (bb - 1.0)
        if disc <= 0.0:
            return np.inf
        s = (ab - np.sqrt(disc)) / aa
        return s if s > NEAR_M else np.inf
    if kind == 1:  # box: slab test in box coordinates
        t_near = -np.inf
        t_far = np.inf
        for k in range(3):
            r0 = p[3 + 3 * k]
            r1 = p[4 + 3 * k]
            r2 = p[5 + 3 * k]
            o = -(r0 * p[0] + r1 * p[1] + r2 * p[2])
            d = r0 * x + r1 * y + r2
            h = p[12 + k]
            if abs(d) < 1e-12:
                if o < -h or o > h:
                    return np.inf
                continue
            t0 = (-h - o) / d
            t1 = (h - o) / d
            if t0 > t1:
                t0, t1 = t1, t0
            if t0 > t_near:
                t_near = t0
            if t1 < t_far:
                t_far = t1
            if t_near > t_far:
                return np.inf
        return t_near if t_near > NEAR_M else np.inf
    if kind == 3:  # holed board: the plane z_local = 0, minus the holes
        o0 = -(p[3] * p[0] + p[4] * p[1] + p[5] * p[2])
        o1 = -(p[6] * p[0] + p[7] * p[1] + p[8] * p[2])
        o2 = -(p[9] * p[0] + p[10] * p[1] + p[11] * p[2])
        d2 = p[9] * x + p[10] * y + p[11]
        if abs(d2) < 1e-12:
            return np.inf
        t = -o2 / d2
        if t <= NEAR_M:
            return np.inf
        u = o0 + t * (p[3] * x + p[4] * y + p[5])
        w = o1 + t * (p[6] * x + p[7] * y + p[8])
        if abs(u) > p[12] or abs(w) > p[13]:
            return np.inf
        spacing = p[15]
        row = int(np.floor((w - p[19]) / spacing + 0.5))
        if 0 <= row < int(p[17]):
            shift = (row % 2) * spacing
            col = int(np.floor((u - p[18] - shift) / (2.0 * spacing) + 0.5))
            if 0 <= col < int(p[16]):
                du = u - (p[18] + shift + 2.0 * spacing * col)
                dw = w - (p[19] + spacing * row)
                if du * du + dw * dw < p[14] * p[14]:
                    return np.inf
        return t
    # capsule (segment a-b, radius r); ray origin at 0, direction (x, y, 1)
    ba0 = p[3] - p[0]
    ba1 = p[4] - p[1]
    ba2 = p[5] - p[2]
    oa0 = -p[0]
    oa1 = -p[1]
    oa2 = -p[2]
    rad = p[6]
    baba = ba0 * ba0 + ba1 * ba1 + ba2 * ba2
    bard = ba0 * x + ba1 * y + ba2
    baoa = ba0 * oa0 + ba1 * oa1 + ba2 * oa2
    rdoa = x * oa0 + y * oa1 + oa2
    oaoa = oa0 * oa0 + oa1 * oa1 + oa2 * oa2
    rdrd = x * x + y * y + 1.0
    a = baba * rdrd - bard * bard
    b = baba * rdoa - baoa * bard
    c = baba * oaoa - baoa * baoa - rad * rad * baba
    best = np.inf
    if a > 1e-12:
        h = b * b - a * c
        if h >= 0.0:
            t = (-b - np.sqrt(h)) / a
            yv = baoa + t * bard
            if 0.0 < yv < baba and t > NEAR_M:
                return t
    # the caps: spheres at a and b
    for e in range(2):
        cx = p[0] + e * ba0
        cy = p[1] + e * ba1
        cz = p[2] + e * ba2
        bb = x * cx + y * cy + cz
        cc = cx * cx + cy * cy + cz * cz - rad * rad
        h = bb * bb - rdrd * cc
        if h >= 0.0:
            t = (bb - np.sqrt(h)) / rdrd
            if NEAR_M < t < best:
                best = t
    return best


@numba.njit(cache=True)
def cast_room(  # pragma: no cover - jitted
    rx: np.ndarray, ry: np.ndarray, room_r: np.ndarray, room_o: np.ndarray, half: np.ndarray,
    zbuf: np.ndarray, idbuf: np.ndarray,
) -> None:
    """Fill every pixel with where its ray leaves the room (an axis-aligned box, seen inside).

    Args:
        rx: (H, W) ray x/z per pixel.
        ry: (H, W) ray y/z per pixel.
        room_r: (3, 3) camera->room rotation.
        room_o: (3,) camera position in room coordinates (room centre at the origin).
        half: (3,) room half extents.
        zbuf: (H, W) float64 output depth in metres.
        idbuf: (H, W) int32 output face id (see ``ROOM_FACES``).
    """
    h, w = rx.shape
    for v in range(h):
        for u in range(w):
            x = rx[v, u]
            y = ry[v, u]
            best = np.inf
            face = -1
            for k in range(3):
                d = room_r[k, 0] * x + room_r[k, 1] * y + room_r[k, 2]
                if d > 1e-12:
                    t = (half[k] - room_o[k]) / d
                    f = 2 * k
                elif d < -1e-12:
                    t = (-half[k] - room_o[k]) / d
                    f = 2 * k + 1
                else:
                    continue
                if t < best:
                    best = t
                    face = f
            zbuf[v, u] = best
            idbuf[v, u] = face


@numba.njit(cache=True)
def cast_primitives(  # pragma: no cover - jitted
    rx: np.ndarray, ry: np.ndarray, kind: np.ndarray, params: np.ndarray, boxes: np.ndarray,
    owner: np.ndarray, id_offset: int, zbuf: np.ndarray, idbuf: np.ndarray, owners: np.ndarray,
) -> None:
    """Z-buffer the primitives into ``zbuf``/``idbuf`` (ids = index + ``id_offset``).

    ``owners`` collects, per pixel, a bit per person slot whose body the ray hits at all (in
    front of or behind anything else): the person's silhouette as if alone, for visibility.
    """
    for i in range(kind.shape[0]):
        u0, v0, u1, v1 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        k = kind[i]
        p = params[i]
        bit = np.uint16(1 << owner[i]) if owner[i] >= 0 else np.uint16(0)
        for v in range(v0, v1):
            for u in range(u0, u1):
                t = _hit(k, p, rx[v, u], ry[v, u])
                if t == np.inf:
                    continue
                if bit:
                    owners[v, u] |= bit
                if t < zbuf[v, u]:
                    zbuf[v, u] = t
                    idbuf[v, u] = i + id_offset


@numba.njit(cache=True)
def person_stats(  # pragma: no cover - jitted
    idbuf: np.ndarray, owners: np.ndarray, id_owner: np.ndarray, slots: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per person slot: visible pixel count, alone-silhouette count, visible box (u0, v0, u1, v1).

    ``id_owner`` maps a primitive id (room faces included) to its person slot or -1.
    """
    visible = np.zeros(slots, np.int64)
    alone = np.zeros(slots, np.int64)
    box = np.empty((slots, 4), np.int64)
    for s in range(slots):
        box[s, 0] = 1 << 30
        box[s, 1] = 1 << 30
        box[s, 2] = -1
        box[s, 3] = -1
    h, w = idbuf.shape
    for v in range(h):
        for u in range(w):
            bits = owners[v, u]
            if bits:
                for s in range(slots):
                    if bits & (1 << s):
                        alone[s] += 1
            pid = idbuf[v, u]
            if pid < 0:
                continue
            s = id_owner[pid]
            if s < 0:
                continue
            visible[s] += 1
            if u < box[s, 0]:
                box[s, 0] = u
            if v < box[s, 1]:
                box[s, 1] = v
            if u + 1 > box[s, 2]:
                box[s, 2] = u + 1
            if v + 1 > box[s, 3]:
                box[s, 3] = v + 1
    return visible, alone, box


def normal_at(kind: int, p: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Unit outward normal of a primitive (camera-frame params) at camera-frame ``point``.

    Vectorised over points (N, 3); used for shading the RGB view.
    """
    if kind == ELLIPSOID:
        m = p[3:12].reshape(3, 3)
        n = (point - p[0:3]) @ m.T @ m
    elif kind == HOLED_BOARD:
        n = np.repeat(p[9:12][None, :], point.shape[0], axis=0)
        n = np.where((n * point).sum(axis=1, keepdims=True) > 0, -n, n)  # towards the camera
    elif kind == BOX:
        r = p[3:12].reshape(3, 3)
        local = (point - p[0:3]) @ r.T
        ratio = np.abs(local) / np.maximum(p[12:15], 1e-9)
        axis = np.argmax(ratio, axis=1)
        n_local = np.zeros_like(local)
        n_local[np.arange(local.shape[0]), axis] = np.sign(local[np.arange(local.shape[0]), axis])
        n = n_local @ r
    else:
        a, b = p[0:3], p[3:6]
        ba = b - a
        t = np.clip(((point - a) @ ba) / max(float(ba @ ba), 1e-12), 0.0, 1.0)
        n = point - (a + t[:, None] * ba)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
