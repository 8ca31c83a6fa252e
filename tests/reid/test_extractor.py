import dataclasses

import numpy as np
import pytest
import torch

from iphd.errors import CheckpointError, ConfigError, FrameError
from iphd.reid.extractor import (
    CropNormalizeConfig,
    FeatureExtractor,
    load_embedder,
    normalize_depth_crop,
    normalize_rgb_crop,
    save_embedder,
)
from iphd.reid.model import Embedder, EmbedderConfig

TINY = EmbedderConfig(backbone_depth=18, backbone_width=8, embedding_dim=16, input_size=(32, 16))
NORM = CropNormalizeConfig()


def _model(config=TINY):
    torch.manual_seed(0)
    model = Embedder(config)
    model.train()(torch.randn(8, config.in_channels, 32, 16))  # non-trivial BNNeck statistics
    return model.eval()


def _depth_crops(n, shape=(32, 16)):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 9000, shape).astype(np.uint16) for _ in range(n)]


def _rgb_crops(n, shape=(32, 16, 3)):
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, shape).astype(np.uint8) for _ in range(n)]


def test_depth_normalisation_by_hand():
    depth = np.array([[0, 500], [8000, 4250], [20000, 100]], dtype=np.uint16)
    out = normalize_depth_crop(depth, NORM)
    assert out.shape == (3, 3, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], out[2])
    unit = np.array([[np.nan, 0.0], [1.0, 0.5], [1.0, 0.0]])
    expected = (unit - NORM.depth_mean) / NORM.depth_std
    expected[0, 0] = NORM.depth_invalid
    np.testing.assert_allclose(out[0], expected, atol=1e-5)


def test_depth_resize_keeps_measured_values():
    depth = np.full((64, 32), 3000, dtype=np.uint16)
    depth[:, :16] = 0
    out = normalize_depth_crop(depth, NORM, size_hw=(32, 16))
    assert out.shape == (3, 32, 16)
    valid = (2500 / 7500 - NORM.depth_mean) / NORM.depth_std
    np.testing.assert_allclose(out[0, :, :8], NORM.depth_invalid)  # no blending at the edge
    np.testing.assert_allclose(out[0, :, 8:], valid, atol=1e-5)


def test_rgb_normalisation_is_imagenet():
    rgb = np.zeros((4, 2, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    out = normalize_rgb_crop(rgb, NORM, size_hw=(8, 4))
    assert out.shape == (3, 8, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], (np.array([1.0, 0, 0]) - NORM.rgb_mean)
                               / NORM.rgb_std, atol=1e-5)


@pytest.mark.parametrize(
    ("func", "crop", "message"),
    [
        (normalize_depth_crop, np.zeros((4, 4), np.uint16), "no valid depth in the crop"),
        (normalize_depth_crop, np.zeros((0, 4), np.uint16), "empty"),
        (normalize_depth_crop, np.ones((4, 4), np.float32),
         r"expected a depth crop \(H, W\) uint16 in mm, got \(4, 4\) float32"),
        (normalize_rgb_crop, np.ones((4, 4), np.uint8),
         r"expected a rgb crop \(H, W, 3\) uint8, got \(4, 4\) uint8"),
        (normalize_rgb_crop, np.ones((0, 0, 3), np.uint8), "empty"),
    ],
)
def test_bad_crops_are_frame_errors(func, crop, message):
    with pytest.raises(FrameError, match=message):
        func(crop, NORM)


def test_bad_normalize_config_names_the_field():
    with pytest.raises(ConfigError, match="depth_std"):
        CropNormalizeConfig(depth_std=0.0)
    with pytest.raises(ConfigError, match="depth_min_m"):
        CropNormalizeConfig(depth_min_m=9.0)
    with pytest.raises(ConfigError, match="depth_crop must be one of letterbox, metric"):
        CropNormalizeConfig(depth_crop="square")
    with pytest.raises(ConfigError, match="depth_reference"):
        CropNormalizeConfig(depth_reference="floor")
    with pytest.raises(ConfigError, match="depth_window_m"):
        CropNormalizeConfig(depth_window_m=(1.0, 0.0))
    with pytest.raises(ConfigError, match="depth_range_m"):
        CropNormalizeConfig(depth_range_m=0.0)


def test_person_relative_depth_does_not_depend_on_where_the_person_stands():
    norm = CropNormalizeConfig(depth_reference="person", depth_mean=0.5, depth_std=0.25)
    crop = np.full((40, 20), 9000, np.uint16)  # wall
    crop[5:35, 5:15] = 2000  # person
    crop[30:35, 5:15] = 2300  # a part 30 cm behind the front
    crop[0, 0] = 0
    near = normalize_depth_crop(crop, norm)
    far_crop = np.where(crop > 0, crop.astype(np.int64) + 3000, 0).astype(np.uint16)
    np.testing.assert_allclose(normalize_depth_crop(far_crop, norm), near, atol=1e-5)
    # By hand: person at 0.5, 30 cm behind at 0.5 + 0.3 / 2, the wall clipped to 1, hole invalid.
    assert near[0, 10, 10] == pytest.approx(0.0, abs=1e-5)
    assert near[0, 32, 10] == pytest.approx(0.15 / 0.25, abs=1e-5)
    assert near[0, 1, 1] == pytest.approx(0.5 / 0.25, abs=1e-5)
    assert near[0, 0, 0] == norm.depth_invalid


def test_embeddings_are_unit_vectors_and_batch_invariant():
    model = _model()
    crops = _depth_crops(5, shape=(40, 20))
    small = FeatureExtractor(model, NORM, device="cpu", batch_size=2)(crops)
    large = FeatureExtractor(model, NORM, device="cpu", batch_size=32)(crops)
    assert small.shape == (5, 16) and small.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(small, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(small, large, atol=1e-5)
    empty = FeatureExtractor(model, NORM, device="cpu")([])
    assert empty.shape == (0, 16) and empty.dtype == np.float32


def test_wrong_modality_is_a_config_error():
    extractor = FeatureExtractor(_model(), NORM, device="cpu")
    with pytest.raises(ConfigError,
                       match=r"this checkpoint embeds depth crops, got RGB \(32, 16, 3\) uint8"):
        extractor(_rgb_crops(1))
    with pytest.raises(FrameError, match="no valid depth"):
        extractor([np.zeros((32, 16), np.uint16)])


def test_baselines_embed_both_modalities():
    crops = _depth_crops(2) + _rgb_crops(2)
    for modality in ("both", "zero-padding"):
        model = _model(dataclasses.replace(TINY, modality=modality))
        out = FeatureExtractor(model, NORM, device="cpu", batch_size=3)(crops)
        assert out.shape == (4, 16)


def test_checkpoint_round_trip(tmp_path):
    model = _model(dataclasses.replace(TINY, num_classes=3))
    norm = CropNormalizeConfig(depth_max_m=6.0, rgb_mean=(0.5, 0.5, 0.5))
    path = save_embedder(tmp_path / "sub" / "reid.pt", model, norm, extra={"epoch": 7})
    loaded, loaded_norm, extra = load_embedder(path)
    assert loaded.config == model.config and loaded_norm == norm and extra == {"epoch": 7}
    assert not loaded.training
    crops = _depth_crops(3)
    np.testing.assert_allclose(
        FeatureExtractor(path, device="cpu")(crops),
        FeatureExtractor(model, norm, device="cpu")(crops), atol=1e-6,
    )


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_embedder(tmp_path / "missing.pt")
    # A training run's folder instead of one of its files: the files are named.
    run = tmp_path / "my_pair"
    run.mkdir()
    (run / "model_depth.pt").write_bytes(b"")
    (run / "model_rgb.pt").write_bytes(b"")
    (run / "log.csv").write_text("")
    with pytest.raises(CheckpointError, match="is a folder .* model_depth.pt, model_rgb.pt$"):
        load_embedder(run)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_embedder(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "iphd-detector", "version": 1}, foreign)
    with pytest.raises(CheckpointError, match="not an iphd re-ID embedder checkpoint"):
        load_embedder(foreign)
    path = save_embedder(tmp_path / "ok.pt", _model(), NORM)
    payload = torch.load(path, weights_only=True)
    payload["version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_embedder(tmp_path / "future.pt")
    payload["version"] = 1
    payload["embedder_config"]["embedding_dim"] = 32
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="weights do not match"):
        load_embedder(tmp_path / "mismatch.pt")
    payload["embedder_config"]["modality"] = "thermal"
    torch.save(payload, tmp_path / "badcfg.pt")
    with pytest.raises(CheckpointError, match="stored configuration is invalid"):
        load_embedder(tmp_path / "badcfg.pt")


def test_extractor_rejects_bad_settings(tmp_path):
    with pytest.raises(ConfigError, match="batch_size"):
        FeatureExtractor(_model(), NORM, device="cpu", batch_size=0)
    with pytest.raises(ConfigError, match="device"):
        FeatureExtractor(_model(), NORM, device="tpu")
    path = save_embedder(tmp_path / "m.pt", _model(), NORM)
    with pytest.raises(ConfigError, match="from the checkpoint"):
        FeatureExtractor(path, NORM, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            FeatureExtractor(_model(), NORM, device="cuda")
        assert FeatureExtractor(_model(), NORM).device.type == "cpu"
