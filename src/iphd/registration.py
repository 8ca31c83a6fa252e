"""Thermal -> depth registration: warp a thermal image into the depth camera's view using depth."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from iphd.calibration import RigCalibration
from iphd.errors import CameraInfoError, FrameError
from iphd.sensors.frames import CameraIntrinsics

#: Points closer than this to a camera's image plane (metres) count as behind it.
MIN_THERMAL_Z_M = 1e-3
#: Largest depth a uint16 millimetre image can hold.
MAX_DEPTH_M = 65.535
_CACHE_SIZE = 8


def check_image(
    image: object, name: str, expected_hw: tuple[int, int], source: str, hint: str = ""
) -> np.ndarray:
    """Return ``image`` as an ndarray after checking it is a 2-D uint16 array of the given size.

    Args:
        image: the array to check.
        name: what the image is, for the message (``"depth image"``).
        expected_hw: (height, width) the image must have.
        source: where the expected size comes from, for the message (``"depth camera_info"``).
        hint: what to do about a size mismatch, appended to the message.

    Raises:
        FrameError: naming the actual and the expected dtype or size.
    """
    if not isinstance(image, np.ndarray):
        raise FrameError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint16:
        raise FrameError(
            f"{name} has dtype {image.dtype}, expected uint16; convert it first (depth: "
            "iphd.fusion.depth_to_mm, thermal: TLinear centi-kelvin as uint16)"
        )
    if image.ndim != 2:
        raise FrameError(
            f"{name} has shape {image.shape}, expected a single-channel (H, W) image"
        )
    h, w = expected_hw
    if image.shape != (h, w):
        raise FrameError(
            f"{name} is {image.shape[1]}x{image.shape[0]} (WxH) but the {source} says {w}x{h}"
            + (f"; {hint}" if hint else "")
        )
    return image


def distort_normalized(
    x: np.ndarray, y: np.ndarray, distortion: tuple[float, float, float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the forward plumb_bob model to normalised image coordinates (x = X/Z, y = Y/Z).

    Returns:
        (xd, yd) distorted normalised coordinates, same shape and dtype as the inputs.
    """
    k1, k2, p1, p2, k3 = distortion
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xy2 = 2.0 * x * y
    xd = x * radial + p1 * xy2 + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + p2 * xy2
    return xd.astype(x.dtype, copy=False), yd.astype(y.dtype, copy=False)


def undistort_normalized(
    xd: np.ndarray,
    yd: np.ndarray,
    distortion: tuple[float, float, float, float, float],
    iterations: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Invert ``distort_normalized`` by fixed-point iteration (as OpenCV's undistortPoints).

    Returns:
        (x, y) undistorted normalised coordinates, float64.
    """
    k1, k2, p1, p2, k3 = distortion
    xd = np.asarray(xd, dtype=np.float64)
    yd = np.asarray(yd, dtype=np.float64)
    x, y = xd.copy(), yd.copy()
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        dx = 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
        dy = p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
        x = (xd - dx) / radial
        y = (yd - dy) / radial
    return x, y


def project_box(
    box_xyxy: tuple[float, float, float, float],
    distance_m: float,
    source: CameraIntrinsics,
    target: CameraIntrinsics,
    rotation: np.ndarray,
    translation_m: np.ndarray,
) -> tuple[float, float, float, float]:
    """Where a box of ``source``'s image, at ``distance_m``, lies in ``target``'s image.

    Used to find a person seen by the depth camera in the colour image: the box's corners and
    edge midpoints are put at the person's distance (along the optical axis, as depth is
    measured), moved into the target camera's frame and projected with its distortion. Boxes
    are in pixel-edge coordinates (pixel ``i`` spans ``i .. i + 1``, as ``PersonTruth`` and
    detections), the cameras' models put pixel centres at integers (``CameraIntrinsics``); so
    for a target that is the source resampled by ``s``, the box comes back times ``s``.

    Args:
        box_xyxy: (x1, y1, x2, y2) in ``source`` pixels.
        distance_m: the person's depth, metres.
        source: the camera of ``box_xyxy`` (depth).
        target: the camera to find the box in (colour).
        rotation: (3, 3), with ``translation_m`` the map ``p_target = rotation @ p_source +
            translation_m``.
        translation_m: (3,) metres.

    Returns:
        (x1, y1, x2, y2), the bounding box of the projected points in ``target`` pixels (it
        may reach outside the image).

    Raises:
        ValueError: a distance that is not positive and finite, or a box point that ends up
            behind the target camera.
    """
    if not (math.isfinite(distance_m) and distance_m > 0):
        raise ValueError(f"distance must be > 0 m, got {distance_m}")
    x1, y1, x2, y2 = (float(v) - 0.5 for v in box_xyxy)  # edges -> the model's coordinates
    xm, ym = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
    u = np.array([x1, xm, x2, x2, x2, xm, x1, x1])
    v = np.array([y1, y1, y1, ym, y2, y2, y2, ym])
    xn, yn = (u - source.cx) / source.fx, (v - source.cy) / source.fy
    if source.has_distortion:
        xn, yn = undistort_normalized(xn, yn, source.distortion)
    points = np.stack([xn, yn, np.ones_like(xn)]) * distance_m
    moved = np.asarray(rotation, np.float64) @ points + np.asarray(
        translation_m, np.float64
    ).reshape(3, 1)
    if not (moved[2] > MIN_THERMAL_Z_M).all():
        raise ValueError("the box lies behind the target camera")
    xt, yt = moved[0] / moved[2], moved[1] / moved[2]
    if target.has_distortion:
        xt, yt = distort_normalized(xt, yt, target.distortion)
    ut, vt = target.fx * xt + target.cx + 0.5, target.fy * yt + target.cy + 0.5
    return float(ut.min()), float(vt.min()), float(ut.max()), float(vt.max())


def max_monotonic_radius(distortion: tuple[float, float, float, float, float]) -> float:
    """Return the normalised radius up to which the radial distortion is monotonic (inf if always).

    Beyond it the forward model folds back and would map points far outside the field of view
    into the image, so the registration rejects them.
    """
    k1, k2, _, _, k3 = distortion
    if k1 == 0.0 and k2 == 0.0 and k3 == 0.0:
        return float("inf")
    r = np.linspace(0.0, 4.0, 40001)
    r2 = r * r
    slope = 1.0 + 3.0 * k1 * r2 + 5.0 * k2 * r2 * r2 + 7.0 * k3 * r2 * r2 * r2
    bad = np.flatnonzero(slope <= 0.0)
    return float(r[bad[0]]) if bad.size else float("inf")


def _block_indices(n_in: int, n_out: int) -> list[np.ndarray]:
    """Return per-offset index arrays that gather each output pixel's block of input pixels.

    Output pixel ``k`` covers the input pixels whose centres fall in its footprint
    ``[k * n_in / n_out, (k + 1) * n_in / n_out)``, and at least the pixel under its centre.
    Entry ``o`` of the list holds the ``o``-th pixel of every block (repeating the last one for
    shorter blocks), so a block minimum is an element-wise minimum over the list.
    """
    k = np.arange(n_out + 1, dtype=np.int64)
    edges = (2 * k * n_in + n_out) // (2 * n_out)
    centres = ((2 * k[:-1] + 1) * n_in) // (2 * n_out)
    starts = np.clip(np.minimum(edges[:-1], centres), 0, n_in - 1)
    sizes = np.clip(np.maximum(edges[1:], centres + 1), 1, n_in) - starts
    return [
        (starts + np.minimum(o, sizes - 1)).astype(np.intp) for o in range(int(sizes.max()))
    ]


def block_starts(n_in: int, n_out: int) -> np.ndarray:
    """(n_out,) the first input pixel of each output pixel's block (``_block_indices``)."""
    return _block_indices(n_in, n_out)[0]


def _as_slice(index: np.ndarray) -> slice | np.ndarray:
    """Return ``index`` as a slice when it is an arithmetic progression (a view, not a copy)."""
    if index.size == 1:
        return slice(int(index[0]), int(index[0]) + 1)
    step = int(index[1] - index[0])
    if step > 0 and np.all(np.diff(index) == step):
        return slice(int(index[0]), int(index[-1]) + 1, step)
    return index


def thermal_view_bounds(thermal: CameraIntrinsics, margin: float = 0.02) -> np.ndarray:
    """Return [x_min, x_max, y_min, y_max] of the thermal view in undistorted normalised coords.

    The image border (pixel edges at -0.5 and size - 0.5) is undistorted and its bounding box
    grown by ``margin`` (relative) so it contains every point that projects into the image;
    unbounded when the undistortion does not converge.
    """
    w, h = thermal.width, thermal.height
    us = np.linspace(-0.5, w - 0.5, 4 * w + 1)
    vs = np.linspace(-0.5, h - 0.5, 4 * h + 1)
    border = np.concatenate([
        np.stack([us, np.full_like(us, -0.5)], 1), np.stack([us, np.full_like(us, h - 0.5)], 1),
        np.stack([np.full_like(vs, -0.5), vs], 1), np.stack([np.full_like(vs, w - 0.5), vs], 1),
    ])
    xd = (border[:, 0] - thermal.cx) / thermal.fx
    yd = (border[:, 1] - thermal.cy) / thermal.fy
    x, y = xd, yd
    if thermal.has_distortion:
        x, y = undistort_normalized(xd, yd, thermal.distortion)
        xr, yr = distort_normalized(x, y, thermal.distortion)
        if not np.allclose(xr, xd, atol=1e-6) or not np.allclose(yr, yd, atol=1e-6):
            # The iteration did not converge (extreme distortion): do not cull anything.
            return np.array([-np.inf, np.inf, -np.inf, np.inf])
    norm = np.stack([x, y], axis=1)
    x_min, y_min = norm.min(axis=0)
    x_max, y_max = norm.max(axis=0)
    mx = margin * (x_max - x_min) + 1e-6
    my = margin * (y_max - y_min) + 1e-6
    return np.array([x_min - mx, x_max + mx, y_min - my, y_max + my])


class Registrar:
    """Registers thermal images into the depth camera's view; geometry precomputed once.

    Per output pixel (the depth camera's pixel grid resampled to ``out_size``):

    1. Depth sampling: the minimum of the *valid* depth pixels in the output pixel's block
       (the depth pixels whose centres fall in its footprint). The D435 leaves sparse holes, so
       a block is invalid only when all of it is; at a depth edge the nearer surface wins, which
       is the surface the thermal camera sees in front (consistent with the occlusion test) and
       keeps people from being eroded; the cost is at most one output pixel of foreground
       growth. A single centre sample would alias the noisy depth and lose a whole output pixel
       to one missing depth pixel. Depth below ``min_depth_m`` counts as invalid.
    2. Back-projection with the depth intrinsics scaled to the output grid (the D435 depth image
       is rectified; a non-zero depth distortion is undone once, when the rays are precomputed).
    3. ``p_thermal = R @ p_depth + t``, projection with the thermal intrinsics and the forward
       plumb_bob distortion.
    4. Thermal sampling: nearest thermal pixel. Radiometric values stay exact (no blending of a
       person's and the background's temperatures into temperatures nobody had), and the
       Lepton's 160x120 grid is close to the 1/6-scale output grid, so bilinear would add little.
    5. Occlusion: z-buffer in the thermal image. A point whose thermal-frame z exceeds the
       nearest point landing on the same thermal pixel by more than
       ``occlusion_tolerance_m + occlusion_tolerance_rel * z_nearest`` is hidden from the thermal
       camera. The relative term absorbs depth noise (grows with range) and the spread of z
       across one thermal pixel on surfaces seen at grazing angles (the floor).

    The output is 0 where the depth is invalid, the point is behind the thermal camera, outside
    its view (or beyond the monotonic range of its distortion), occluded, or the thermal pixel
    itself is 0. These are the zero patches ``iphd.noise.fix_zero_patches`` fills.

    Output pixels whose ray cannot reach the thermal view for any depth in [``min_depth_m``,
    65.535 m] are found once at construction; per frame only the depth under the others is
    sampled and projected, which keeps a frame at the IPHD scale near 1 ms.

    Args:
        depth_intrinsics: intrinsics of the depth images that will be registered onto.
        calibration: rig calibration (thermal intrinsics, depth->thermal extrinsic).
        out_size: (width, height) of the output; None = the depth image size. IPHD uses 1/6
            scale (213x120 from 1280x720).
        occlusion_tolerance_m: absolute part of the occlusion tolerance in metres.
        occlusion_tolerance_rel: relative part (fraction of the occluder's z).
        min_depth_m: smaller depths are invalid (the D435 cannot measure below ~0.1 m).

    Raises:
        ValueError: for a non-positive output size, a negative tolerance or a bad min depth.
    """

    def __init__(
        self,
        depth_intrinsics: CameraIntrinsics,
        calibration: RigCalibration,
        out_size: tuple[int, int] | None = None,
        occlusion_tolerance_m: float = 0.1,
        occlusion_tolerance_rel: float = 0.05,
        min_depth_m: float = 0.1,
    ) -> None:
        if out_size is None:
            out_size = (depth_intrinsics.width, depth_intrinsics.height)
        out_w, out_h = (int(v) for v in out_size)
        if out_w <= 0 or out_h <= 0:
            raise ValueError(f"out_size must be positive (width, height), got {out_size}")
        if not occlusion_tolerance_m >= 0.0 or not occlusion_tolerance_rel >= 0.0:
            raise ValueError(
                f"occlusion tolerances must be >= 0, got {occlusion_tolerance_m} m and "
                f"{occlusion_tolerance_rel}"
            )
        if not 0.001 <= min_depth_m < MAX_DEPTH_M:
            raise ValueError(f"min_depth_m must be in [0.001, {MAX_DEPTH_M}) m, got {min_depth_m}")
        self.depth_intrinsics = depth_intrinsics
        self.calibration = calibration
        self.out_size = (out_w, out_h)
        self.out_intrinsics = depth_intrinsics.scaled(out_w, out_h)
        self.occlusion_tolerance_m = float(occlusion_tolerance_m)
        self.occlusion_tolerance_rel = float(occlusion_tolerance_rel)
        self.min_depth_m = float(min_depth_m)
        self._min_depth_mm = np.uint16(int(np.ceil(min_depth_m * 1000.0)))
        th = calibration.thermal
        self._thermal_hw = (th.height, th.width)
        self._r2_max = max_monotonic_radius(th.distortion) ** 2
        tx, ty, tz = (float(v) for v in np.asarray(calibration.translation_m, dtype=np.float64))
        self._t = (np.float32(tx), np.float32(ty), np.float32(tz))

        rotation = np.asarray(calibration.rotation, dtype=np.float64)
        rays = (self._output_rays() @ rotation.T).reshape(out_h, out_w, 3)
        candidate = self._reachable(rays, np.array([tx, ty, tz]), thermal_view_bounds(th))
        self.candidate_mask = candidate
        rows = np.flatnonzero(candidate.any(axis=1))
        cols = np.flatnonzero(candidate.any(axis=0))
        if rows.size == 0:
            rows = cols = np.zeros(1, dtype=np.intp)
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        self._crop = (slice(r0, r1), slice(c0, c1))
        self._row_blocks = [
            _as_slice(i[r0:r1]) for i in _block_indices(depth_intrinsics.height, out_h)
        ]
        col_index = [i[c0:c1] for i in _block_indices(depth_intrinsics.width, out_w)]
        lo = min(int(i.min()) for i in col_index)
        hi = max(int(i.max()) for i in col_index) + 1
        # Only the depth columns under the candidate crop are read.
        self._depth_cols = slice(lo, hi)
        self._col_blocks = [_as_slice(i - lo) for i in col_index]
        crop_candidate = candidate[r0:r1, c0:c1]
        self._cand = np.flatnonzero(crop_candidate).astype(np.intp)
        ci, cj = np.nonzero(crop_candidate)
        self._cand_out = ((ci + r0) * out_w + (cj + c0)).astype(np.intp)
        cand_rays = rays[r0:r1, c0:c1].reshape(-1, 3)[self._cand]
        self._ray_x = np.ascontiguousarray(cand_rays[:, 0], dtype=np.float32)
        self._ray_y = np.ascontiguousarray(cand_rays[:, 1], dtype=np.float32)
        self._ray_z = np.ascontiguousarray(cand_rays[:, 2], dtype=np.float32)

    def _output_rays(self) -> np.ndarray:
        """Return (N, 3) float64 rays (x, y, 1) of the output pixel centres in the depth frame."""
        k = self.out_intrinsics
        out_w, out_h = self.out_size
        u, v = np.meshgrid(np.arange(out_w, dtype=np.float64), np.arange(out_h, dtype=np.float64))
        x = ((u - k.cx) / k.fx).ravel()
        y = ((v - k.cy) / k.fy).ravel()
        if k.has_distortion:
            x, y = undistort_normalized(x, y, k.distortion)
        return np.stack([x, y, np.ones_like(x)], axis=1)

    def _reachable(self, rays: np.ndarray, t: np.ndarray, bounds: np.ndarray) -> np.ndarray:
        """Return the (H, W) mask of output pixels that can land in the thermal view.

        ``p(z) = z * ray + t`` projects onto a straight segment between its images at the
        depth limits (the projection is monotonic in z while the point stays in front), so a
        pixel can reach the view only if the segment's bounding box meets the view's bounds.
        """
        z = np.array([self.min_depth_m, MAX_DEPTH_M])[:, None, None]
        p = z[..., None] * rays[None] + t  # (2, H, W, 3)
        den = p[..., 2]
        in_front = den > MIN_THERMAL_Z_M
        with np.errstate(divide="ignore", invalid="ignore"):
            x = p[..., 0] / den
            y = p[..., 1] / den
        meets = (
            (np.minimum(x[0], x[1]) <= bounds[1]) & (np.maximum(x[0], x[1]) >= bounds[0])
            & (np.minimum(y[0], y[1]) <= bounds[3]) & (np.maximum(y[0], y[1]) >= bounds[2])
        )
        # A segment with only one end in front of the camera crosses infinity: keep it.
        return (in_front[0] & in_front[1] & meets) | (in_front[0] ^ in_front[1])

    def _sample_crop(self, depth_mm: np.ndarray) -> np.ndarray:
        """Return the block-minimum valid depth over the candidate crop of the output grid.

        A block with no valid pixel comes back below ``min_depth_m`` (0 or a depth under it).
        """
        one = self._min_depth_mm
        # A depth under min_depth (0 included) minus min_depth wraps to 65536 - (min - depth)
        # in uint16, above every valid depth minus min_depth: invalid pixels lose every
        # minimum, and a block of only invalid pixels comes back, plus min_depth, under it.
        depth = depth_mm[:, self._depth_cols]
        first, *rest = self._row_blocks
        reduced = np.subtract(depth[first], one)
        if rest:
            scratch = np.empty_like(reduced)
            for rows in rest:
                np.subtract(depth[rows], one, out=scratch)
                np.minimum(reduced, scratch, out=reduced)
        first, *rest = self._col_blocks
        block = reduced[:, first]
        if rest and not isinstance(first, np.ndarray):
            block = block.copy()  # a view; the in-place minimum below must not alias reduced
        for cols in rest:
            np.minimum(block, reduced[:, cols], out=block)
        block += one
        return block

    def sample_depth(self, depth_mm: np.ndarray) -> np.ndarray:
        """Return the (out_h, out_w) uint16 block minimum of the valid depth in millimetres.

        0 where the block has no valid pixel or the pixel cannot see the thermal view.
        """
        out = np.zeros((self.out_size[1], self.out_size[0]), dtype=np.uint16)
        out[self._crop] = self._sample_crop(depth_mm)
        out[~self.candidate_mask | (out < self._min_depth_mm)] = 0
        return out

    def register(self, depth_mm: np.ndarray, thermal_ck: np.ndarray) -> np.ndarray:
        """Return the thermal image in the depth camera's view.

        Args:
            depth_mm: (H, W) uint16 depth in millimetres along the depth optical axis, 0 =
                invalid; H, W as in the depth intrinsics.
            thermal_ck: (h, w) uint16 temperature in centi-kelvin, 0 = no data; h, w as in the
                calibration's thermal intrinsics.

        Returns:
            (out_h, out_w) uint16 centi-kelvin in the depth optical frame, 0 = no thermal value.

        Raises:
            FrameError: wrong dtype, dimensionality or size.
        """
        di = self.depth_intrinsics
        check_image(
            depth_mm, "depth image", (di.height, di.width), "depth camera_info",
            "the camera_info must describe the image it comes with (same resolution stream)",
        )
        th_h, th_w = self._thermal_hw
        check_image(
            thermal_ck, "thermal image", (th_h, th_w), "rig calibration",
            "strip the Lepton telemetry rows (160x122 -> 160x120) or use the calibration "
            "made for this thermal resolution",
        )
        out_w, out_h = self.out_size
        out = np.zeros(out_h * out_w, dtype=np.uint16)
        if self._cand.size == 0:
            return out.reshape(out_h, out_w)

        depth = self._sample_crop(depth_mm).ravel().take(self._cand)
        sel = np.flatnonzero(depth >= self._min_depth_mm)
        z = depth[sel].astype(np.float32) * np.float32(1e-3)
        tx, ty, tz = self._t
        zt = z * self._ray_z[sel] + tz
        front = zt > MIN_THERMAL_Z_M
        if not front.all():
            sel, z, zt = sel[front], z[front], zt[front]
        inv = np.float32(1.0) / zt
        x = (z * self._ray_x[sel] + tx) * inv
        y = (z * self._ray_y[sel] + ty) * inv

        th = self.calibration.thermal
        if th.has_distortion:
            inside = (x * x + y * y) < self._r2_max
            if not inside.all():
                sel, zt, x, y = sel[inside], zt[inside], x[inside], y[inside]
            x, y = distort_normalized(x, y, th.distortion)
        # floor(u + 0.5) = nearest pixel; the view spans [-0.5, w - 0.5) around pixel centres.
        u = np.floor(x * np.float32(th.fx) + np.float32(th.cx + 0.5))
        v = np.floor(y * np.float32(th.fy) + np.float32(th.cy + 0.5))
        in_view = (u >= 0) & (u < th_w) & (v >= 0) & (v < th_h)
        if not in_view.all():
            sel, zt, u, v = sel[in_view], zt[in_view], u[in_view], v[in_view]
        pix = v.astype(np.intp) * th_w + u.astype(np.intp)

        zbuf = np.full(th_h * th_w, np.inf, dtype=np.float32)
        np.minimum.at(zbuf, pix, zt)
        nearest = zbuf.take(pix)
        tol = np.float32(self.occlusion_tolerance_m) + np.float32(
            self.occlusion_tolerance_rel
        ) * nearest
        visible = zt <= nearest + tol
        out[self._cand_out[sel[visible]]] = thermal_ck.ravel().take(pix[visible])
        return out.reshape(out_h, out_w)


_registrars: OrderedDict[tuple[object, ...], Registrar] = OrderedDict()


def get_registrar(
    depth_intrinsics: CameraIntrinsics,
    calibration: RigCalibration,
    out_size: tuple[int, int] | None = None,
    occlusion_tolerance_m: float = 0.1,
    occlusion_tolerance_rel: float = 0.05,
) -> Registrar:
    """Return a cached ``Registrar`` for these arguments (built on first use, LRU of 8)."""
    if not isinstance(depth_intrinsics, CameraIntrinsics):
        raise CameraInfoError(
            "depth intrinsics are missing: the depth camera_info has not been received yet "
            "(or carried no K matrix)"
        )
    key = (
        depth_intrinsics,
        None if out_size is None else (int(out_size[0]), int(out_size[1])),
        float(occlusion_tolerance_m),
        float(occlusion_tolerance_rel),
        calibration.thermal,
        np.asarray(calibration.rotation, dtype=np.float64).tobytes(),
        np.asarray(calibration.translation_m, dtype=np.float64).tobytes(),
    )
    registrar = _registrars.get(key)
    if registrar is None:
        registrar = Registrar(
            depth_intrinsics, calibration, out_size, occlusion_tolerance_m, occlusion_tolerance_rel
        )
        _registrars[key] = registrar
        if len(_registrars) > _CACHE_SIZE:
            _registrars.popitem(last=False)
    else:
        _registrars.move_to_end(key)
    return registrar


def register_thermal(
    depth_mm: np.ndarray,
    depth_intrinsics: CameraIntrinsics,
    thermal_ck: np.ndarray,
    calibration: RigCalibration,
    out_size: tuple[int, int] | None = None,
    occlusion_tolerance_m: float = 0.1,
    occlusion_tolerance_rel: float = 0.05,
) -> np.ndarray:
    """Register ``thermal_ck`` into the view of ``depth_mm``; see ``Registrar`` for the rules.

    Args:
        depth_mm: (H, W) uint16 depth in millimetres, 0 = invalid.
        depth_intrinsics: camera model of ``depth_mm``.
        thermal_ck: (h, w) uint16 centi-kelvin thermal image of the calibrated thermal camera.
        calibration: rig calibration.
        out_size: (width, height) of the output; None = the depth image size.
        occlusion_tolerance_m: absolute occlusion tolerance in metres.
        occlusion_tolerance_rel: occlusion tolerance as a fraction of the occluder's z.

    Returns:
        (out_h, out_w) uint16 centi-kelvin in the depth optical frame, 0 = no thermal value.

    Raises:
        FrameError: wrong dtype, dimensionality or size of either image.
        CameraInfoError: no depth intrinsics.
    """
    registrar = get_registrar(
        depth_intrinsics, calibration, out_size, occlusion_tolerance_m, occlusion_tolerance_rel
    )
    return registrar.register(depth_mm, thermal_ck)
