import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from iphd.detection.detector import Detector, save_checkpoint
from iphd.detection.model import FUSION_MODES, DetectorConfig, FusionDetector
from iphd.detection.onnx_export import (
    EXPORT_ATOL,
    INPUT_NAME,
    OUTPUT_NAMES,
    OnnxDetector,
    export_onnx,
    main,
)
from iphd.errors import CheckpointError, ConfigError
from iphd.normalize import NormalizeConfig

# score_threshold 0: the untrained model's scores (~0.01) all pass, so NMS has work to do.
TINY = DetectorConfig(backbone_depth=18, backbone_width=8, head_channels=8, input_size=(64, 96),
                      score_threshold=0.0, max_detections=20)
NORM = NormalizeConfig(out_size=(96, 64))
#: Logits and deltas agree to EXPORT_ATOL (measured ~1e-6); boxes are decoded from deltas with
#: anchors up to ~200 px and scaled to depth pixels, scores are softmaxes of the logits.
BOX_ATOL_PX = 1e-2
SCORE_ATOL = 1e-5


def _tiny_model(config=TINY):
    torch.manual_seed(0)
    return FusionDetector(config).eval()


def _frames():
    rng = np.random.default_rng(0)
    depth = rng.integers(500, 6000, (120, 212)).astype(np.uint16)
    thermal = rng.integers(29000, 31000, (60, 106)).astype(np.uint16)
    return depth, thermal


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _tiny_model()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx", NORM)
    return model, path


def _assert_same_detections(onnx_detector, detector):
    depth, thermal = _frames()
    got, want = onnx_detector(depth, thermal), detector(depth, thermal)
    assert len(want.scores) > 0
    assert got.boxes_xyxy.dtype == np.float32 and got.scores.dtype == np.float32
    np.testing.assert_allclose(got.boxes_xyxy, want.boxes_xyxy, atol=BOX_ATOL_PX, rtol=0)
    np.testing.assert_allclose(got.scores, want.scores, atol=SCORE_ATOL, rtol=0)


def test_onnx_outputs_match_torch_forward_for_any_batch(exported):
    model, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 2):  # exported with batch 1: 2 proves the batch axis is dynamic
        x = torch.randn(batch, 3, 64, 96, generator=torch.Generator().manual_seed(batch))
        cls_logits, box_deltas = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
        with torch.no_grad():
            ref_cls, ref_box = model(x)
        assert cls_logits.shape == tuple(ref_cls.shape) and ref_cls.shape[0] == batch
        np.testing.assert_allclose(cls_logits, ref_cls.numpy(), atol=EXPORT_ATOL, rtol=0)
        np.testing.assert_allclose(box_deltas, ref_box.numpy(), atol=EXPORT_ATOL, rtol=0)


def test_onnx_detector_gives_the_torch_detectors_boxes(exported):
    model, path = exported
    onnx_detector = OnnxDetector.from_file(path, device="cpu", intra_op_threads=1)
    _assert_same_detections(onnx_detector, Detector(model, NORM, device="cpu"))


def test_onnx_file_carries_its_configs(exported):
    model, path = exported
    onnx_detector = OnnxDetector(path, device="cpu")
    assert onnx_detector.config == model.config and onnx_detector.normalize == NORM
    assert not any(p.name.endswith(".partial") for p in path.parent.iterdir())


def test_export_keeps_the_training_mode_and_records_the_export_size(tmp_path):
    model = _tiny_model().train()
    path = export_onnx(model, tmp_path / "half.onnx", NormalizeConfig(out_size=(48, 32)),
                       input_size=(32, 48))
    assert model.training
    onnx_detector = OnnxDetector(path, device="cpu")
    assert onnx_detector.config == dataclasses.replace(TINY, input_size=(32, 48))
    assert onnx_detector.session.get_inputs()[0].shape[1:] == [3, 32, 48]


def test_export_rejects_a_normalisation_of_another_size(tmp_path):
    with pytest.raises(ConfigError, match="out_size=\\(96, 64\\)"):
        export_onnx(_tiny_model(), tmp_path / "m.onnx", NormalizeConfig(out_size=(448, 256)))
    assert not list(tmp_path.iterdir())


def test_missing_and_corrupt_onnx_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        OnnxDetector(tmp_path / "missing.onnx", device="cpu")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx model")
    with pytest.raises(CheckpointError, match="corrupt.onnx.*export it again"):
        OnnxDetector(corrupt, device="cpu")


def test_onnx_without_iphd_metadata_is_refused(tmp_path):
    x = onnx.helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, [1, 3, 64, 96])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 64, 96])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", [INPUT_NAME], ["y"])],
                                   "other", [x], [y])
    other = tmp_path / "other.onnx"
    # IR version 10: onnx 1.23 writes 14 by default, newer than onnxruntime 1.31 reads.
    model = onnx.helper.make_model(graph, ir_version=10,
                                   opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.save(model, other)
    with pytest.raises(CheckpointError, match="other.onnx.*not an iphd detector"):
        OnnxDetector(other, device="cpu")


def test_onnx_of_another_format_version_is_refused(exported, tmp_path):
    _, path = exported
    proto = onnx.load(path)
    for prop in proto.metadata_props:
        if prop.key == "iphd_format_version":
            prop.value = "99"
    future = tmp_path / "future.onnx"
    onnx.save(proto, future)
    with pytest.raises(CheckpointError, match="version 99"):
        OnnxDetector(future, device="cpu")


def test_cli_exports_a_checkpoint(tmp_path, capsys):
    checkpoint = save_checkpoint(tmp_path / "m.pt", _tiny_model(), NORM)
    assert main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.onnx")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert OnnxDetector(tmp_path / "m.onnx", device="cpu").config == TINY
    assert main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_verifier_fitted_on_a_checkpoint_suits_its_onnx_export(tmp_path):
    from iphd.detection.verifier import (
        detector_fingerprint,
        detector_fingerprints,
        detector_mismatch,
        load_box_verifier,
    )

    checkpoint = save_checkpoint(tmp_path / "m.pt", _tiny_model(), NORM)
    assert main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.onnx")]) == 0
    mine = detector_fingerprint(checkpoint)
    assert detector_fingerprints(tmp_path / "m.onnx") == {
        detector_fingerprint(tmp_path / "m.onnx"), mine
    }
    verifier = dataclasses.replace(load_box_verifier(""), detector_sha256=mine)
    assert detector_mismatch("v.npz", verifier, tmp_path / "m.onnx") is None
    # An export of another checkpoint (or one made without the record) is still said.
    export_onnx(_tiny_model(), tmp_path / "bare.onnx", NORM)
    problem = detector_mismatch("v.npz", verifier, tmp_path / "bare.onnx")
    assert problem is not None and "verifier:=none" in problem


@pytest.mark.parametrize("fusion", [f for f in FUSION_MODES if f != "early"])
def test_every_fusion_mode_exports(fusion, tmp_path):
    model = _tiny_model(dataclasses.replace(TINY, fusion=fusion))
    path = export_onnx(model, tmp_path / f"{fusion}.onnx", NORM)
    _assert_same_detections(OnnxDetector(path, device="cpu"), Detector(model, NORM, device="cpu"))


def test_the_nodes_load_an_onnx_file_given_as_their_checkpoint(exported):
    from iphd.detections import DetectionConfig, load_detector

    model, path = exported
    loaded = load_detector(DetectionConfig(checkpoint=str(path), device="cpu", threads=1))
    assert isinstance(loaded, OnnxDetector)
    assert loaded.device.type == "cpu" and loaded.half is False  # reported on /diagnostics
    _assert_same_detections(loaded, Detector(model, NORM, device="cpu"))
