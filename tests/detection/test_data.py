import numpy as np
import pytest
import torch
from tiny_iphd import ANY_SIZE, DEPTH_H, DEPTH_W, make_tiny_iphd

from iphd.data.iphd import IphdDataset
from iphd.detection.data import (
    AugmentConfig,
    DetectionDataset,
    MultiScaleBatchSampler,
    collate,
    input_size_for,
)
from iphd.errors import ConfigError
from iphd.normalize import NormalizeConfig


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = make_tiny_iphd(tmp_path_factory.mktemp("iphd"))
    return IphdDataset(root, "train", **ANY_SIZE)


def test_input_size_keeps_paper_aspect_on_stride_multiples():
    assert input_size_for(256) == (256, 448)
    assert input_size_for(128) == (128, 224)
    assert input_size_for(512) == (512, 896)
    with pytest.raises(ConfigError, match="multiple of 32"):
        input_size_for(100)


def test_items_are_normalised_at_the_asked_size_with_boxes_scaled(frames):
    data = DetectionDataset(frames, "early", NormalizeConfig(), min_box_px=0.0)
    image, boxes, name = data[(0, 64)]
    assert image.shape == (3, 64, 128) and image.dtype == torch.float32
    sample = frames[0]
    assert name == sample.name
    scale = np.array([128 / DEPTH_W, 64 / DEPTH_H] * 2)
    np.testing.assert_allclose(boxes.numpy(), sample.boxes_xyxy * scale, rtol=1e-5)
    assert torch.equal(image[0], image[1])  # (T, T, D)


def test_concatenated_splits_and_limit(tmp_path):
    root = make_tiny_iphd(tmp_path, {"train": 3, "valid": 2})
    parts = [IphdDataset(root, s, **ANY_SIZE) for s in ("train", "valid")]
    data = DetectionDataset(parts, "depth", NormalizeConfig())
    assert len(data) == 5
    assert data[(4, 32)][2] == parts[1].names[1]
    assert len(DetectionDataset(parts, "depth", NormalizeConfig(), limit=2)) == 2
    with pytest.raises(IndexError):
        data[(5, 32)]


def test_flip_mirrors_image_and_boxes(frames):
    plain = DetectionDataset(frames, "early", NormalizeConfig(), min_box_px=0.0)
    flip_only = AugmentConfig(flip=True, photometric=False)
    for seed in range(8):  # some draws flip, some do not
        aug = DetectionDataset(frames, "early", NormalizeConfig(), flip_only, seed, 0.0)
        image, boxes, _ = aug[(1, 64)]
        ref_image, ref_boxes, _ = plain[(1, 64)]
        if torch.equal(image, ref_image):
            assert torch.equal(boxes, ref_boxes)
            continue
        assert torch.equal(image, ref_image.flip(-1))
        mirrored = ref_boxes.clone()
        mirrored[:, [0, 2]] = 128 - ref_boxes[:, [2, 0]]
        assert torch.allclose(boxes, mirrored)
        return
    pytest.fail("no flip in 8 draws")


def test_photometric_changes_thermal_channels_only_and_keeps_them_equal(frames):
    aug = AugmentConfig(flip=False, photometric=True)
    plain = DetectionDataset(frames, "early", NormalizeConfig())[(0, 64)][0]
    image = DetectionDataset(frames, "early", NormalizeConfig(), aug, seed=3)[(0, 64)][0]
    assert torch.equal(image[2], plain[2])
    assert not torch.equal(image[0], plain[0])
    assert torch.equal(image[0], image[1])
    depth_only = DetectionDataset(frames, "depth", NormalizeConfig(), aug, seed=3)[(0, 64)][0]
    assert torch.equal(depth_only, DetectionDataset(frames, "depth", NormalizeConfig())[(0, 64)][0])


def test_augmentation_is_reproducible_per_seed_epoch_and_index(frames):
    aug = AugmentConfig()
    a = DetectionDataset(frames, "early", NormalizeConfig(), aug, seed=1)
    b = DetectionDataset(frames, "early", NormalizeConfig(), aug, seed=1)
    assert torch.equal(a[(2, 64)][0], b[(2, 64)][0])
    b.set_epoch(1)
    assert not torch.equal(a[(2, 64)][0], b[(2, 64)][0])


def test_small_boxes_are_dropped(frames):
    data = DetectionDataset(frames, "early", NormalizeConfig(), min_box_px=1000.0)
    assert data[(0, 64)][1].shape == (0, 4)


def test_batches_share_one_size_and_ranks_split_the_epoch():
    sides = [64, 96, 128]
    seen = []
    for rank in range(2):
        sampler = MultiScaleBatchSampler(10, 2, sides, seed=5, rank=rank, world_size=2)
        sampler.set_epoch(3)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 2  # 5 frames per rank, last one dropped
        for batch in batches:
            assert len({side for _, side in batch}) == 1
            assert batch[0][1] in sides
        seen.append({i for batch in batches for i, _ in batch})
    assert not seen[0] & seen[1]


def test_sampler_order_without_shuffle_covers_everything():
    sampler = MultiScaleBatchSampler(5, 2, [64], shuffle=False, drop_last=False)
    assert [i for b in sampler for i, _ in b] == [0, 1, 2, 3, 4]
    assert len(sampler) == 3


def test_collate_stacks_images_and_keeps_boxes_per_image(frames):
    data = DetectionDataset(frames, "early", NormalizeConfig())
    images, boxes, names = collate([data[(0, 64)], data[(1, 64)]])
    assert images.shape == (2, 3, 64, 128)
    assert len(boxes) == 2 and len(names) == 2


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"short_sides": []}, {"rank": 2}])
def test_sampler_rejects_bad_settings(kwargs):
    args = {"num_frames": 4, "batch_size": 2, "short_sides": [64], **kwargs}
    with pytest.raises(ConfigError):
        MultiScaleBatchSampler(**args)
