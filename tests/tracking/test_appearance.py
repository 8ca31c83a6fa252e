import logging

import numpy as np
import pytest
import torch

from iphd.errors import CheckpointError, ConfigError, FrameError
from iphd.reid.extractor import CropNormalizeConfig, save_embedder
from iphd.reid.model import Embedder, EmbedderConfig
from iphd.tracking import appearance
from iphd.tracking.appearance import (
    DepthPairing,
    crop_size,
    depth_crops,
    letterbox,
    load_extractor,
    query_pair_problem,
)


def _tiny(modality):
    torch.manual_seed(0)
    return Embedder(
        EmbedderConfig(
            backbone_depth=18,
            backbone_width=8,
            embedding_dim=16,
            input_size=(32, 16),
            modality=modality,
        )
    ).eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("reid")
    return {
        m: save_embedder(root / f"{m}.pt", _tiny(m), CropNormalizeConfig())
        for m in ("depth", "rgb")
    }


def test_explicit_checkpoint_loads_with_its_modality_and_crop_size(checkpoints):
    extractor = load_extractor(str(checkpoints["depth"]), "depth", "cpu")
    assert extractor is not None and extractor.modality == "depth" and extractor.dim == 16
    assert crop_size(extractor) == (16, 32)
    crops, _ = depth_crops(
        np.full((60, 80), 3000, np.uint16), [(10, 5, 30, 55)], crop_size(extractor)
    )
    out = extractor(crops)
    assert out.shape == (1, 16) and np.isclose(np.linalg.norm(out[0]), 1.0, atol=1e-5)


def test_none_disables_and_a_missing_shipped_file_warns_and_disables(
    checkpoints, monkeypatch, tmp_path, caplog
):
    assert load_extractor("none", "depth") is None
    assert load_extractor("None", "rgb") is None
    monkeypatch.setitem(appearance.SHIPPED_EMBEDDERS, "depth", tmp_path / "absent.pt")
    with caplog.at_level(logging.WARNING, logger="iphd.tracking.appearance"):
        assert load_extractor("", "depth", "cpu") is None
    assert "absent.pt" in caplog.text and "disabled" in caplog.text
    monkeypatch.setitem(appearance.SHIPPED_EMBEDDERS, "depth", checkpoints["depth"])
    assert load_extractor("", "depth", "cpu") is not None


def test_shipped_paths_live_in_the_package_models_folder():
    assert appearance.SHIPPED_DEPTH_EMBEDDER.parent.name == "models"
    assert appearance.SHIPPED_DEPTH_EMBEDDER.name == "reid_depth.pt"
    assert appearance.SHIPPED_RGB_EMBEDDER.name == "reid_rgb.pt"
    assert (appearance.SHIPPED_DEPTH_EMBEDDER.parent / "detector.pt").is_file()


def test_explicit_bad_paths_and_wrong_modality_raise(checkpoints, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_extractor(str(tmp_path / "missing.pt"), "depth", "cpu")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_extractor(str(junk), "depth", "cpu")
    with pytest.raises(ConfigError, match="embeds rgb crops but a depth embedder"):
        load_extractor(str(checkpoints["rgb"]), "depth", "cpu")
    with pytest.raises(ConfigError, match="modality"):
        load_extractor("", "thermal")


def test_depth_crops_skip_boxes_without_valid_depth_or_outside_the_image():
    depth = np.zeros((60, 80), np.uint16)
    depth[10:50, 10:30] = 2500
    depth[10:50, 50:70] = 4000
    boxes = [
        (10, 10, 30, 50),  # person
        (35, 10, 45, 50),  # only invalid depth
        (50, 10, 70, 50),  # person
        (float("nan"), 0, 5, 5),
        (100, 10, 120, 20),  # outside
        (20, 20, 20, 40),  # empty
    ]
    crops, indices = depth_crops(depth, boxes, (16, 32))
    assert indices == [0, 2]
    assert all(c.shape == (32, 16) and c.dtype == np.uint16 for c in crops)
    assert set(np.unique(crops[0])) <= {0, 2500} and 2500 in crops[0]
    assert 4000 in crops[1]
    assert depth_crops(depth, [], (16, 32)) == ([], [])
    with pytest.raises(FrameError, match="uint16"):
        depth_crops(depth.astype(np.float32), boxes, (16, 32))


def test_metric_depth_crops_need_focal_lengths_and_keep_body_size():
    depth = np.full((120, 160), 7000, np.uint16)
    depth[40:80, 20:40] = 2000  # 40 px tall at 2 m
    depth[50:70, 100:110] = 4000  # 20 px tall at 4 m: the same metric height
    boxes = [(20, 40, 40, 80), (100, 50, 110, 70)]
    metric = CropNormalizeConfig(depth_crop="metric")
    with pytest.raises(ConfigError, match="depth/camera_info"):
        depth_crops(depth, boxes, (16, 32), metric)
    crops, indices = depth_crops(depth, boxes, (16, 32), metric, (60.0, 60.0))
    assert indices == [0, 1]
    heights = [np.ptp(np.nonzero((c > 0) & (c < 7000))[0]) + 1 for c in crops]
    # 1.33 m of a 2.4 m window, both times (a letterbox would make both fill the crop).
    assert heights[0] == heights[1] == 18
    letterboxed, _ = depth_crops(depth, boxes, (16, 32), CropNormalizeConfig(), (60.0, 60.0))
    default, _ = depth_crops(depth, boxes, (16, 32))
    assert all(np.array_equal(a, b) for a, b in zip(letterboxed, default, strict=True))


def test_a_box_with_depth_only_in_its_margin_is_skipped():
    depth = np.zeros((60, 80), np.uint16)
    depth[:, 40:] = 3000  # right of the box, within crop_person's 10 % margin
    crops, indices = depth_crops(depth, [(20, 10, 39, 50)], (16, 32))
    assert indices == [] and crops == []


def test_letterbox_keeps_the_aspect_ratio():
    rgb = np.full((40, 40, 3), 200, np.uint8)
    out = letterbox(rgb, (16, 32))
    assert out.shape == (32, 16, 3)
    # A square fits as 16x16 in the middle, black bars above and below.
    assert out[:8].max() == 0 and out[24:].max() == 0 and out[8:24].min() == 200


def test_pairing_matches_either_order():
    pairing = DepthPairing()
    assert pairing.push_depth(100, "d100") == []
    (m,) = pairing.push_detections(100, "t100")
    assert (m.stamp_ns, m.detections, m.depth) == (100, "t100", "d100")
    assert pairing.push_detections(200, "t200") == [] and pairing.waiting == 1
    (m,) = pairing.push_depth(200, "d200")
    assert (m.stamp_ns, m.detections, m.depth) == (200, "t200", "d200")
    assert pairing.waiting == 0 and pairing.without_depth == 0


def test_detections_whose_depth_never_comes_are_released_without_depth_in_order():
    pairing = DepthPairing()
    pairing.push_detections(100, "t100")
    pairing.push_detections(200, "t200")
    pairing.push_depth(300, "d300")
    out = pairing.push_detections(300, "t300")
    assert [(m.stamp_ns, m.depth) for m in out] == [(100, None), (200, None), (300, "d300")]
    assert pairing.without_depth == 2 and pairing.waiting == 0
    # Depth more than max_wait newer also gives up on a waiting message.
    pairing.push_detections(400, "t400")
    out = pairing.push_depth(400 + 2_000_000_000, "late")
    assert [(m.stamp_ns, m.detections, m.depth) for m in out] == [(400, "t400", None)]


def test_buffer_overflow_releases_the_oldest_detections():
    pairing = DepthPairing()
    released = []
    for i in range(12):
        released += pairing.push_detections(1000 + i, f"t{i}")
    assert [m.detections for m in released] == ["t0", "t1"]
    assert pairing.waiting == pairing.pairer.registered_buffer


def test_flush_releases_everything_and_duplicates_are_refused():
    pairing = DepthPairing()
    pairing.push_detections(100, "a")
    assert pairing.push_detections(100, "again") == [] and pairing.duplicates == 1
    pairing.push_detections(200, "b")
    assert [(m.detections, m.depth) for m in pairing.flush()] == [("a", None), ("b", None)]
    assert pairing.waiting == 0 and pairing.flush() == []


def test_a_backward_jump_releases_the_old_timeline_first():
    pairing = DepthPairing()
    pairing.push_detections(10_000_000_000, "old")
    out = pairing.push_detections(1_000_000_000, "new")
    assert [(m.detections, m.depth) for m in out] == [("old", None)]
    (m,) = pairing.push_depth(1_000_000_000, "d")
    assert (m.detections, m.depth) == ("new", "d")
    pairing.push_detections(2_000_000_000, "x")
    pairing.reset()
    assert pairing.waiting == 0 and pairing.push_depth(2_000_000_000, "d2") == []


def test_an_own_depth_embedder_beside_the_shipped_rgb_one_is_a_problem_for_queries():
    # The shipped RGB network answers in the shipped depth embedder's space only.
    problem = query_pair_problem("out/train/reid/my_depth/model.pt", "")
    assert problem is not None
    assert "my_depth/model.pt" in problem and "query_checkpoint" in problem
    assert "step.teacher" in problem and "eval_reid.py" in problem
    # The shipped RGB network named by its path is the same pair.
    assert query_pair_problem("mine.pt", str(appearance.SHIPPED_RGB_EMBEDDER)) is not None
    # The shipped pair, a pair of your own, or queries or appearance switched off are fine.
    for depth, rgb in (("", ""), ("mine.pt", "my_rgb.pt"), ("mine.pt", "none"),
                       ("none", ""), ("", "my_rgb.pt"),
                       (str(appearance.SHIPPED_DEPTH_EMBEDDER), ""),
                       (str(appearance.SHIPPED_DEPTH_EMBEDDER),
                        str(appearance.SHIPPED_RGB_EMBEDDER))):
        assert query_pair_problem(depth, rgb) is None
