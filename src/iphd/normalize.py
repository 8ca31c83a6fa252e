"""Paper A input normalisation: registered thermal + depth -> 3-channel (T, T, D) float32 image."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from iphd.errors import FrameError

#: Depth mean in 0-255 units (after the [0.1 m, 10 m] clip and scaling) subtracted from the depth
#: channel: 75 is the value of 3.0 m, the typical mean of indoor person-detection depth frames.
#: It is a fixed constant so training and inference agree; a training run on another dataset
#: should measure its own mean and store it (with the rest of this config) in its checkpoint.
DEFAULT_DEPTH_MEAN = 75.0


@dataclass(frozen=True)
class NormalizeConfig:
    """Paper A normalisation constants.

    Attributes:
        thermal_min_k: lower thermal clip in kelvin (maps to 0).
        thermal_max_k: upper thermal clip in kelvin (maps to 255).
        subtract_ambient: subtract the ambient temperature (in the same 0-255 units) so the
            background sits near 0 and people stand out (paper A's contrast step).
        ambient_k: fixed ambient temperature in kelvin; None = ``estimate_ambient_k`` per frame.
        depth_min_m: lower depth clip in metres (maps to 0).
        depth_max_m: upper depth clip in metres (maps to 255).
        depth_mean: constant subtracted from the 0-255 depth channel (``DEFAULT_DEPTH_MEAN``).
        out_size: (width, height) of the network input; paper A tests at 448x256 (h x w =
            256 x 448).
        fill_zero_patches: fill the registered thermal image's zero patches
            (``iphd.noise.fix_zero_patches``, paper A's noise fixing) as the first step of the
            model's input, in training and at inference alike. Off for the shipped detector,
            which was trained on thermal with its zero patches, as the IPHD format stores it;
            the fusion node leaves them in by default for that reason.

    Invalid pixels (value 0) carry no signal: a thermal pixel without data takes the ambient
    temperature (0 after ambient subtraction) and an invalid depth pixel takes ``depth_mean``
    (0 after mean subtraction), the values a zero-padded convolution also sees at the border.
    """

    thermal_min_k: float = 283.15
    thermal_max_k: float = 313.15
    subtract_ambient: bool = True
    ambient_k: float | None = None
    depth_min_m: float = 0.1
    depth_max_m: float = 10.0
    depth_mean: float = DEFAULT_DEPTH_MEAN
    out_size: tuple[int, int] = (448, 256)
    fill_zero_patches: bool = False

    def __post_init__(self) -> None:
        """Reject clip ranges and sizes that cannot work."""
        if not 0.0 < self.thermal_min_k < self.thermal_max_k <= 655.35:
            raise ValueError(
                f"thermal clip must satisfy 0 < min < max <= 655.35 K, got "
                f"[{self.thermal_min_k}, {self.thermal_max_k}]"
            )
        if self.ambient_k is not None and not 0.0 < self.ambient_k <= 655.35:
            raise ValueError(f"ambient_k must be in (0, 655.35] K or None, got {self.ambient_k}")
        if not 0.0 < self.depth_min_m < self.depth_max_m <= 65.535:
            raise ValueError(
                f"depth clip must satisfy 0 < min < max <= 65.535 m, got "
                f"[{self.depth_min_m}, {self.depth_max_m}]"
            )
        if not np.isfinite(self.depth_mean):
            raise ValueError(f"depth_mean must be finite, got {self.depth_mean}")
        if (
            len(self.out_size) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in self.out_size)
        ):
            raise ValueError(f"out_size must be (width, height) positive ints, got {self.out_size}")


def estimate_ambient_k(
    thermal_ck: np.ndarray, min_k: float = 283.15, max_k: float = 313.15, bin_k: float = 0.5
) -> float:
    """Estimate the ambient (background) temperature of a thermal image.

    The estimate is the mode of a ``bin_k`` histogram of the valid pixels inside
    [``min_k``, ``max_k``], refined to the mean of the pixels in the modal bin. Walls, floor and
    furniture at room temperature form the most common temperature even when a person close to
    the camera fills half the view, where a median would be dragged towards the person;
    restricting to the clip range keeps lamps, screens, windows or the sky from winning. When
    no valid pixel lies in the range, the median of all valid pixels is returned.

    Args:
        thermal_ck: uint16 centi-kelvin image, 0 = no data.
        min_k: lower bound of the histogram in kelvin.
        max_k: upper bound of the histogram in kelvin.
        bin_k: histogram bin width in kelvin.

    Returns:
        The ambient temperature in kelvin.

    Raises:
        FrameError: the image has no valid (non-zero) pixel.
    """
    lo = int(round(min_k * 100.0))
    hi = int(round(max_k * 100.0))
    bin_ck = max(int(round(bin_k * 100.0)), 1)
    # One histogram per centi-kelvin value; bins, mode and the mean inside the modal bin are
    # then computed on the (hi - lo) counts instead of on the image.
    n = hi + 1 - lo
    counts = cv2.calcHist([thermal_ck], [0], None, [n], [lo, hi + 1]).ravel()
    n_bins = -(-counts.size // bin_ck)
    padded = np.zeros(n_bins * bin_ck, dtype=np.float64)
    padded[: counts.size] = counts
    per_bin = padded.reshape(n_bins, bin_ck).sum(axis=1)
    if per_bin.max() > 0:
        mode = int(np.argmax(per_bin))
        in_bin = padded[mode * bin_ck : (mode + 1) * bin_ck]
        temps_ck = lo + mode * bin_ck + np.arange(bin_ck)
        return float((in_bin * temps_ck).sum() / in_bin.sum()) / 100.0
    values = thermal_ck[thermal_ck != 0]
    if values.size == 0:
        raise FrameError(
            "cannot estimate the ambient temperature: the thermal image has no valid "
            "(non-zero) pixel; check the thermal stream and the registration coverage"
        )
    return float(np.median(values)) / 100.0


def _check(image: np.ndarray, name: str) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint16 or image.ndim != 2:
        raise FrameError(
            f"{name} must be an (H, W) uint16 array, got "
            f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', type(image).__name__)}"
        )


def _output(size: tuple[int, int], out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return np.empty((size[1], size[0]), dtype=np.float32)
    if out.shape != (size[1], size[0]) or out.dtype != np.float32:
        raise ValueError(f"out must be ({size[1]}, {size[0]}) float32, got {out.shape} {out.dtype}")
    return out


def normalize_thermal(
    thermal_ck: np.ndarray,
    config: NormalizeConfig,
    out_size: tuple[int, int] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return the (H, W) float32 thermal channel of paper A's input.

    ``(clip(T, min, max) - min) / (max - min) * 255``, minus the same transform of the ambient
    temperature when ``config.subtract_ambient``; pixels without data take the ambient value.
    Computed at the thermal image's size, then resized (bilinear up, area down) to ``out_size``
    (default ``config.out_size``), into ``out`` when given.

    Raises:
        FrameError: not an (H, W) uint16 image, or no valid pixel when the ambient is needed.
    """
    _check(thermal_ck, "thermal image")
    size = config.out_size if out_size is None else out_size
    result = _output(size, out)
    invalid = thermal_ck == 0
    has_invalid = bool(invalid.any())
    ambient_k = config.ambient_k
    if ambient_k is None and (config.subtract_ambient or has_invalid):
        ambient_k = estimate_ambient_k(thermal_ck, config.thermal_min_k, config.thermal_max_k)
    lo_ck = config.thermal_min_k * 100.0
    hi_ck = config.thermal_max_k * 100.0
    scale = 255.0 / (hi_ck - lo_ck)
    ambient = 0.0
    if ambient_k is not None:
        ambient = (min(max(ambient_k * 100.0, lo_ck), hi_ck) - lo_ck) * scale
    shift = -lo_ck * scale - (ambient if config.subtract_ambient else 0.0)
    same_size = (thermal_ck.shape[1], thermal_ck.shape[0]) == size
    channel = result if same_size else np.empty(thermal_ck.shape, dtype=np.float32)
    np.clip(thermal_ck, np.float32(lo_ck), np.float32(hi_ck), out=channel, casting="unsafe")
    channel *= np.float32(scale)
    channel += np.float32(shift)
    if has_invalid:
        channel[invalid] = np.float32(ambient + shift + lo_ck * scale)
    if not same_size:
        upscale = size[0] * size[1] >= thermal_ck.size
        cv2.resize(
            channel, size, dst=result, interpolation=cv2.INTER_LINEAR if upscale else cv2.INTER_AREA
        )
    return result


def normalize_depth(
    depth_mm: np.ndarray,
    config: NormalizeConfig,
    out_size: tuple[int, int] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return the (H, W) float32 depth channel of paper A's input.

    The depth is first resized to ``out_size`` (default ``config.out_size``) with nearest
    neighbour: any averaging would blend invalid zeros into valid depths and invent surfaces
    between a person and the wall, while nearest keeps measured values and holes exact (and is
    the cheapest on a 1280x720 frame). Then ``(clip(d, min, max) - min) / (max - min) * 255 -
    depth_mean``, with invalid pixels set to 0; written into ``out`` when given.

    Raises:
        FrameError: not an (H, W) uint16 image.
    """
    _check(depth_mm, "depth image")
    size = config.out_size if out_size is None else out_size
    result = _output(size, out)
    small = depth_mm
    if (depth_mm.shape[1], depth_mm.shape[0]) != size:
        small = cv2.resize(depth_mm, size, interpolation=cv2.INTER_NEAREST)
    lo = config.depth_min_m * 1000.0
    hi = config.depth_max_m * 1000.0
    scale = 255.0 / (hi - lo)
    np.clip(small, np.float32(lo), np.float32(hi), out=result, casting="unsafe")
    result *= np.float32(scale)
    result += np.float32(-lo * scale - config.depth_mean)
    result[small == 0] = 0.0
    return result


def normalize_pair(
    depth_mm: np.ndarray, thermal_ck: np.ndarray, config: NormalizeConfig | None = None
) -> np.ndarray:
    """Return paper A's early-fusion input: (3, H, W) float32 in channel order (T, T, D).

    Args:
        depth_mm: (H, W) uint16 depth in millimetres, 0 = invalid (e.g. 1280x720).
        thermal_ck: (h, w) uint16 thermal in centi-kelvin registered into the depth view, 0 =
            no data; any size with the depth image's field of view (e.g. 213x120).
        config: normalisation constants; default ``NormalizeConfig()``.

    Returns:
        (3, out_h, out_w) float32; see ``normalize_thermal`` and ``normalize_depth``.

    Raises:
        FrameError: wrong dtype or dimensionality, or a thermal image without valid pixels.
    """
    config = config if config is not None else NormalizeConfig()
    out_w, out_h = config.out_size
    out = np.empty((3, out_h, out_w), dtype=np.float32)
    normalize_thermal(thermal_ck, config, out=out[0])
    out[1] = out[0]
    normalize_depth(depth_mm, config, out=out[2])
    return out
