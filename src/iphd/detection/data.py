"""Detector training data: IPHD frames → normalised tensors and boxes, multi-scale, augmented."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from iphd.data.iphd import IphdDataset
from iphd.detection.detector import fusion_input
from iphd.errors import ConfigError, DatasetError, FrameError
from iphd.normalize import NormalizeConfig

#: Width / height of paper A's test input (448 × 256), kept at every training scale.
ASPECT = 448 / 256


def input_size_for(short_side: int, multiple: int = 32) -> tuple[int, int]:
    """(H, W) network input for a short side, long side at :data:`ASPECT` rounded to ``multiple``.

    Raises:
        ConfigError: if ``short_side`` is not a positive multiple of ``multiple``.
    """
    if short_side < multiple or short_side % multiple:
        raise ConfigError(
            f"short side {short_side} must be a positive multiple of {multiple} "
            "(the network's largest stride)"
        )
    return short_side, multiple * round(short_side * ASPECT / multiple)


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; paper A: horizontal flip and thermal photometric distortion."""

    flip: bool = True  # mirror image and boxes with probability 0.5
    photometric: bool = True  # random gain, offset and noise on the thermal channels
    thermal_gain: tuple[float, float] = (0.8, 1.2)  # uniform multiplicative range
    thermal_offset: float = 10.0  # uniform additive range ±, in 0-255 normalised units
    thermal_noise: float = 2.0  # std of additive Gaussian noise, 0-255 normalised units

    def __post_init__(self) -> None:
        """Reject ranges that cannot be sampled.

        Raises:
            ConfigError: naming the field.
        """
        lo, hi = self.thermal_gain
        if not 0.0 < lo <= hi:
            raise ConfigError(f"thermal_gain must satisfy 0 < low <= high, got {self.thermal_gain}")
        if self.thermal_offset < 0 or self.thermal_noise < 0:
            raise ConfigError(
                "thermal_offset and thermal_noise must be >= 0, got "
                f"{self.thermal_offset} and {self.thermal_noise}"
            )


#: Channels of the network input that carry thermal data, per fusion mode.
THERMAL_CHANNELS: dict[str, tuple[int, ...]] = {
    "early": (0, 1),
    "intermediate": (0, 1),
    "late": (0, 1),
    "thermal": (0, 1, 2),
    "depth": (),
}


class DetectionDataset(torch.utils.data.Dataset[tuple[Tensor, Tensor, str]]):
    """An :class:`IphdDataset` as network inputs, indexed by ``(frame index, short side)``.

    Each item is ``(image (3, H, W) float32, boxes (M, 4) float32 xyxy in input pixels, name)``
    with (H, W) = :func:`input_size_for` ``(short_side)``; the frame is normalised straight to
    that size (no second resampling). Boxes smaller than ``min_box_px`` on either side after
    scaling are dropped: no anchor can match them and they only add noise.

    Args:
        frames: the split(s) to read; several are concatenated in order (paper A trains on
            train + val).
        fusion: the detector's fusion mode (decides the channels and which ones are thermal).
        normalize: normalisation constants; ``out_size`` is replaced per item.
        augment: training augmentation, or None for evaluation.
        seed: base seed of the augmentation; each item's randomness depends only on
            (seed, epoch, index), so runs are reproducible whatever the worker count.
        min_box_px: smallest kept box side in input pixels.
        limit: use only the first ``limit`` frames (smoke runs); None = all.
    """

    def __init__(
        self,
        frames: IphdDataset | Sequence[IphdDataset],
        fusion: str,
        normalize: NormalizeConfig,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        min_box_px: float = 2.0,
        limit: int | None = None,
    ) -> None:
        if fusion not in THERMAL_CHANNELS:
            raise ConfigError(f"fusion {fusion!r} is not one of {tuple(THERMAL_CHANNELS)}")
        self.parts = [frames] if isinstance(frames, IphdDataset) else list(frames)
        if not self.parts:
            raise ConfigError("DetectionDataset needs at least one IPHD split")
        self._starts = np.cumsum([0] + [len(p) for p in self.parts])
        total = int(self._starts[-1])
        self._length = total if limit is None else max(0, min(total, int(limit)))
        self.fusion = fusion
        self.normalize = normalize
        self.augment = augment
        self.seed = seed
        self.min_box_px = min_box_px
        self.epoch = 0

    def __len__(self) -> int:
        return self._length

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (call once per epoch, before iterating)."""
        self.epoch = epoch

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor, str]:
        """Load frame ``key[0]`` at short side ``key[1]``.

        Raises:
            DatasetError: the frame cannot be read or normalised (names the frame).
        """
        index, short_side = key
        if not 0 <= index < len(self):
            raise IndexError(f"frame index {index} out of range for {len(self)} frames")
        part = int(np.searchsorted(self._starts, index, side="right")) - 1
        frames = self.parts[part]
        sample = frames[index - int(self._starts[part])]
        height, width = input_size_for(short_side)
        config = dataclasses.replace(self.normalize, out_size=(width, height))
        try:
            image = fusion_input(sample.depth_mm, sample.thermal_ck, self.fusion, config)
        except FrameError as exc:
            raise DatasetError(f"frame {sample.name} of {frames.depth_dir}: {exc}") from exc
        src_h, src_w = sample.depth_mm.shape
        scale = np.array([width / src_w, height / src_h] * 2, dtype=np.float32)
        boxes = sample.boxes_xyxy.reshape(-1, 4) * scale
        if self.augment is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image, boxes = _augment(image, boxes, self.augment, THERMAL_CHANNELS[self.fusion], rng)
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        boxes = boxes[sides >= self.min_box_px]
        return torch.from_numpy(image), torch.from_numpy(boxes.astype(np.float32)), sample.name


def _augment(
    image: np.ndarray,
    boxes: np.ndarray,
    config: AugmentConfig,
    thermal: tuple[int, ...],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    width = image.shape[2]
    if config.flip and rng.random() < 0.5:
        image = np.ascontiguousarray(image[:, :, ::-1])
        boxes = boxes.copy()
        boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    if config.photometric and thermal:
        gain = rng.uniform(*config.thermal_gain)
        offset = rng.uniform(-config.thermal_offset, config.thermal_offset)
        channel = image[thermal[0]] * np.float32(gain) + np.float32(offset)
        if config.thermal_noise > 0:
            noise = rng.standard_normal(channel.shape, dtype=np.float32)
            channel += noise * np.float32(config.thermal_noise)
        for c in thermal:  # the thermal channels stay identical copies
            image[c] = channel
    return image, boxes


def collate(batch: Sequence[tuple[Tensor, Tensor, str]]) -> tuple[Tensor, list[Tensor], list[str]]:
    """Stack same-size images; boxes and names stay per image."""
    images, boxes, names = zip(*batch, strict=True)
    return torch.stack(images), list(boxes), list(names)


class MultiScaleBatchSampler(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """Batches of ``(index, short_side)`` with one random short side per batch, shardable.

    Every epoch the frames are shuffled with (seed, epoch), cut into this rank's share
    (``rank::world_size`` after padding to a multiple of the world size, as PyTorch's
    ``DistributedSampler``) and grouped into batches; each batch draws one short side, so the
    images of a batch have the same size.

    Args:
        num_frames: frames in the dataset.
        batch_size: images per batch on this rank.
        short_sides: candidate short sides (px).
        shuffle: shuffle the order (training) or keep it (evaluation).
        drop_last: drop a final incomplete batch.
        seed: shuffling and scale seed, the same on every rank.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(
        self,
        num_frames: int,
        batch_size: int,
        short_sides: Sequence[int],
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_frames < 1:
            raise ConfigError("the dataset has no frames")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if not short_sides:
            raise ConfigError("short_sides must name at least one size")
        for side in short_sides:
            input_size_for(side)
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside world size {world_size}")
        self.num_frames = num_frames
        self.batch_size = batch_size
        self.short_sides = tuple(int(s) for s in short_sides)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffle and scale draw (call once per epoch, on every rank)."""
        self.epoch = epoch

    def _indices(self) -> list[int]:
        if self.shuffle:
            rng = np.random.default_rng((self.seed, self.epoch))
            order = rng.permutation(self.num_frames).tolist()
        else:
            order = list(range(self.num_frames))
        per_rank = math.ceil(self.num_frames / self.world_size)
        order += order[: per_rank * self.world_size - len(order)]
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        per_rank = math.ceil(self.num_frames / self.world_size)
        if self.drop_last:
            return max(per_rank // self.batch_size, 1 if per_rank < self.batch_size else 0)
        return math.ceil(per_rank / self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        indices = self._indices()
        rng = np.random.default_rng((self.seed, self.epoch, 1))
        size = self.batch_size
        batches = [indices[i : i + size] for i in range(0, len(indices), size)]
        if self.drop_last and len(batches) > 1 and len(batches[-1]) < self.batch_size:
            batches.pop()
        for batch in batches:
            side = self.short_sides[int(rng.integers(len(self.short_sides)))]
            yield [(index, side) for index in batch]
