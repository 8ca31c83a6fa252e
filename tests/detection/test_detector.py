import numpy as np
import pytest
import torch

from iphd.detection.detector import (
    Detector,
    fusion_input,
    load_checkpoint,
    save_checkpoint,
)
from iphd.detection.model import DetectorConfig, FusionDetector
from iphd.errors import CheckpointError, ConfigError, FrameError
from iphd.normalize import NormalizeConfig

SMALL = DetectorConfig(backbone_depth=18, head_channels=32, input_size=(64, 96),
                       score_threshold=0.0, max_detections=5)
NORM = NormalizeConfig(out_size=(96, 64))


def _frames():
    rng = np.random.default_rng(0)
    depth = rng.integers(500, 6000, (120, 212)).astype(np.uint16)
    thermal = rng.integers(29000, 31000, (60, 106)).astype(np.uint16)
    return depth, thermal


def test_fusion_inputs_stack_the_right_channels():
    depth, thermal = _frames()
    early = fusion_input(depth, thermal, "early", NORM)
    only_d = fusion_input(depth, thermal, "depth", NORM)
    only_t = fusion_input(depth, thermal, "thermal", NORM)
    assert early.shape == (3, 64, 96) and early.dtype == np.float32
    np.testing.assert_array_equal(early[0], early[1])
    np.testing.assert_array_equal(only_t[2], early[0])  # (T, T, T)
    np.testing.assert_array_equal(only_d[0], early[2])  # (D, D, D)
    assert not np.array_equal(early[0], early[2])
    for two_stream in ("intermediate", "late"):  # the model splits (T, T, D) itself
        np.testing.assert_array_equal(fusion_input(depth, thermal, two_stream, NORM), early)


def test_a_model_trained_on_filled_thermal_fills_the_zero_patches_itself(tmp_path):
    from dataclasses import replace

    from iphd.noise import fix_zero_patches

    depth, thermal = _frames()
    thermal[:, :20] = 0  # outside the Lepton's view
    thermal[30:40, 50:60] = 0  # an occlusion shadow
    filling = replace(NORM, fill_zero_patches=True)
    filled = fusion_input(depth, thermal, "early", filling)
    np.testing.assert_array_equal(
        filled, fusion_input(depth, fix_zero_patches(thermal), "early", NORM)
    )
    # Without it (the shipped detector) a hole reads as the room: 0 after ambient subtraction.
    kept = fusion_input(depth, thermal, "early", NORM)
    assert not np.array_equal(filled, kept) and kept[0, 0, 0] == 0.0
    # The setting travels with the checkpoint; one saved before it existed keeps its holes.
    path = save_checkpoint(tmp_path / "m.pt", FusionDetector(SMALL), filling)
    assert load_checkpoint(path)[1].fill_zero_patches
    payload = torch.load(path, weights_only=False)
    del payload["normalize_config"]["fill_zero_patches"]
    torch.save(payload, tmp_path / "old.pt")
    assert not load_checkpoint(tmp_path / "old.pt")[1].fill_zero_patches


def test_fusion_input_rejects_an_unknown_mode():
    depth, thermal = _frames()
    with pytest.raises(ConfigError, match="'mid'.*early, depth, thermal, intermediate, late"):
        fusion_input(depth, thermal, "mid", NORM)


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = FusionDetector(SMALL)
    path = save_checkpoint(tmp_path / "m.pt", model, NORM, {"epoch": 3})
    loaded, norm, extra = load_checkpoint(path)
    assert loaded.config == SMALL and norm == NORM and extra == {"epoch": 3}
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    assert not loaded.training


@pytest.mark.parametrize("fusion", ["intermediate", "late"])
def test_two_stream_checkpoints_round_trip_and_detect(tmp_path, fusion):
    config = DetectorConfig(backbone_depth=18, backbone_width=8, head_channels=8,
                            use_rem=False, fusion=fusion, input_size=(64, 96),
                            score_threshold=0.0, max_detections=5)
    torch.manual_seed(0)
    model = FusionDetector(config)
    path = save_checkpoint(tmp_path / "m.pt", model, NORM)
    loaded, _, _ = load_checkpoint(path)
    assert loaded.config == config
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    result = Detector(loaded, NORM, device="cpu")(*_frames())
    assert result.boxes_xyxy.shape == (5, 4) and np.all(np.diff(result.scores) <= 0)


def test_bad_checkpoints_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_checkpoint(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not an iphd detector checkpoint"):
        load_checkpoint(other)
    path = save_checkpoint(tmp_path / "m.pt", FusionDetector(SMALL), NORM)
    payload = torch.load(path, weights_only=True)
    payload["detector_config"]["backbone_depth"] = 34  # weights of an 18 under a 34 config
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / "mismatch.pt")


def test_detector_returns_boxes_in_depth_pixels(tmp_path):
    torch.manual_seed(1)
    path = save_checkpoint(tmp_path / "m.pt", FusionDetector(SMALL), NORM)
    detector = Detector.from_checkpoint(path, device="cpu")
    depth, thermal = _frames()
    result = detector(depth, thermal)
    assert result.boxes_xyxy.shape == (5, 4) and result.scores.shape == (5,)
    assert np.all(np.diff(result.scores) <= 0)
    assert result.boxes_xyxy[:, [0, 2]].max() <= 212 + 1e-3
    assert result.boxes_xyxy[:, [1, 3]].max() <= 120 + 1e-3
    assert result.boxes_xyxy.min() >= 0
    with pytest.raises(FrameError):
        detector(depth.astype(np.float32), thermal)


def test_detector_refuses_a_normalisation_that_does_not_fit_the_model():
    with pytest.raises(ConfigError, match="does not match"):
        Detector(FusionDetector(SMALL), NormalizeConfig(out_size=(448, 256)), device="cpu")
